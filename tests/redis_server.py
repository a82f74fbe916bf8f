"""A private ``redis-server`` on a free loopback port, for tests that break Redis.

Tests that flush, stop or restart Redis must never do it to the shared server at 127.0.0.1:6379.
They start their own::

    async with private_redis() as server:
        broker = RedisBroker(server.url, ...)
        await server.stop()          # Redis gone: connections refused
        await server.start()         # back on the same port, empty (no persistence)

The server keeps nothing on disk (``--save "" --appendonly no``), so a restart loses every key,
as a production Redis without persistence does. Tests are skipped when ``redis-server`` is not
installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator

import pytest

#: Safety net for the server to come up or go down.
WAIT = 10.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """One ``redis-server`` process; :meth:`start` and :meth:`stop` can be repeated."""

    def __init__(self, directory: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = directory
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING."""
        if self.running:
            return
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self._dir,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(WAIT):
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited")
                if await self._answers():
                    return
                await asyncio.sleep(0.02)

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        async with asyncio.timeout(WAIT):
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    """A started private server, stopped (and its directory removed) on exit."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="callbridge-redis-") as directory:
        server = PrivateRedis(directory)
        try:
            await server.start()
            yield server
        finally:
            await server.stop(kill=True)
