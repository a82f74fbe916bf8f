"""``python -m bridge serve`` as a real subprocess, for tests that signal or kill instances."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


async def spawn_serve(config_path: str, log_path: str, *, env: dict[str, str] | None = None,
                      what: str = "instance") -> tuple[asyncio.subprocess.Process, str]:
    """Start ``serve --config config_path`` (stderr to ``log_path``); return the process and
    its URL once it prints ``serving on``. Fails the test, with the log, if it exits first."""
    env = dict(os.environ if env is None else env)
    with open(log_path, "w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--config", config_path,
            stdout=asyncio.subprocess.PIPE, stderr=log, env={**env, "PYTHONPATH": "."})
    assert proc.stdout is not None
    async with asyncio.timeout(20 * SCALE):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                with open(log_path, errors="replace") as f:
                    pytest.fail(f"{what} exited: {f.read()[-3000:]}")
            match = re.search(r"serving on (http://\S+)", line)
            if match:
                return proc, match.group(1)
