"""The ``/ws`` websocket endpoint: authenticate, subscribe, resume, stream events.

The protocol is documented in docs/protocol.md. One connection runs as: admission (Origin,
connections per address); accept; wait up to ``auth_timeout`` for the auth message; verify the
token and check it is not revoked; then a reader task (client messages) beside the connection's
own task, which writes (the hub link's buffer: the only sender), an expiry timer, and the route's
shared heartbeat timer. Whatever closes the link first decides the close code; the reader is
cancelled, the client's channels are released, and the close frame is sent. Every reply goes
through the link, so replies and events keep their order.

The per-connection work is in :mod:`bridge.downstream.session`; this module holds the
settings and the state shared by one route's connections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from bridge.auth.tokens import Grant
from bridge.cluster.revocations import Revocations
from bridge.common.redact import register
from bridge.downstream import protocol as p
from bridge.downstream.admission import ConnectionCounter, OriginPolicy
from bridge.downstream.heartbeat import Heartbeats
from bridge.downstream.hub import ClientLink, Hub
from bridge.downstream.session import Session
from bridge.downstream.tally import Tally

log = logging.getLogger(__name__)

#: Channels one connection may hold at once (a subscribe beyond it gets too_many_channels).
MAX_CHANNELS = 100
#: A single send blocked this long means the client stopped reading: closed with 4008.
SEND_TIMEOUT = 30.0
#: Seconds a connection may outlive its token's ``exp`` (time to renew) before 4003.
EXPIRY_GRACE = 10.0
@dataclass(frozen=True, slots=True)
class Settings:
    jwt_secret: str
    leeway: float
    auth_timeout: float
    max_message_bytes: int
    heartbeat: float
    max_channels: int
    send_timeout: float
    expiry_grace: float
    idle_timeout: float
    history_max_age: float | None
    broker_timeout: float


class Route:
    """State shared by the connections of one route: admission, open links by token id, and
    authenticated sessions by session id (what the admin API lists and disconnects).

    The session registry costs one dict entry per connection: the :class:`Session` itself
    already holds everything listed (subject, token id, channels, address, start time).
    """

    def __init__(self, hub: Hub, settings: Settings, origins: OriginPolicy,
                 counter: ConnectionCounter, revocations: Revocations | None) -> None:
        self.hub = hub
        self.cfg = settings
        self.origins = origins
        self.counter = counter
        self.revocations = revocations
        self.heartbeats = Heartbeats(settings.heartbeat) if settings.heartbeat > 0 else None
        #: Connections accepted and closed, for the periodic log summary.
        self.tally = Tally()
        self.by_token: dict[str, set[ClientLink]] = {}
        self.sessions: dict[str, Session] = {}
        if revocations is not None:
            revocations.on_revoke(self.revoked)

    def revoked(self, token_id: str) -> None:
        for link in list(self.by_token.get(token_id, ())):
            link.close(p.TOKEN_REVOKED)

    def track(self, link: ClientLink, old: str | None, new: str | None) -> None:
        if old is not None and (links := self.by_token.get(old)) is not None:
            links.discard(link)
            if not links:
                del self.by_token[old]
        if new is not None:
            self.by_token.setdefault(new, set()).add(link)

    def disconnect(self, session_id: str) -> bool:
        """Close one authenticated session with 4010; False when it is not on this route."""
        session = self.sessions.get(session_id)
        if session is None or session.link is None:
            return False
        session.link.close(p.DISCONNECTED)
        return True

    def is_revoked(self, grant: Grant) -> bool:
        """From the instance's copy of the revoked ids: no I/O, so a storm of connections
        costs the revocation store nothing. Raises :class:`~bridge.cluster.revocations.NotSynced` while
        this instance has no copy yet (it never fails open, nor locks out a client it can
        decide on)."""
        if self.revocations is None or grant.token_id is None:
            return False
        return self.revocations.is_revoked(grant.token_id)


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


