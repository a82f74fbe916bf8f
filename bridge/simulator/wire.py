"""The server half of the three upstream dialects: pure encoders and decoders, no I/O.

:func:`decode_client` turns a client frame into :data:`ClientAction` values (raising
:class:`WireError` on garbage); the ``*_frame`` functions build what the server sends. Payloads
given to :func:`event_frame` are Kazoo Title-Case dicts with native types; each dialect writes
them the way its Kazoo generation does: Socket.IO 0.9 (Kazoo 3.x) with numbers as strings,
Engine.IO 4 unchanged, kazoo-json (Kazoo 4.x) with lower_snake_case keys and no null values.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

SIO09 = "socketio-0.9"
KAZOO = "kazoo-json"
EIO4 = "engineio-4"
DIALECTS = (SIO09, KAZOO, EIO4)
SEPARATOR = "\ufffd"
_SIO09_PACKET = re.compile(r"([0-9]):([0-9]*\+?):([^:]*):?(.*)", re.DOTALL)
_BINDING = re.compile(r"call\.([A-Za-z_]+|\*)\.(.+)")


class WireError(ValueError):
    """A client frame the server cannot understand."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    account_id: str
    token: str
    binding: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    account_id: str
    token: str
    binding: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """A client-initiated keepalive (kazoo-json ``ping`` action) that wants an answer."""

    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Alive:
    """A sign of life that needs no answer: sio09 heartbeat reply, eio4 pong."""


@dataclass(frozen=True, slots=True)
class Connect:
    """Engine.IO 4: the client joins the default namespace (``40``)."""


@dataclass(frozen=True, slots=True)
class Leave:
    """The client says goodbye (sio09 ``0::``, eio4 ``41`` or ``1``)."""


ClientAction = Subscribe | Unsubscribe | Ping | Alive | Connect | Leave


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- payload conventions -------------------------------------------------------------------


