"""Real uvicorn on a free loopback port, in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import pytest
import uvicorn
from starlette.types import ASGIApp

from bridge.http.frames import DirectFrames
from bridge.http.serving import listen

#: One unit for every safety-net wait in these tests; raise it on a slow machine.
SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


@dataclass(frozen=True)
class RunningServer:
    server: uvicorn.Server
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def run_uvicorn(app: ASGIApp, **config: Any) -> AsyncIterator[RunningServer]:
    """Serve ``app`` on 127.0.0.1 (port chosen by the kernel) until the block exits.

    The socket is bound here, before uvicorn starts, so the port is known and never raced for.
    Per-message compression is off and frames may be written directly, as callbridge runs it.
    """
    sock = listen("127.0.0.1", 0)  # as callbridge listens (TCP_NODELAY included)
    port = sock.getsockname()[1]
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    config.setdefault("ws_per_message_deflate", False)
    config.setdefault("ws", DirectFrames)  # callbridge's websocket protocol: direct frame writes
    server = uvicorn.Server(uvicorn.Config(app, **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10 * SCALE):
            while not server.started:
                if task.done():
                    task.result()  # raises the startup error
                    raise RuntimeError("uvicorn exited during startup")
                await asyncio.sleep(0.01)
        yield RunningServer(server, port)
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(10 * SCALE):
                await task
        finally:
            sock.close()


@pytest.fixture
def serve() -> Callable[..., contextlib.AbstractAsyncContextManager[RunningServer]]:
    """``async with serve(app, **uvicorn_config) as running: ...``"""
    return run_uvicorn


@pytest.fixture
def bridge(serve: Any) -> Any:
    """Start a /ws bridge on a MemoryBroker (or the given broker): see harness.bridge_starter."""
    from tests.downstream.harness import bridge_starter

    return bridge_starter(serve)
