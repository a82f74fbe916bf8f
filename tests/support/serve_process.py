"""``python -m bridge serve`` as a real subprocess, for tests that signal or kill instances."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import Any

import pytest

SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


class ServeProcess:
    """One running ``serve`` process: its process handle, URL, config file and log file."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, config_path: str,
                 log_path: str) -> None:
        self.proc = proc
        self.url = url
        self.config_path = config_path
        self.log_path = log_path

    @classmethod
    async def start(cls, config_path: str, log_path: str, *, env: dict[str, str] | None = None,
                    what: str = "instance") -> Any:
        proc, url = await spawn_serve(config_path, log_path, env=env, what=what)
        return cls(proc, url, config_path, log_path)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


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
