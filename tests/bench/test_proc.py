"""Process measurements on real processes: a server of several processes is measured whole."""

from __future__ import annotations

import subprocess
import sys
import time

from bridge.bench import proc

#: A parent that starts two children; every process burns CPU until stdin closes.
BURN = """
import sys, threading
stop = []
threading.Thread(target=lambda: (sys.stdin.read(), stop.append(1)), daemon=True).start()
while not stop:
    pass
"""
TREE = f"""
import subprocess, sys
BURN = {BURN!r}
kids = [subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
for k in kids:
    k.stdin.close()
    k.wait(10)
"""


def test_cpu_and_memory_are_summed_over_the_process_tree():
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        kids = [int(p) for p in parent.stdout.readline().split()]
        assert sorted(proc.children(parent.pid)) == sorted(kids)
        assert sorted(proc.tree(parent.pid)) == sorted([parent.pid, *kids])
        deadline = time.monotonic() + 30
        while proc.cpu_seconds_of(kids) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a counter: there is no event to wait for
        kids_cpu = proc.cpu_seconds_of(kids)
        alone = proc.cpu_seconds(parent.pid)
        whole = proc.cpu_seconds(parent.pid, tree=True)  # read last: every counter only grows
        assert kids_cpu >= 0.3
        assert whole >= alone + kids_cpu - 1e-9  # sums of tick counts: float rounding only
        assert proc.rss_bytes(parent.pid, tree=True) > proc.rss_bytes(parent.pid)
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(20)
        if parent.stdout is not None:
            parent.stdout.close()

