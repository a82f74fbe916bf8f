"""The downstream websocket protocol: client messages in, server messages out, close codes.

Pure code, documented for client authors in docs/protocol.md. :func:`parse` turns one client
frame into a typed message or a :class:`ProtocolError` (it never raises); the ``encode``
functions build server frames as ``str`` for websocket text frames. Event frames are not built
here: the broker's envelope (:func:`bridge.events.event.envelope`) is sent verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import orjson

from bridge.brokers.base import EPOCH_RE, OFFSET_RE
from bridge.calls import view
from bridge.events.channels import extension_of, is_valid_channel

# Close codes. docs/protocol.md groups them by what a client should do next (CLOSE_ADVICE).
NORMAL = 1000  # the client asked to close
GOING_AWAY = 1001  # server leaving for good on this address: reconnect, maybe elsewhere
POLICY_VIOLATION = 1008  # refused by policy: fix the client, do not loop
MESSAGE_TOO_BIG = 1009  # a client message exceeded the limit: fix the client
INTERNAL_ERROR = 1011  # server fault: reconnect with backoff
SERVICE_RESTART = 1012  # server restarting: reconnect and resume
TRY_AGAIN_LATER = 1013  # too many connections from this address, or token checks not ready yet
PROTOCOL_ERROR = 4000  # bad or unexpected first message: fix the client
AUTH_FAILED = 4001  # forged or malformed token: do not retry with the same token
AUTH_TIMEOUT = 4002  # no auth message in time: reconnect with backoff
TOKEN_EXPIRED = 4003  # get a new token, then reconnect
TOKEN_REVOKED = 4004  # the token was revoked: get a new token, then reconnect
SLOW_CONSUMER = 4008  # the client read too slowly: reconnect with backoff and resume
CLIENT_IDLE = 4009  # the client sent nothing for too long: reconnect with backoff and resume
DISCONNECTED = 4010  # an operator disconnected the client (admin API): reconnect with backoff

#: What a client should do after each close code: ``"now"`` (reconnect at once and resume),
#: ``"backoff"`` (reconnect with exponential backoff and resume), ``"new_token"`` (reconnect
#: only with a new token), ``"never"`` (a client or configuration bug: do not reconnect).
#: Codes not listed (1006 included) mean ``"backoff"``.
CLOSE_ADVICE: dict[int, str] = {
    GOING_AWAY: "now",
    SERVICE_RESTART: "now",
    NORMAL: "backoff",
    INTERNAL_ERROR: "backoff",
    TRY_AGAIN_LATER: "backoff",
    AUTH_TIMEOUT: "backoff",
    SLOW_CONSUMER: "backoff",
    CLIENT_IDLE: "backoff",
    DISCONNECTED: "backoff",
    AUTH_FAILED: "new_token",
    TOKEN_EXPIRED: "new_token",
    TOKEN_REVOKED: "new_token",
    PROTOCOL_ERROR: "never",
    POLICY_VIOLATION: "never",
    MESSAGE_TOO_BIG: "never",
}
RECONNECT_NOW = frozenset(c for c, a in CLOSE_ADVICE.items() if a == "now")
NEW_TOKEN = frozenset(c for c, a in CLOSE_ADVICE.items() if a == "new_token")
NEVER = frozenset(c for c, a in CLOSE_ADVICE.items() if a == "never")


def reconnect_advice(code: int) -> str:
    """``"now"``, ``"backoff"``, ``"new_token"`` or ``"never"``: see :data:`CLOSE_ADVICE`."""
    return CLOSE_ADVICE.get(code, "backoff")


# Error codes carried by {"type":"error"} replies.
E_MALFORMED = "malformed"  # not a JSON object
E_UNKNOWN_TYPE = "unknown_type"
E_BAD_REQUEST = "bad_request"  # a field is missing or has the wrong shape
E_BAD_CHANNEL = "bad_channel"  # not a valid channel name (patterns are not accepted)
E_FORBIDDEN = "forbidden"  # the token does not grant the channel
E_TOO_MANY_CHANNELS = "too_many_channels"
E_ALREADY_AUTHENTICATED = "already_authenticated"
E_UNAVAILABLE = "unavailable"  # the broker did not answer; retry later
E_TOKEN_REFUSED = "token_refused"  # renew: the new token does not verify (old grant kept)
E_SUB_MISMATCH = "sub_mismatch"  # renew: the new token names another subject (old grant kept)
E_TOKEN_REVOKED = "token_revoked"  # renew: the new token is revoked (old grant kept)

# Reasons carried by {"type":"gap"}: the broker's replay statuses, and the broker failing.
GAP_UNAVAILABLE = "unavailable"

MAX_ID_LENGTH = 64
ClientId = Union[str, int, None]


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: ClientId
    channels: tuple[str, ...]
    #: ``(channel, epoch, offset)`` for each channel the client resumes, in request order.
    resume: tuple[tuple[str, str, str], ...] = ()
    #: Each newly subscribed channel starts with a ``state`` message (:func:`encode_state`);
    #: a resumed one only when history no longer covers its position.
    state: bool = False


@dataclass(frozen=True, slots=True)
class Renew:
    id: ClientId
    token: str


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


ClientMessage = Union[Auth, Subscribe, Unsubscribe, Ping, Renew]


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


def _read_resume(
    obj: dict[str, Any], channels: tuple[str, ...], cid: ClientId
) -> tuple[tuple[str, str, str], ...] | ProtocolError:
    resume = obj.get("resume")
    if resume is None:
        return ()
    if not isinstance(resume, dict):
        return ProtocolError(E_BAD_REQUEST, "'resume' must be an object", cid)
    out = []
    for channel, position in resume.items():
        if channel not in channels:
            return ProtocolError(E_BAD_REQUEST, "'resume' names a channel not in 'channels'", cid)
        if not isinstance(position, dict):
            return ProtocolError(E_BAD_REQUEST, "'resume' values must be objects", cid)
        epoch, offset = position.get("epoch"), position.get("offset")
        if not isinstance(epoch, str) or not EPOCH_RE.fullmatch(epoch):
            return ProtocolError(E_BAD_REQUEST, "'resume' needs a valid 'epoch'", cid)
        if not isinstance(offset, str) or not OFFSET_RE.fullmatch(offset):
            return ProtocolError(E_BAD_REQUEST, "'resume' needs a valid 'offset'", cid)
        out.append((channel, epoch, offset))
    return tuple(out)


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
    if kind == "auth" or kind == "renew":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            return ProtocolError(E_BAD_REQUEST, "'token' must be a non-empty string", cid)
        return Auth(token) if kind == "auth" else Renew(cid, token)
    if kind == "subscribe" or kind == "unsubscribe":
        channels = _read_channels(obj, cid)
        if isinstance(channels, ProtocolError):
            return channels
        if kind == "unsubscribe":
            return Unsubscribe(cid, channels)
        resume = _read_resume(obj, channels, cid)
        if isinstance(resume, ProtocolError):
            return resume
        state = obj.get("state")
        if state is None:  # absent or null, as for 'resume'
            state = False
        elif not isinstance(state, bool):
            return ProtocolError(E_BAD_REQUEST, "'state' must be true or false", cid)
        return Subscribe(cid, channels, resume, state)
    if kind == "ping":
        return Ping(cid)
    if not isinstance(kind, str):
        return ProtocolError(E_BAD_REQUEST, "'type' must be a string", cid)
    return ProtocolError(E_UNKNOWN_TYPE, f"unknown message type {kind[:32]!r}", cid)


def _dumps(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def encode_welcome(
    *, sub: str, expires_at: float, session: str, heartbeat: float, expiry_grace: float = 0.0,
    idle_timeout: float = 0.0,
) -> str:
    return _dumps(
        {
            "type": "welcome",
            "sub": sub,
            "expires_at": expires_at,
            "expiry_grace": expiry_grace,
            "session": session,
            "heartbeat": heartbeat,
            "idle_timeout": idle_timeout,
        }
    )


def encode_subscribed(
    cid: ClientId, channels: tuple[str, ...] | list[str], epochs: dict[str, str] | None = None,
    offsets: dict[str, str] | None = None,
) -> str:
    return _dumps({"type": "subscribed", "id": cid, "channels": list(channels),
                   "epochs": epochs or {}, "offsets": offsets or {}})


def encode_unsubscribed(
    cid: ClientId, channels: tuple[str, ...] | list[str], reason: str | None = None
) -> str:
    obj: dict[str, Any] = {"type": "unsubscribed", "id": cid, "channels": list(channels)}
    if reason is not None:
        obj["reason"] = reason
    return _dumps(obj)


def encode_renewed(cid: ClientId, expires_at: float) -> str:
    return _dumps({"type": "renewed", "id": cid, "expires_at": expires_at})


def encode_gap(channel: str, reason: str, epoch: str | None) -> str:
    return _dumps({"type": "gap", "channel": channel, "reason": reason, "epoch": epoch})


def state_lists(
    channel: str, records: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``calls`` and ``extensions`` of ``channel``'s ``state`` message, from the channel's
    state records (:class:`bridge.brokers.base.Snapshot`).

    ``calls:<tenant>``: its calls and the extensions they involve (no presence: that is
    ``presence:<tenant>``'s); ``calls:<tenant>:<extension>``: its calls and that one extension;
    ``presence:<tenant>``: no calls, each extension's ``online``; any other channel: nothing.
    """
    kind = channel.partition(":")[0]
    if kind == "calls":
        active = view.calls(records)
        return active, view.extensions(records, only=extension_of(channel), active=active)
    if kind == "presence":
        return [], view.extensions({}, presence=records)
    return [], []


def encode_state(
    cid: ClientId, channel: str, epoch: str, offset: str,
    records: Mapping[str, Mapping[str, Any]],
) -> str:
    """``channel``'s state as of ``(epoch, offset)``: see :func:`state_lists`."""
    calls, extensions = state_lists(channel, records)
    return _dumps({"type": "state", "id": cid, "channel": channel, "epoch": epoch,
                   "offset": offset, "calls": calls, "extensions": extensions})


def encode_pong(cid: ClientId) -> str:
    return _dumps({"type": "pong", "id": cid})


def encode_heartbeat(now: float) -> str:
    return _dumps({"type": "heartbeat", "ts": round(now, 3)})


def encode_error(error: ProtocolError) -> str:
    return _dumps({"type": "error", "id": error.id, "code": error.code, "message": error.message})
