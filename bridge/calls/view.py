"""What a channel's state records mean to a client (pure): the active calls and each
extension's status, as the ``state`` message and the HTTP API give them.

Legs are grouped into calls by ``bridge_id`` and by ``other_leg_id`` links (a call's legs
share one, or point at each other); a call's id is its ``bridge_id`` when a leg knows it, else
its first leg's ``call_id``. See docs/events.md ("Live state") for every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.calls.legs import ANSWERED, BRIDGED

Record = Mapping[str, Any]


def leg_state(leg: Record) -> str:
    """``ringing``, ``answered``, ``bridged``, ``held`` or ``parked``."""
    if leg.get("parked"):
        return "parked"
    if leg.get("held"):
        return "held"
    rank = leg.get("rank", 0)
    return "bridged" if rank >= BRIDGED else "answered" if rank >= ANSWERED else "ringing"


_CALL_ORDER = ("ringing", "answered", "bridged", "parked", "held")
_EXTENSION_ORDER = ("idle", "ringing", "talking", "held")
_EXTENSION_OF = {"ringing": "ringing", "answered": "talking", "bridged": "talking",
                 "held": "held", "parked": "held"}


def _groups(legs: list[Record]) -> list[list[Record]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    for leg in legs:
        own = leg["call_id"]
        find(own)
        for other in (leg.get("bridge_id"), leg.get("other_leg_id")):
            if isinstance(other, str) and other:
                union(own, other)
    groups: dict[str, list[Record]] = {}
    for leg in legs:
        groups.setdefault(find(leg["call_id"]), []).append(leg)
    return list(groups.values())


def _started(leg: Record) -> str:
    return str(leg.get("started_at") or leg.get("answered_at") or "")


def _call(legs: list[Record]) -> dict[str, Any]:
    legs = sorted(legs, key=lambda leg: (_started(leg), leg["call_id"]))
    first = legs[0]
    bridge = next((leg["bridge_id"] for leg in legs if leg.get("bridge_id")), None)
    states = [leg_state(leg) for leg in legs]
    # The A-leg (towards the switch) names the parties as the caller placed the call.
    a_leg = next((leg for leg in legs if leg.get("leg_direction") == "inbound"), first)
    extensions = sorted({leg["extension"] for leg in legs if leg.get("extension")})
    external = any(not leg.get("extension") for leg in legs)
    call: dict[str, Any] = {
        "call_id": bridge or first["call_id"],
        "state": max(states, key=_CALL_ORDER.index),
        "extensions": extensions,
        "legs": [_leg(leg, state) for leg, state in zip(legs, states)],
    }
    if external or len(legs) > 1:
        call["direction"] = ("internal" if not external else
                             "outbound" if a_leg.get("extension") else "inbound")
    for name in ("caller", "callee", "provider", "account"):
        if a_leg.get(name) is not None:
            call[name] = a_leg[name]
    started = [leg["started_at"] for leg in legs if leg.get("started_at")]
    answered = [leg["answered_at"] for leg in legs if leg.get("answered_at")]
    if started:
        call["started_at"] = min(started)
    if answered:
        call["answered_at"] = min(answered)
    return call


def _leg(leg: Record, state: str) -> dict[str, Any]:
    out = {"call_id": leg["call_id"], "state": state}
    for name in ("extension", "direction", "leg_direction", "caller", "callee", "started_at",
                 "answered_at"):
        if leg.get(name) is not None:
            out[name] = leg[name]
    return out


def calls(records: Mapping[str, Record]) -> list[dict[str, Any]]:
    """The active calls of these records, oldest first."""
    legs = [r for k, r in records.items() if k.startswith("leg:") and r.get("call_id")]
    found = [_call(group) for group in _groups(legs)]
    return sorted(found, key=lambda c: (c.get("started_at") or c.get("answered_at") or "",
                                        c["call_id"]))


def extensions(records: Mapping[str, Record],
               presence: Mapping[str, Record] | None = None,
               only: str | None = None, *,
               active: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each extension's ``status`` (``idle``, ``ringing``, ``talking``, ``held``), its calls,
    and ``online`` where a provider reports presence; by extension. ``only``: that one
    extension (listed, idle, even when nothing is known of it). ``active``: :func:`calls` of
    the same records, when the caller has it already."""
    found: dict[str, dict[str, Any]] = {}

    def entry(extension: str) -> dict[str, Any]:
        return found.setdefault(extension, {"extension": extension, "status": "idle",
                                            "calls": []})

    for call in calls(records) if active is None else active:
        for leg in call["legs"]:
            extension = leg.get("extension")
            if not extension or (only is not None and extension != only):
                continue
            item = entry(extension)
            status = _EXTENSION_OF[leg["state"]]
            if _EXTENSION_ORDER.index(status) > _EXTENSION_ORDER.index(item["status"]):
                item["status"] = status
            if call["call_id"] not in item["calls"]:
                item["calls"].append(call["call_id"])
    for record in (presence or {}).values():
        extension = record.get("extension")
        if isinstance(extension, str) and (only is None or extension == only) \
                and isinstance(record.get("online"), bool):
            entry(extension)["online"] = record["online"]
    if only is not None:
        entry(only)
    return [found[name] for name in sorted(found)]
