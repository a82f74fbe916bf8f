"""Kazoo call events to normalized :class:`~bridge.events.event.Event` objects. Pure: no I/O,
no clock.

The rules (id, time, extension, direction) are documented in docs/events.md; this module is
their single implementation.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from bridge.events.event import Durations, Event, EventType, Hangup, Party
from bridge.upstream import kazoo

TYPES: dict[str, EventType] = {
    "CHANNEL_CREATE": EventType.CREATED,
    "CHANNEL_ANSWER": EventType.ANSWERED,
    "CHANNEL_BRIDGE": EventType.BRIDGED,
    "CHANNEL_HOLD": EventType.HELD,
    "CHANNEL_UNHOLD": EventType.UNHELD,
    "CHANNEL_DESTROY": EventType.ENDED,
    "PARK_PARKED": EventType.PARKED,
    "PARK_RETRIEVED": EventType.RETRIEVED,
    "PARK_ABANDONED": EventType.ABANDONED,
}

#: occurred_at when an event carries no usable time and the caller gave no receive time:
#: deliberately the Unix epoch, so it can never pass for a real time (see docs/events.md).
NO_TIME = "1970-01-01T00:00:00.000Z"

_ID_BYTES = 16  # 128 bits of sha256 -> 26 base32 characters


def normalize_kazoo(
    name: str,
    payload: dict[str, Any],
    *,
    tenant: str,
    account: str | None,
    provider: str = "antbuddy",
    include_raw: bool = False,
    received_at: float | None = None,
) -> Event:
    """Normalize one Kazoo call event (either key case, numbers as strings or integers).

    ``account`` is the configured account id; when None, ``Custom-Channel-Vars.Account-ID`` is
    used. ``received_at`` (Unix seconds), when given, is the time to fall back on if the event
    carries none; the event then says so in ``detail.time_source``. Raises ValueError only
    when ``name`` is not a str or ``payload`` not a dict; any other oddity is read best-effort:
    an id that is not printable, holds a blank or exceeds 256 characters, and a duration
    that is not 0..31 days of seconds in ASCII digits, read as missing (``null``).
    """
    if not isinstance(name, str):
        raise ValueError(f"Kazoo event name must be a str, not {type(name).__name__}")
    if not isinstance(payload, dict):
        raise ValueError(f"Kazoo event payload must be a dict, not {type(payload).__name__}")

    p = kazoo.canonical(payload)
    ccv = "custom_channel_vars"
    account_id = account or kazoo.as_id(kazoo.get(p, ccv, "account_id"))
    account_id = account_id or kazoo.as_id(p.get("account_id"))
    call_id = kazoo.as_id(p.get("call_id"))
    msg_id = kazoo.as_id(p.get("msg_id"))
    event_type = TYPES.get(name.strip().upper(), EventType.OTHER)

    detail: dict[str, Any] = {}
    occurred_at, time_source = _occurred_at(p, received_at)
    if time_source is not None:
        detail["time_source"] = time_source
    inception = kazoo.get(p, ccv, "inception")
    if inception is not None and not (isinstance(inception, str) and not inception.strip()):
        # Kazoo sets Inception only on calls that involve a carrier.
        detail["external"] = True
        if kazoo.as_str(inception) is not None:
            detail["inception"] = kazoo.as_str(inception)

    extension = kazoo.as_id(kazoo.user_part(p.get("presence_id")))
    extension = extension or kazoo.as_id(kazoo.get(p, ccv, "username"))
    leg_direction = kazoo.as_str(p.get("call_direction"))

    hangup = durations = None
    if event_type is EventType.ENDED:
        hangup = _hangup(p)
        durations = _durations(p)

    upstream: dict[str, Any] = {"name": name}
    if msg_id is not None:
        upstream["msg_id"] = msg_id

    return Event(
        id=event_id(provider, account_id, name, call_id, msg_id, p),
        type=str(event_type),
        provider=provider,
        tenant=tenant,
        occurred_at=occurred_at,
        account=account_id,
        call_id=call_id,
        other_leg_id=kazoo.as_id(p.get("other_leg_call_id")),
        bridge_id=kazoo.as_id(kazoo.get(p, ccv, "bridge_id")) or kazoo.as_id(p.get("bridge_id")),
        extension=extension,
        direction=_direction(leg_direction) if extension is not None else None,
        leg_direction=leg_direction,
        caller=_party(p, "caller_id", "from"),
        callee=_party(p, "callee_id", "to", "request"),
        hangup=hangup,
        durations=durations,
        upstream=upstream,
        detail=detail or None,
        raw=payload if include_raw else None,
    )


def event_id(
    provider: str,
    account: str | None,
    name: str,
    call_id: str | None,
    msg_id: str | None,
    canonical_payload: dict[str, Any],
) -> str:
    """The event's id: 26 lowercase base32 characters of sha256 over its identity.

    Identity is ``(provider, account, name, call id, Msg-ID)``; without a Msg-ID the whole
    canonical payload (lower_snake keys, scalars as strings, nulls dropped) takes its place, so
    a 3.x and a 4.x rendering of one event still share an id.
    """
    identity: list[Any] = ["kazoo/1", provider, account or "", name, call_id or ""]
    if msg_id is not None:
        identity += ["msg_id", msg_id]
    else:
        identity += ["payload", _stable(canonical_payload)]
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).digest()
    return base64.b32encode(digest[:_ID_BYTES]).decode().rstrip("=").lower()


def _stable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe form of a canonical value that does not depend on string/number typing."""
    if depth > kazoo.MAX_DEPTH:
        return None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            s = _stable(v, depth + 1)
            if s is not None:
                out[str(k)] = s
        return out
    if isinstance(value, list):
        return [_stable(v, depth + 1) for v in value]
    if value is None:
        return None
    text = kazoo.as_str(value)
    if text is not None:
        return text
    if isinstance(value, str):
        return value  # blank strings: kept as they are
    return f"<{type(value).__name__}>"  # not JSON: only its type is stable


