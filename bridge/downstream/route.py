"""The settings and the state shared by the connections of one ``/ws`` route.

A :class:`Route` is built by :func:`bridge.downstream.endpoint.ws_route` and read by every
:class:`~bridge.downstream.session.Session` of the route; it knows a session only as a
:class:`Connection`, so this module does not depend on the session code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from starlette.websockets import WebSocket

from bridge.auth.tokens import Grant
from bridge.cluster.revocations import Revocations
from bridge.downstream import protocol as p
from bridge.downstream.admission import ConnectionCounter, OriginPolicy
from bridge.downstream.heartbeat import Heartbeats
from bridge.downstream.hub import Hub
from bridge.downstream.link import ClientLink
from bridge.downstream.tally import Tally


class Connection(Protocol):
    """An authenticated connection as the route's registry and the admin API see it."""

    @property
    def session(self) -> str:
        """The session id (what the admin API lists and disconnects)."""

    @property
    def grant(self) -> Grant | None:
        """The token's grant; None until the connection is authenticated."""

    @property
    def link(self) -> ClientLink | None:
        """The hub link; None until the connection is authenticated."""

    @property
    def channels(self) -> set[str]:
        """The channels the client is subscribed to."""

    @property
    def since(self) -> float:
        """Unix time the connection was authenticated."""

    @property
    def ws(self) -> WebSocket:
        """The connection's websocket (its scope names the peer)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """One route's settings: the arguments of :func:`~bridge.downstream.endpoint.ws_route`
    (``history_max_age`` None: resumes have no age limit)."""

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

    The session registry costs one dict entry per connection: the
    :class:`~bridge.downstream.session.Session` itself already holds everything listed
    (subject, token id, channels, address, start time).
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
        self.sessions: dict[str, Connection] = {}
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
        costs the revocation store nothing. Raises
        :class:`~bridge.cluster.revocations.NotSynced` while this instance has no copy yet (it
        never fails open, nor locks out a client it can decide on)."""
        if self.revocations is None or grant.token_id is None:
            return False
        return self.revocations.is_revoked(grant.token_id)
