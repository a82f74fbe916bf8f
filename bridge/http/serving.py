"""Run ASGI apps under uvicorn inside our own event loop, several per process if needed.

uvicorn's own signal capture assumes one server per process; :class:`AppServer` leaves signals
to the caller (the CLI turns SIGINT/SIGTERM into :meth:`AppServer.stop` on every server).

The listening socket is bound before the app starts: uvicorn runs the app's startup first and
only then finds the port taken, so a busy port would start and tear down the whole service.
Here it raises :class:`CannotListen` with nothing started. A startup that fails raises
:class:`StartupFailed`, carrying what the app raised, instead of exiting the process; the
traceback is logged at DEBUG only, the caller says what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, Generator

import uvicorn
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from bridge.common.aio import first_of
from bridge.common.redact import redact
from bridge.http.frames import DirectFrames

log = logging.getLogger("bridge.http.serving")


class CannotListen(Exception):
    """``host:port`` cannot be bound; ``reason`` is the system's, in lower case."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host, self.port, self.errno = host, port, error.errno
        # socket.create_server appends the address to the system's words: drop it.
        text = (error.strerror or str(error)).split(" (while attempting to bind")[0]
        self.reason = (text or type(error).__name__).lower()
        super().__init__(f"cannot listen on {host}:{port}: {self.reason}")


class StartupFailed(Exception):
    """The app's startup raised :attr:`error` (also the ``__cause__``)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"startup failed: {type(error).__name__}: {redact(str(error))}")
        self.error = error


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A socket listening on ``host:port`` (0: any free port), or :class:`CannotListen`.

    ``SO_REUSEADDR`` as uvicorn sets it: a restart need not wait for the old connections'
    TIME_WAIT, while a socket still listening there keeps the port busy.

    ``reuse_port``: ``SO_REUSEPORT``, so that several processes listen on one port and the
    kernel spreads new connections over them (Linux); a socket without it still finds the
    port busy. Only sockets that all set it share the port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048,
                                    reuse_port=reuse_port)
    except OSError as exc:
        raise CannotListen(host, port, exc) from exc
    # Connections accepted here inherit TCP_NODELAY. asyncio sets it only on sockets whose
    # protocol number says TCP, which create_server's (0) does not: without it, Nagle's
    # algorithm holds a small frame back until the client acknowledges the one before, up to
    # its delayed-ACK timer (40 ms on Linux), whenever frames come faster than round trips.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def client_gone(request: Any, exc: Exception) -> Any:
    """Exception handler: the client went away mid-request; nobody is left to answer."""
    return Response(status_code=499)


class _Lifespan:
    """The app, with what its lifespan raised kept for :meth:`AppServer.start`.

    Starlette sends the traceback along with ``lifespan.startup.failed`` and uvicorn logs it
    at ERROR; here it goes to DEBUG, and a failed shutdown is one ERROR line.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.failure: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        started = False

        async def quiet_send(message: Message) -> None:
            nonlocal started
            if message["type"].endswith(".failed") and message.get("message"):
                log.debug("%s", message["message"])
                message = {**message, "message": ""}
            started = started or message["type"] == "lifespan.startup.complete"
            await send(message)

        try:
            await self.app(scope, receive, quiet_send)
        except BaseException as exc:
            self.failure = exc
            if started:
                log.error("shutdown failed: %s: %s", type(exc).__name__, redact(str(exc)))
            raise


class _StartupExit(Exception):
    """uvicorn gave up starting (it would have exited the process)."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            raise _StartupExit() from None
        self.listening.set()


class AppServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 graceful_timeout: float = 10.0, sock: socket.socket | None = None,
                 reuse_port: bool = False, **options: Any) -> None:
        """``sock``: a socket from :func:`listen` to serve on (else :meth:`start` binds one,
        with ``SO_REUSEPORT`` when ``reuse_port``: :func:`listen`)."""
        self._app = _Lifespan(app)
        # uvicorn annotates timeout_graceful_shutdown as int | None, but only hands it to
        # asyncio.timeout(), which takes float seconds; a shutdown_timeout may be fractional.
        config = uvicorn.Config(
            self._app, host=host, port=port, lifespan="on", log_config=None, access_log=False,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]  # float is ok
            **options,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self._sock = sock
        self._reuse_port = reuse_port
        self.host = host
        self.port = port if sock is None else int(sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def bind(self) -> None:
        """Bind the listening socket now (:meth:`start` does when not done); raises
        :class:`CannotListen`."""
        if self._sock is None:
            self._sock = listen(self.host, self.port, reuse_port=self._reuse_port)
            self.port = int(self._sock.getsockname()[1])

    async def start(self, timeout: float = 30.0) -> None:
        """Listen, run the app's startup, serve; return once both are done.

        Raises :class:`CannotListen` before the app starts, :class:`StartupFailed` when its
        startup raises, TimeoutError past ``timeout``.
        """
        self.bind()
        assert self._sock is not None
        sock = self._sock
        task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"uvicorn {self.host}")
        self._task = task
        listening, _ = await first_of(timeout, self._server.listening.wait(), asyncio.shield(task))
        if listening:
            return
        timed_out = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, _StartupExit):
            await task  # anything else it raised is itself the failure to report
        sock.close()
        failure = self._app.failure
        if failure is not None:
            raise StartupFailed(failure) from failure
        if timed_out:
            raise TimeoutError(f"the server did not start within {timeout:g}s")
        raise StartupFailed(RuntimeError("the server stopped during startup"))

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
                  port: int | None = None, sock: socket.socket | None = None,
                  reuse_port: bool = False) -> AppServer:
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
                     proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
                     sock=sock, reuse_port=reuse_port, ws=DirectFrames)