def kazoo3_values(value: Any) -> Any:
    """Kazoo 3.x style: every number (not booleans) written as a string, recursively."""
    if isinstance(value, dict):
        return {k: kazoo3_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [kazoo3_values(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def snake_key(key: str) -> str:
    """``Call-ID`` -> ``call_id``, ``Custom-Channel-Vars`` -> ``custom_channel_vars``."""
    return key.replace("-", "_").lower()


def kazoo4_data(value: Any) -> Any:
    """Kazoo 4.x JSON: keys lower_snake_case and null values dropped, recursively."""
    if isinstance(value, dict):
        return {snake_key(k): kazoo4_data(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [kazoo4_data(v) for v in value]
    return value


# -- bindings -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # emit() matches every subscription of every connection
def parse_binding(binding: str) -> tuple[str, str]:
    """``call.<EVENT or *>.<call id or *>`` -> (event, call id). Raises :class:`WireError`."""
    match = _BINDING.fullmatch(binding)
    if match is None:
        raise WireError(f"unsupported binding {binding!r}")
    return match.group(1), match.group(2)


def binding_matches(binding: str, name: str, payload: dict[str, Any]) -> bool:
    event, call_id = parse_binding(binding)
    return event in ("*", name) and call_id in ("*", payload.get("Call-ID"))


# -- client frames ----------------------------------------------------------------------------


def decode_client(dialect: str, frame: str) -> list[ClientAction]:
    """The actions in one client frame; unknown but well-formed packets yield nothing."""
    if dialect == SIO09:
        return [a for p in sio09_split(frame) for a in _sio09_action(p)]
    if dialect == EIO4:
        return _eio4_action(frame)
    if dialect == KAZOO:
        return _kazoo_action(frame)
    raise WireError(f"unknown dialect {dialect!r}")


def sio09_split(frame: str) -> list[str]:
    """The packets of a frame; lengths count code points."""
    if not frame.startswith(SEPARATOR):
        return [frame]
    packets, i = [], 0
    while i < len(frame):
        j = frame.find(SEPARATOR, i + 1)
        digits = frame[i + 1 : j] if j > 0 else ""
        if frame[i] != SEPARATOR or not (digits.isascii() and digits.isdigit()):
            raise WireError("bad multi-packet frame")
        end = j + 1 + int(digits)
        if end > len(frame):
            raise WireError("multi-packet length beyond the frame")
        packets.append(frame[j + 1 : end])
        i = end
    return packets


def _sio09_action(packet: str) -> list[ClientAction]:
    match = _SIO09_PACKET.fullmatch(packet)
    if match is None:
        raise WireError("garbled packet")
    kind, data = match.group(1), match.group(4)
    if kind == "0":
        return [Leave()]
    if kind == "2":
        return [Alive()]
    if kind != "5":
        return []
    body = _loads(data)
    if not isinstance(body, dict):
        raise WireError("event is not an object")
    args = body.get("args")
    return _subscription(body.get("name"), args[0] if isinstance(args, list) and args else args)


def _eio4_action(frame: str) -> list[ClientAction]:
    if frame in ("1", "41"):
        return [Leave()]
    if frame.startswith("3"):
        return [Alive()]
    if frame == "40" or frame.startswith("40{"):
        return [Connect()]
    if frame.startswith("42"):
        body = _loads(frame[2:].lstrip("0123456789"))
        if not isinstance(body, list) or not body:
            raise WireError("event is not a non-empty array")
        return _subscription(body[0], body[1] if len(body) > 1 else None)
    if frame[:1] in ("2", "4", "5", "6"):
        return []
    raise WireError("unknown packet")


def _kazoo_action(frame: str) -> list[ClientAction]:
    body = _loads(frame)
    if not isinstance(body, dict):
        raise WireError("frame is not a JSON object")
    action, request_id = body.get("action"), body.get("request_id")
    request_id = str(request_id) if isinstance(request_id, (str, int)) else None
    if action == "ping":
        return [Ping(request_id)]
    data = body.get("data")
    if not isinstance(data, dict):
        data = {}
    return _subscription(action, {**data, "auth_token": body.get("auth_token")}, request_id)


def _subscription(name: Any, args: Any, request_id: str | None = None) -> list[ClientAction]:
    if name not in ("subscribe", "unsubscribe"):
        if name is None or isinstance(name, str):
            return []
        raise WireError("event name is not a string")
    if not isinstance(args, dict):
        args = {}
    fields = [args.get(k) for k in ("account_id", "auth_token", "binding")]
    account_id, token, binding = (v if isinstance(v, str) else "" for v in fields)
    cls = Subscribe if name == "subscribe" else Unsubscribe
    return [cls(account_id, token, binding, request_id)]


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise WireError("invalid JSON") from None


# -- server frames ----------------------------------------------------------------------------


def sio09_handshake_body(sid: str, heartbeat_timeout: float, close_timeout: float,
                         transports: tuple[str, ...] = ("websocket", "xhr-polling")) -> str:
    return f"{sid}:{_seconds(heartbeat_timeout)}:{_seconds(close_timeout)}:{','.join(transports)}"


def sio09_frame(packets: list[str]) -> str:
    """One packet as is; several joined as ``\\ufffd<length>\\ufffd<packet>...``."""
    if len(packets) == 1:
        return packets[0]
    return "".join(f"{SEPARATOR}{len(p)}{SEPARATOR}{p}" for p in packets)


def sio09_event(name: str, args: Any) -> str:
    return "5:::" + dumps({"name": name, "args": args})


def eio4_open(sid: str, ping_interval: float, ping_timeout: float,
              max_payload: int = 1_000_000) -> str:
    return "0" + dumps({"sid": sid, "upgrades": [], "pingInterval": int(ping_interval * 1000),
                        "pingTimeout": int(ping_timeout * 1000), "maxPayload": max_payload})


def greeting(dialect: str, sid: str, ping_interval: float, ping_timeout: float) -> list[str]:
    """What the server sends as soon as the websocket is open."""
    if dialect == SIO09:
        return ["1::"]
    if dialect == EIO4:
        return [eio4_open(sid, ping_interval, ping_timeout)]
    return []


def connected_frame(dialect: str, sid: str) -> str | None:
    return "40" + dumps({"sid": sid}) if dialect == EIO4 else None


def heartbeat_frame(dialect: str) -> str | None:
    return {SIO09: "2::", EIO4: "2"}.get(dialect)


def event_frame(dialect: str, account_id: str, binding: str, name: str,
                payload: dict[str, Any]) -> str:
    if dialect == SIO09:
        return sio09_event(name, kazoo3_values(payload))
    if dialect == EIO4:
        return "42" + dumps([name, payload])
    event, call_id = parse_binding(binding)
    return dumps({
        "action": "event", "subscribed_key": binding,
        "subscription_key": f"call.{account_id}.{event}.{call_id}",
        "name": name, "routing_key": f"call.{account_id}.{name}.{payload.get('Call-ID') or '*'}",
        "data": kazoo4_data(payload),
    })


def reply_frame(request_id: str | None, data: dict[str, Any], ok: bool = True) -> str:
    """A kazoo-json reply to a client request."""
    return dumps({"action": "reply", "request_id": request_id,
                  "status": "success" if ok else "error", "data": data})


def auth_failure_frame(dialect: str, token: str, request_id: str | None = None) -> str:
    """Kazoo's answer to a bad token; like Kazoo, it echoes the token."""
    if dialect == KAZOO:
        errors = [f"failed to authenticate token {token}"]
        return reply_frame(request_id, {"errors": errors}, ok=False)
    body = {"message": "invalid auth token", "cause": token}
    if dialect == SIO09:
        return sio09_event("auth_failure", [body])
    return "42" + dumps(["auth_failure", body])


def error_frame(dialect: str, message: str, request_id: str | None = None) -> str:
    if dialect == KAZOO:
        return reply_frame(request_id, {"errors": [message]}, ok=False)
    body = {"message": message}
    return sio09_event("error", [body]) if dialect == SIO09 else "42" + dumps(["error", body])


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
