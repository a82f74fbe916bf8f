"""Which live legs to close, and the ``call.ended`` that closes one (pure code).

A leg stays in its channels' state until an event ends it. When that event never comes (the
hangup was lost in an upstream outage, a provider dropped it), two rules close the leg with a
synthetic ``call.ended`` published like any other event, so every client and every channel's
state converge (docs/events.md, "Closed by callbridge"):

- :func:`aged`: the leg is older than ``[state] max_call_age`` (``closed_by: "max_age"``);
- :func:`reconciled`: a ``call.completed`` record says its call is over
  (``closed_by: "reconciled"``).

The closing event's id depends only on ``(tenant, leg call id, reason)``
(:func:`closing_id`), so several instances closing the same leg publish it once: the broker
drops the repeats by event id.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from bridge.calls import view
from bridge.calls.change import Record
from bridge.events.event import Event, EventType, Party

MAX_AGE = "max_age"
RECONCILED = "reconciled"

#: Seconds a completed record's times may differ from the live ones: live times are exact,
#: records' are often whole seconds, and a record's start may be its first leg's or its call's.
SLACK = 6.0
#: Leg fields whose earliest value is when the state first knew of the leg.
_TIMES = ("started_at", "answered_at", "bridged_at", "held_at", "parked_at")
_ROUTING = ("account", "extension", "bridge_id", "other_leg_id", "direction", "leg_direction")
_DIGITS = re.compile(r"\D")
_PHONE = re.compile(r"\+?[0-9 ().\-]+")


def closing_id(tenant: str, call_id: str, reason: str) -> str:
    """26 lowercase base32 characters of SHA-256 over ``["callbridge/close/1", tenant,
    call_id, reason]``: the same leg closed for the same reason always gets the same id."""
    identity = ["callbridge/close/1", tenant, call_id, reason]
    digest = hashlib.sha256(orjson.dumps(identity)).digest()
    return base64.b32encode(digest[:16]).decode().rstrip("=").lower()


def closing_event(tenant: str, leg: Record, reason: str, now: float,
                  detail: Mapping[str, Any] | None = None) -> Event:
    """The ``call.ended`` that closes ``leg`` (a ``leg:<call id>`` record) at ``now`` (Unix
    time): the leg's parties and routing fields, no hangup cause, ``detail.closed_by =
    reason`` plus ``detail``."""
    fields = {name: leg[name] for name in _ROUTING if isinstance(leg.get(name), str)}
    return Event(
        id=closing_id(tenant, leg["call_id"], reason), type=EventType.ENDED,
        provider=str(leg.get("provider") or "callbridge"), tenant=tenant,
        occurred_at=iso(now), call_id=leg["call_id"],
        caller=_party(leg.get("caller")), callee=_party(leg.get("callee")),
        detail={"closed_by": reason, **(detail or {})}, **fields)


def aged(records: Mapping[str, Record], now: float, max_age: float) -> list[Record]:
    """The legs first known more than ``max_age`` seconds before ``now`` (their
    ``started_at``, else the earliest time the state has of them), oldest first.

    The legs of any part of ``records`` may be looked for separately and put together with
    :func:`oldest_first`: the result is the same."""
    found = []
    for leg in _legs(records).values():
        first = first_seen(leg)
        if first is not None and now - first > max_age:
            found.append(leg)
    return oldest_first(found)


def oldest_first(legs: list[Record]) -> list[Record]:
    """``legs`` (each with a time: :func:`first_seen`) ordered by that time, then call id."""
    return sorted(legs, key=lambda leg: (first_seen(leg) or 0.0, leg["call_id"]))


def reconciled(records: Mapping[str, Record], completed: Event) -> list[Record]:
    """The legs of every live call that ``completed`` (a ``call.completed`` record) says is
    over, all legs of such a call included.

    A call matches when one of its legs shares an id with the record (the record's
    ``call_id``, ``bridge_id`` or ``other_leg_id`` against each leg's), or, for records that
    carry no live id (AntBuddy's call history), when it is the same provider's, both the
    record's caller and callee are among the call's parties (numbers compared by their last
    nine digits), and the call started within the record's span (:data:`SLACK` either side).
    """
    return reconciled_all(records, [completed])[0]


def reconciled_all(records: Mapping[str, Record], completed: list[Event]) -> list[list[Record]]:
    """:func:`reconciled` for each record of ``completed``, the state's calls worked out once."""
    legs = _legs(records)
    calls = [[legs[leg["call_id"]] for leg in call["legs"] if leg["call_id"] in legs]
             for call in view.calls(records)]
    out: list[list[Record]] = []
    for record in completed:
        ids = {i for i in (record.call_id, record.bridge_id, record.other_leg_id) if i}
        span = _span(record)
        found: list[Record] = []
        for members in calls:
            if any(ids & _ids(leg) for leg in members) or \
                    (span is not None and _same_parties(members, record, span)):
                found.extend(members)
        out.append(found)
    return out


def first_seen(leg: Record) -> float | None:
    times = [t for t in (seconds(leg.get(name)) for name in _TIMES) if t is not None]
    return min(times) if times else None


def seconds(value: Any) -> float | None:
    """Unix time of an ISO 8601 text (UTC when it names no zone); None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def iso(unix: float) -> str:
    """``unix`` as events write times: ISO 8601, UTC, milliseconds, ``Z``."""
    moment = datetime.fromtimestamp(unix, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _legs(records: Mapping[str, Record]) -> dict[str, Record]:
    return {r["call_id"]: r for k, r in records.items()
            if k.startswith("leg:") and isinstance(r.get("call_id"), str)}


def _ids(leg: Record) -> set[str]:
    return {leg[name] for name in ("call_id", "bridge_id", "other_leg_id")
            if isinstance(leg.get(name), str) and leg[name]}


def _span(completed: Event) -> tuple[float, float] | None:
    """When the record's call ran: from its start (``detail.start_time``, else its time) to
    its end (start plus duration, ``detail.end_time`` or its time, the latest)."""
    detail = completed.detail or {}
    occurred = seconds(completed.occurred_at)
    start = seconds(detail.get("start_time"))
    start = start if start is not None else occurred
    if start is None or start <= 0:
        return None  # a record without a time (time_source "none") matches no live call
    ends = [start, occurred or start, seconds(detail.get("end_time")) or start]
    if completed.durations is not None and completed.durations.duration is not None:
        ends.append(start + completed.durations.duration)
    return start - SLACK, max(ends) + SLACK


def _same_parties(legs: list[Record], completed: Event, span: tuple[float, float]) -> bool:
    if any(leg.get("provider") != completed.provider for leg in legs):
        return False
    wanted = [_key(p.number) for p in (completed.caller, completed.callee)
              if p is not None and p.number]
    if len(wanted) < 2:
        return False
    parties = set()
    for leg in legs:
        for side in ("caller", "callee"):
            party = leg.get(side)
            if isinstance(party, dict) and isinstance(party.get("number"), str):
                parties.add(_key(party["number"]))
        if isinstance(leg.get("extension"), str):
            parties.add(_key(leg["extension"]))
    starts = [t for t in (first_seen(leg) for leg in legs) if t is not None]
    return all(w in parties for w in wanted) and bool(starts) \
        and span[0] <= min(starts) <= span[1]


def _key(number: str) -> str:
    """A party compared loosely: a phone number (digits and ``+ ( ) - .`` or blanks) by its
    last nine digits, so national and international forms of one number match."""
    digits = _DIGITS.sub("", number)
    if len(digits) >= 9 and _PHONE.fullmatch(number.strip()):
        return digits[-9:]
    return number.strip().lower()


def _party(value: Any) -> Party | None:
    if not isinstance(value, dict):
        return None
    number, name = value.get("number"), value.get("name")
    return Party(number=number if isinstance(number, str) else None,
                 name=name if isinstance(name, str) else None)
