"""Running consumers as real processes: start, read their output lines, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

#: The worktree: ``python -m bridge`` runs from here.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Process:
    """A child process whose stdout is read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, args: Sequence[str], *, cwd: str = ROOT) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def read(self, count: int, *, timeout: float = 30.0) -> list[str]:
        """Read until ``count`` lines were read in total; all lines read so far."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while len(self.lines) < count:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"exited early: {await self.stderr()}")
                self.lines.append(line.decode().rstrip("\n"))
        return self.lines

    async def drain(self) -> list[str]:
        """After the process ended: the lines it printed that were not read yet."""
        assert self.proc.stdout is not None
        for line in (await self.proc.stdout.read()).decode().splitlines():
            self.lines.append(line)
        return self.lines

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.returncode is None:
            return ""
        return (await self.proc.stderr.read()).decode(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit; its status."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()
