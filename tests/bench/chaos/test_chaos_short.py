"""``callbridge bench chaos --profile short``, run as a user runs it: real processes, combined
faults, every promise checked from outside. Replay a failure with the seed it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import orjson
import pytest

SEED = int(os.environ.get("CALLBRIDGE_CHAOS_SEED", "11"))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_the_short_chaos_profile_breaks_no_promise(tmp_path) -> None:
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "bench", "chaos", "--profile", "short", "--runs", "1",
         "--seed", str(SEED), "--json", str(out), "--keep", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=540, env={**os.environ, "PYTHONPATH": "."})
    assert out.exists(), proc.stderr[-3000:]
    result = orjson.loads(out.read_bytes())
    run = result["runs"][0]
    kinds = {entry["kind"] for entry in run["done"]}
    assert kinds >= {"redis_kill", "instance_kill", "storm", "pubsub_kill"}, run["done"]
    assert run["stats"]["frames_checked"] > 1000 and run["probes"].get("bad_requests", 0) > 0
    assert proc.returncode == 0 and run["ok"], (
        f"seed {SEED}: {proc.stdout}\n" + "\n".join(str(v) for v in run["violations"][:20]))