def _occurred_at(p: dict[str, Any], received_at: float | None) -> tuple[str, str | None]:
    micros = kazoo.micros_from_msg_id(p.get("msg_id"))
    if micros is None:
        micros = kazoo.micros_from_gregorian(p.get("timestamp"))
    if micros is not None:
        return kazoo.iso_from_micros(micros), None
    if received_at is not None:
        try:
            return kazoo.iso_from_micros(round(float(received_at) * 1_000_000)), "received"
        except (ValueError, OverflowError):
            pass
    return NO_TIME, "none"


def _direction(leg_direction: str | None) -> str | None:
    # The switch's "inbound" leg comes from the phone that dials out; its "outbound" leg
    # rings the called phone.
    lowered = (leg_direction or "").strip().lower()
    if lowered == "inbound":
        return "outgoing"
    if lowered == "outbound":
        return "incoming"
    return None


def _party(p: dict[str, Any], prefix: str, *uri_keys: str) -> Party | None:
    number = kazoo.as_str(p.get(f"{prefix}_number"))
    for key in uri_keys:
        if number is not None:
            break
        number = kazoo.user_part(p.get(key))
    name = kazoo.as_str(p.get(f"{prefix}_name"))
    if number is None and name is None:
        return None
    return Party(number=number, name=name)


def _hangup(p: dict[str, Any]) -> Hangup | None:
    cause = kazoo.as_str(p.get("hangup_cause"))
    code = kazoo.as_str(p.get("hangup_code"))
    return Hangup(cause=cause, code=code) if cause or code else None


def _durations(p: dict[str, Any]) -> Durations | None:
    values = Durations(
        duration=kazoo.as_seconds(p.get("duration_seconds")),
        billing=kazoo.as_seconds(p.get("billing_seconds")),
        ringing=kazoo.as_seconds(p.get("ringing_seconds")),
    )
    return values if values != Durations() else None
