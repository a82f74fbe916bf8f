"""The normalized event: one schema for every provider's signal.

An :class:`Event` is immutable and encodes itself to JSON once (:meth:`Event.to_json`); every
channel and every client then shares those bytes. The schema is documented in docs/events.md;
bump :data:`SCHEMA_VERSION` on any incompatible change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

SCHEMA_VERSION = 1


class EventType(StrEnum):
    CREATED = "call.created"
    ANSWERED = "call.answered"
    BRIDGED = "call.bridged"
    HELD = "call.held"
    UNHELD = "call.unheld"
    ENDED = "call.ended"
    PARKED = "call.parked"
    RETRIEVED = "call.retrieved"
    ABANDONED = "call.abandoned"
    #: An upstream call event callbridge has no mapping for; passed through, never dropped.
    OTHER = "call.other"
    #: A finished call's record (CDR, history, webhook), from providers that report afterwards.
    COMPLETED = "call.completed"
    #: Something about callbridge's own link to a provider (auth failure, stream state).
    SYSTEM = "system.notice"
    #: An extension came online or went offline (registration polling).
    PRESENCE = "presence.changed"
    #: A verification (flash) call ended: answered, busy, rejected, unreachable, timed out.
    VERIFICATION = "verification.completed"


@dataclass(frozen=True, slots=True)
class Party:
    number: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    cause: str | None = None  # e.g. NORMAL_CLEARING, USER_BUSY
    code: str | None = None  # e.g. sip:486


@dataclass(frozen=True, slots=True)
class Durations:
    duration: int | None = None  # seconds from creation to hang-up
    billing: int | None = None  # seconds talking
    ringing: int | None = None  # seconds ringing


@dataclass(frozen=True, slots=True)
class Event:
    """One normalized event. Field meanings are documented in docs/events.md."""

    id: str
    type: str
    provider: str
    tenant: str
    occurred_at: str  # ISO 8601, UTC, millisecond precision, "Z" suffix
    account: str | None = None
    call_id: str | None = None
    #: Leg ids linked to this one: the other leg, and the bridge id when known.
    other_leg_id: str | None = None
    bridge_id: str | None = None
    #: The extension this leg belongs to: the routing key for per-extension channels.
    extension: str | None = None
    #: From the extension's point of view: "outgoing" (it placed the call) or "incoming".
    direction: str | None = None
    #: As the switch reports the leg: "inbound" (towards the switch) or "outbound".
    leg_direction: str | None = None
    caller: Party | None = None
    callee: Party | None = None
    hangup: Hangup | None = None
    durations: Durations | None = None
    #: Upstream identification: {"name": "CHANNEL_CREATE", "msg_id": "..."}
    upstream: dict[str, Any] = field(default_factory=dict)
    #: Extra type-specific details (system notices, completed-call records).
    detail: dict[str, Any] | None = None
    #: The provider's payload, only when configured (``raw_payload = true``).
    raw: dict[str, Any] | None = None
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict, with None-valued fields omitted."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def envelope(channel: str, epoch: str, offset: str, event_json: bytes) -> bytes:
    """The frame a subscriber receives for one event on one channel.

    ``{"type":"event","channel":C,"epoch":E,"offset":O,"event":{...}}``. The same bytes go on
    Redis pub/sub and to websocket clients, so an event is encoded once per channel, never per
    client. Channel names, epochs and offsets are restricted to characters that need no JSON
    escaping (see :mod:`bridge.events.channels`, :data:`bridge.brokers.base.EPOCH_RE`), so plain
    concatenation is valid JSON. The Redis broker builds the identical frame in its Lua publish
    script; keep the two in step.
    """
    return b"".join((
        b'{"type":"event","channel":"', channel.encode(),
        b'","epoch":"', epoch.encode(),
        b'","offset":"', offset.encode(),
        b'","event":', event_json, b"}",
    ))


_EPOCH_AT = b'","epoch":"'
_ID_AT = b'"event":{"id":"'


def frame_epoch(frame: bytes) -> str | None:
    """The epoch of an :func:`envelope` frame (provisional ones too), read without parsing
    the JSON: it follows the channel name, which needs no escaping."""
    start = frame.find(_EPOCH_AT)
    if start < 0:
        return None
    start += len(_EPOCH_AT)
    end = frame.find(b'"', start)
    return frame[start:end].decode() if end > start else None


def frame_event_id(frame: bytes) -> str | None:
    """The event id of an :func:`envelope` frame, read without parsing the JSON: an event's
    JSON starts with its id (:meth:`Event.to_json`), which needs no escaping."""
    start = frame.find(_ID_AT)
    if start < 0:
        return None
    start += len(_ID_AT)
    end = frame.find(b'"', start)
    if end <= start or frame.find(b"\\", start, end) >= 0:
        return None
    return frame[start:end].decode()
