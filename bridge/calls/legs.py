"""The state change each normalized event makes (pure): which record, which operations.

A leg's record (``leg:<call id>``) holds what its events said: the parties and routing fields
(latest known value), ``started_at`` (its ``call.created``), ``answered_at`` and
``bridged_at`` (first seen), ``rank`` (1 ringing, 2 answered, 3 bridged: a leg never goes
back), ``held`` and ``parked`` (the latest hold or park event by time). ``call.ended`` and
``call.abandoned`` end the record. An extension's record (``ext:<extension>``, on
``presence:<tenant>``) holds ``online`` from ``presence.changed``.

Events that change nothing (``call.other``, ``call.completed``, notices, verifications, a call
event without a ``call_id``) give no change.
"""

from __future__ import annotations

from typing import Any

from bridge.calls.change import Change
from bridge.events.event import Event, EventType

RINGING, ANSWERED, BRIDGED = 1, 2, 3

#: Fields copied from every event of a leg, when the event knows them.
_ROUTING = ("bridge_id", "other_leg_id", "extension", "direction", "leg_direction", "provider",
            "account")


def leg_key(call_id: str) -> str:
    return f"leg:{call_id}"


def extension_key(extension: str) -> str:
    return f"ext:{extension}"


def change_for(event: Event) -> Change | None:
    """The change ``event`` makes to the state of every channel it is published on."""
    if event.type == EventType.PRESENCE:
        return _presence(event)
    if event.call_id is None:
        return None
    kind = event.type
    key, at = leg_key(event.call_id), event.occurred_at
    if kind in (EventType.ENDED, EventType.ABANDONED):
        return Change(key, at, end=True)
    fields = _known(event)
    if kind == EventType.CREATED:
        return Change(key, at, set=fields, setnx={"started_at": at}, max={"rank": RINGING})
    if kind == EventType.ANSWERED:
        return Change(key, at, set=fields, setnx={"answered_at": at}, max={"rank": ANSWERED})
    if kind == EventType.BRIDGED:
        return Change(key, at, set=fields, setnx={"answered_at": at, "bridged_at": at},
                      max={"rank": BRIDGED})
    if kind in (EventType.HELD, EventType.UNHELD):
        return Change(key, at, set=fields, max={"rank": ANSWERED},
                      latest={"held": kind == EventType.HELD})
    if kind in (EventType.PARKED, EventType.RETRIEVED):
        return Change(key, at, set=fields, latest={"parked": kind == EventType.PARKED})
    return None


def _known(event: Event) -> dict[str, Any]:
    fields: dict[str, Any] = {"call_id": event.call_id}
    for name in _ROUTING:
        value = getattr(event, name)
        if value is not None:
            fields[name] = value
    for name in ("caller", "callee"):
        party = getattr(event, name)
        if party is not None:
            fields[name] = {"number": party.number, "name": party.name}
    return fields


def _presence(event: Event) -> Change | None:
    detail = event.detail or {}
    extension, online = detail.get("extension"), detail.get("online")
    if not isinstance(extension, str) or not isinstance(online, bool):
        return None
    return Change(extension_key(extension), event.occurred_at,
                  set={"extension": extension}, latest={"online": online})
