"""Process measurements from ``/proc`` (Linux) and the open-file limit.

A server may be several processes (``callbridge serve --workers N``: a parent and its
workers), so CPU and memory can be summed over a process and its descendants (``tree=True``).
A process that ends between listing and reading counts as nothing; CPU a worker used before it
ended is lost from the sum, so measure while the tree is whole.
"""

from __future__ import annotations

import glob
import os
import resource

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3, ``state``, first)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        # The command name may hold spaces and parentheses: split after its last ")".
        return f.read().rsplit(b")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The direct children of ``pid``.

    Read from ``/proc/PID/task/*/children`` where the kernel has it, else by finding every
    process whose parent is ``pid``.
    """
    files = glob.glob(f"/proc/{pid}/task/*/children")
    if files:
        found: list[int] = []
        for name in files:
            try:
                with open(name, "rb") as f:
                    found += [int(x) for x in f.read().split()]
            except OSError:
                continue
        return found
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry))[1]) == pid:
                kids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def rss_bytes(pid: int, *, tree: bool = False) -> int:
    """Resident set size of ``pid`` (summed over its descendants with ``tree``) in bytes."""
    total = 0
    for p in _pids(pid, tree):
        try:
            with open(f"/proc/{p}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            if p == pid:
                raise
    return total


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """User plus system CPU time ``pid`` (with ``tree``: and its descendants) has used so far,
    in seconds."""
    ticks = 0
    for p in _pids(pid, tree):
        try:
            fields = _stat_fields(p)
        except OSError:
            if p == pid:
                raise
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _TICKS


def cpu_seconds_of(pids: list[int]) -> float:
    """The CPU seconds of several processes (say the benchmark's client workers), summed."""
    return sum(cpu_seconds(p) for p in pids)


def _pids(pid: int, whole_tree: bool) -> list[int]:
    return tree(pid) if whole_tree else [pid]


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to its hard limit; returns the new limit.

    Children inherit it: the driver raises it before starting the servers under test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft
