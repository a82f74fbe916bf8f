"""The contract of an upstream wire dialect: a sans-I/O client codec.

A codec never touches a socket or the clock. The session loop (bridge/upstream/session.py):

1. if :meth:`ClientCodec.handshake_url` returns a URL, GETs it and passes the status and body
   to :meth:`ClientCodec.handshake_response` (raises :class:`HandshakeError` when refused);
2. opens a websocket to :meth:`ClientCodec.websocket_url`;
3. feeds every text frame received to :meth:`ClientCodec.receive`, which returns signals, and
   after every call to ``receive``, ``subscribe``, ``unsubscribe`` or ``keepalive`` sends the
   frames returned by :meth:`ClientCodec.data_to_send`, in order;
4. subscribes once :class:`Ready` has been seen (some dialects are ready at once:
   :attr:`ClientCodec.ready_on_open`);
5. calls :meth:`ClientCodec.keepalive` every :attr:`ClientCodec.keepalive_interval` seconds when
   that is not None, and declares the connection dead after :attr:`ClientCodec.dead_after`
   seconds without any frame received.

A malformed frame yields a :class:`Malformed` signal; the codec stays usable. Codecs must never
put an auth token in a signal's text: whatever the server echoes is passed through
:func:`bridge.common.redact.redact` by the codec before it is stored in a signal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar


class HandshakeError(Exception):
    """The server refused or garbled the dialect's handshake."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is open; subscriptions may be sent."""


@dataclass(frozen=True, slots=True)
class CallSignal:
    """A call event: the Kazoo event name and its payload, keys exactly as received."""

    name: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The server confirmed a subscription (dialects with explicit replies only)."""

    request_id: str | None
    bindings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """The server rejected the auth token. ``message`` is already redacted."""

    message: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """Any other error the server reported. ``message`` is already redacted."""

    message: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ServerClosed:
    """The server ended the session at the protocol level (not just the socket)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that could not be understood; ``excerpt`` is a short, redacted prefix."""

    reason: str
    excerpt: str = ""


Signal = Ready | CallSignal | Subscribed | AuthFailed | UpstreamError | ServerClosed | Malformed


@dataclass
class ClientCodec(ABC):
    """Base class of the client side of one dialect. One instance per connection."""

    name: ClassVar[str]
    #: True when subscriptions may be sent as soon as the websocket is open.
    ready_on_open: ClassVar[bool] = False
    #: True when the server acknowledges each subscribe with :class:`Subscribed`.
    acks_subscribe: ClassVar[bool] = False

    keepalive_interval: float | None = None
    dead_after: float = 60.0
    _out: list[str] = field(default_factory=list, init=False, repr=False)

    def handshake_url(self, base_url: str) -> str | None:
        """The HTTP URL to GET before the websocket, or None when the dialect has none."""
        return None

    def handshake_response(self, status: int, body: str) -> None:
        """Digest the handshake answer; raise :class:`HandshakeError` when it is a refusal."""

    @abstractmethod
    def websocket_url(self, base_url: str) -> str:
        """The websocket URL for ``base_url`` (the configured ``ws_url``, ws/wss/http/https)."""

    @abstractmethod
    def receive(self, frame: str) -> list[Signal]:
        """Parse one websocket text frame. Never raises on bad input: returns Malformed."""

    @abstractmethod
    def subscribe(self, account_id: str, token: str, binding: str) -> str | None:
        """Queue a subscribe frame; return its request id when the dialect has one."""

    @abstractmethod
    def unsubscribe(self, account_id: str, token: str, binding: str) -> str | None:
        """Queue an unsubscribe frame; return its request id when the dialect has one."""

    def keepalive(self) -> None:
        """Queue a client-initiated keepalive frame, if the dialect has one."""

    def close(self) -> None:
        """Queue a polite protocol-level goodbye, if the dialect has one."""

    def data_to_send(self) -> list[str]:
        """Frames queued for the server, oldest first; the queue is emptied."""
        out, self._out = self._out, []
        return out
