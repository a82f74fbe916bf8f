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

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest

from bridge.bench.chaos.cluster import Redis, free_port

__all__ = ["PrivateRedis", "free_port", "private_redis"]


class PrivateRedis(Redis):
    """One ``redis-server`` process, no password; :meth:`start` and :meth:`stop` can be
    repeated (the server of ``callbridge bench chaos``, used here as it is)."""

    def __init__(self, directory: str, port: int | None = None) -> None:
        super().__init__(directory, port=port)


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
