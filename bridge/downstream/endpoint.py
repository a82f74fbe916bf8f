"""The ``/ws`` websocket endpoint: authenticate, subscribe, resume, stream events.

The protocol is documented in docs/protocol.md. One connection runs as: admission (Origin,
connections per address); accept; wait up to ``auth_timeout`` for the auth message; verify the
token and check it is not revoked; then a reader task (client messages) beside the connection's
own task, which writes (the hub link's buffer: the only sender), an expiry timer, and the route's
shared heartbeat timer. Whatever closes the link first decides the close code; the reader is
cancelled, the client's channels are released, and the close frame is sent. Every reply goes
through the link, so replies and events keep their order.

The per-connection work is in :mod:`bridge.downstream.session`, the settings and the state
shared by one route's connections in :mod:`bridge.downstream.route`; this module builds them.
"""

from __future__ import annotations

from typing import Iterable

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from bridge.cluster.revocations import Revocations
from bridge.common.redact import register
from bridge.downstream.admission import ConnectionCounter, OriginPolicy
from bridge.downstream.hub import Hub
from bridge.downstream.route import Route, Settings
from bridge.downstream.session import Session

#: Channels one connection may hold at once (a subscribe beyond it gets too_many_channels).
MAX_CHANNELS = 100
#: A single send blocked this long means the client stopped reading: closed with 4008.
SEND_TIMEOUT = 30.0
#: Seconds a connection may outlive its token's ``exp`` (time to renew) before 4003.
EXPIRY_GRACE = 10.0


def ws_route(
    hub: Hub,
    *,
    jwt_secret: str,
    leeway: float,
    auth_timeout: float,
    max_message_bytes: int,
    heartbeat: float,
    max_channels: int = MAX_CHANNELS,
    send_timeout: float = SEND_TIMEOUT,
    expiry_grace: float = EXPIRY_GRACE,
    idle_timeout: float = 0.0,
    max_connections_per_ip: int = 1000,
    allowed_origins: Iterable[str] = (),
    history_max_age: float = 0.0,
    revocations: Revocations | None = None,
    broker_timeout: float = 10.0,
    path: str = "/ws",
) -> WebSocketRoute:
    """The Starlette route serving the downstream protocol on ``path``.

    ``heartbeat`` <= 0 disables the server heartbeat. ``idle_timeout``: seconds a client may
    send nothing before it is closed with 4009; 0 (the default) disables it: dead peers are
    found by websocket pings, which clients answer without sending messages.
    ``history_max_age`` <= 0: resumes have no age limit. ``revocations`` (started and closed by
    the owner) refuses revoked tokens and closes open connections using them with 4004. On
    shutdown the app's lifespan calls :meth:`Hub.close_all` (1012) on ``hub``.
    """
    register(jwt_secret)
    settings = Settings(
        jwt_secret, leeway, auth_timeout, max_message_bytes, heartbeat, max_channels,
        send_timeout, expiry_grace, idle_timeout,
        history_max_age if history_max_age > 0 else None, broker_timeout,
    )
    route = Route(hub, settings, OriginPolicy(allowed_origins),
                   ConnectionCounter(max_connections_per_ip), revocations)
    return WebSocketRoute(path, WsApp(route, path), name="ws")


class WsApp:
    """The endpoint as a bare ASGI app: a connection passes through no framework layer.

    Starlette's routing wraps every send of a connection in exception-handling closures; the
    app built by :func:`bridge.http.app.build_app` hands ``/ws`` connections here directly.
    """

    def __init__(self, route: Route, path: str) -> None:
        self.route = route
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Session(self.route, WebSocket(scope, receive, send), send).run()


