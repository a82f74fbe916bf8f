"""The downstream websocket protocol: client messages in, server messages out, close codes.

Pure code, documented for client authors in docs/protocol.md. :func:`parse` turns one client
frame into a typed message or a :class:`ProtocolError` (it never raises); the ``encode``
functions build server frames as ``str`` for websocket text frames. Event frames are not built
here: the broker's envelope (:func:`bridge.events.envelope`) is sent verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import orjson

from bridge.channels import is_valid_channel

# Close codes. docs/protocol.md groups them by what a client should do next.
NORMAL = 1000  # the client asked to close
GOING_AWAY = 1001  # server leaving for good on this address: reconnect, maybe elsewhere
POLICY_VIOLATION = 1008  # refused by policy (e.g. Origin): fix the client, do not loop
MESSAGE_TOO_BIG = 1009  # a client message exceeded the limit: fix the client
INTERNAL_ERROR = 1011  # server fault: reconnect with backoff
SERVICE_RESTART = 1012  # server restarting: reconnect and resume
PROTOCOL_ERROR = 4000  # bad or unexpected first message: fix the client
AUTH_FAILED = 4001  # forged or malformed token: do not retry with the same token
AUTH_TIMEOUT = 4002  # no auth message in time: reconnect with backoff
TOKEN_EXPIRED = 4003  # get a new token, then reconnect
SLOW_CONSUMER = 4008  # the client read too slowly: reconnect with backoff and resume

RECONNECT_NOW = frozenset({GOING_AWAY, SERVICE_RESTART})
NEW_TOKEN = frozenset({AUTH_FAILED, TOKEN_EXPIRED})


def reconnect_advice(code: int) -> str:
    """``"now"``, ``"new_token"`` or ``"backoff"``: what a client should do after ``code``."""
    if code in RECONNECT_NOW:
        return "now"
    if code in NEW_TOKEN:
        return "new_token"
    return "backoff"


# Error codes carried by {"type":"error"} replies.
E_MALFORMED = "malformed"  # not a JSON object
E_UNKNOWN_TYPE = "unknown_type"
E_BAD_REQUEST = "bad_request"  # a field is missing or has the wrong shape
E_BAD_CHANNEL = "bad_channel"  # not a valid channel name (patterns are not accepted)
E_FORBIDDEN = "forbidden"  # the token does not grant the channel
E_TOO_MANY_CHANNELS = "too_many_channels"
E_ALREADY_AUTHENTICATED = "already_authenticated"
E_UNAVAILABLE = "unavailable"  # the broker did not answer; retry later

MAX_ID_LENGTH = 64
ClientId = Union[str, int, None]


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: ClientId
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: ClientId
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    id: ClientId


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A refused client message; ``id`` is the client's id when it could be read."""

    code: str
    message: str
    id: ClientId = None


ClientMessage = Union[Auth, Subscribe, Unsubscribe, Ping]


def _read_id(obj: dict[str, Any]) -> ClientId | ProtocolError:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ProtocolError(E_BAD_REQUEST, "'id' must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        return ProtocolError(E_BAD_REQUEST, f"'id' is longer than {MAX_ID_LENGTH} characters")
    if isinstance(value, int) and abs(value) >= 2**53:
        return ProtocolError(E_BAD_REQUEST, "'id' is out of range")
    return value


def _read_channels(obj: dict[str, Any], cid: ClientId) -> tuple[str, ...] | ProtocolError:
    channels = obj.get("channels")
    if not isinstance(channels, list) or not channels:
        return ProtocolError(E_BAD_REQUEST, "'channels' must be a non-empty list", cid)
    for name in channels:
        if not isinstance(name, str):
            return ProtocolError(E_BAD_REQUEST, "'channels' must hold strings", cid)
        if not is_valid_channel(name):
            # Channel names contain no characters that need escaping, but an invalid one
            # may: repr() keeps the reply readable and free of control characters.
            return ProtocolError(E_BAD_CHANNEL, f"invalid channel name {name[:64]!r}", cid)
    return tuple(dict.fromkeys(channels))  # de-duplicated, order kept


def parse(data: str | bytes) -> ClientMessage | ProtocolError:
    """One client frame (text or binary, UTF-8 JSON) as a message, or why it is refused."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ProtocolError(E_MALFORMED, "message is not valid JSON")
    if not isinstance(obj, dict):
        return ProtocolError(E_MALFORMED, "message is not a JSON object")
    cid = _read_id(obj)
    if isinstance(cid, ProtocolError):
        return cid
    kind = obj.get("type")
    if kind == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            return ProtocolError(E_BAD_REQUEST, "'token' must be a non-empty string", cid)
        return Auth(token)
    if kind == "subscribe" or kind == "unsubscribe":
        channels = _read_channels(obj, cid)
        if isinstance(channels, ProtocolError):
            return channels
        return Subscribe(cid, channels) if kind == "subscribe" else Unsubscribe(cid, channels)
    if kind == "ping":
        return Ping(cid)
    if not isinstance(kind, str):
        return ProtocolError(E_BAD_REQUEST, "'type' must be a string", cid)
    return ProtocolError(E_UNKNOWN_TYPE, f"unknown message type {kind[:32]!r}", cid)


def _dumps(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def encode_welcome(*, sub: str, expires_at: float, session: str, heartbeat: float) -> str:
    return _dumps(
        {
            "type": "welcome",
            "sub": sub,
            "expires_at": expires_at,
            "session": session,
            "heartbeat": heartbeat,
        }
    )


def encode_subscribed(cid: ClientId, channels: tuple[str, ...] | list[str]) -> str:
    return _dumps({"type": "subscribed", "id": cid, "channels": list(channels)})


def encode_unsubscribed(cid: ClientId, channels: tuple[str, ...] | list[str]) -> str:
    return _dumps({"type": "unsubscribed", "id": cid, "channels": list(channels)})


def encode_pong(cid: ClientId) -> str:
    return _dumps({"type": "pong", "id": cid})


def encode_heartbeat(now: float) -> str:
    return _dumps({"type": "heartbeat", "ts": round(now, 3)})


def encode_error(error: ProtocolError) -> str:
    return _dumps({"type": "error", "id": error.id, "code": error.code, "message": error.message})
