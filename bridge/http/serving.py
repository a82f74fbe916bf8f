"""Run ASGI apps under uvicorn inside our own event loop, several per process if needed.

uvicorn's own signal capture assumes one server per process; :class:`AppServer` leaves signals
to the caller (the CLI turns SIGINT/SIGTERM into :meth:`AppServer.stop` on every server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Generator

import uvicorn
from starlette.responses import Response

log = logging.getLogger("bridge.http.serving")


async def client_gone(request: Any, exc: Exception) -> Any:
    """Exception handler: the client went away mid-request; nobody is left to answer."""
    return Response(status_code=499)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AppServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 graceful_timeout: float = 10.0, **options: Any) -> None:
        # uvicorn annotates timeout_graceful_shutdown as int | None, but only hands it to
        # asyncio.timeout(), which takes float seconds; a shutdown_timeout may be fractional.
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="on", log_config=None, access_log=False,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]  # float is ok
            **options,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        """Start serving; return once the socket listens (the app's startup has run)."""
        self._task = asyncio.create_task(self._server.serve(), name=f"uvicorn {self.host}")
        async with asyncio.timeout(timeout):
            while not self._server.started:
                if self._task.done():
                    # startup failed: surface the reason
                    self._task.result()
                    raise RuntimeError("server stopped during startup")
                await asyncio.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._server.should_exit = True

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop and wait for the graceful shutdown; force it past ``timeout``."""
        self.stop()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __aenter__(self) -> "AppServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def bridge_server(app: Any, config: Any, *, host: str | None = None,
                  port: int | None = None) -> AppServer:
    """The server for callbridge's own app, with the websocket limits of ``config.server``.

    Websocket-level pings every ``ping_interval`` s reap clients whose connection died without
    a close (no pong within as long); ``max_message_bytes`` caps a client frame (1009 beyond).

    ``trusted_proxies``: uvicorn's proxy-headers middleware wraps the whole app, ``/ws``
    included, and takes the client's address from ``X-Forwarded-For`` when the socket's peer
    is one of them (the right-most address not itself a trusted proxy). Empty: the middleware
    is off, so the header is ignored whoever sends it (uvicorn would otherwise trust
    127.0.0.1, or ``FORWARDED_ALLOW_IPS``, by default).
    """
    s = config.server
    proxies = list(s.trusted_proxies)
    return AppServer(app, host=host or s.host, port=s.port if port is None else port,
                     graceful_timeout=s.shutdown_timeout, ws_ping_interval=s.ping_interval,
                     ws_ping_timeout=s.ping_interval, ws_max_size=s.max_message_bytes,
                     proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)
