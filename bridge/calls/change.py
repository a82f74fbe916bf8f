"""How one event changes a channel's live state: a :class:`Change` to one record, applied in the
same atomic step as the event's publish.

A channel's state is a map of records (JSON objects) by key: ``leg:<call id>`` for each leg of a
call still in progress, ``ext:<extension>`` for what a provider reports of an extension
(presence). A :class:`Change` names one record and says what to do with it, with operations
that need no knowledge of the rest of the state, so the broker can apply them inside its publish
(the Redis brokers do it in the publish script; :func:`apply` is the same rule for
``memory://`` and for tests):

- ``end``: remove the record and leave a tombstone for :data:`TOMBSTONE_SECONDS`, so a late or
  repeated event of an ended leg never brings it back;
- otherwise, unless a tombstone is there: ``set`` overwrites fields, ``setnx`` writes fields the
  record does not have yet, ``max`` keeps the larger number, and ``latest`` writes a field only
  when the change is not older (by ``at``, an ISO 8601 time) than the one that wrote it last
  (``<field>_at`` keeps that time).

Events may come out of order (two legs on two connections, a replay after an outage): every
operation gives the same record whatever the order of the changes of different fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

#: How long an ended record's tombstone is kept: longer than any event of it can be late.
TOMBSTONE_SECONDS = 3600

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    #: The event's time (ISO 8601, UTC, ``Z``): orders ``latest`` operations.
    at: str
    end: bool = False
    set: Mapping[str, Any] = field(default_factory=dict)
    setnx: Mapping[str, Any] = field(default_factory=dict)
    max: Mapping[str, int] = field(default_factory=dict)
    latest: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The change as the Redis publish script reads it (every operation present; an empty
        operation is an empty JSON object)."""
        return orjson.dumps({"key": self.key, "at": self.at, "end": self.end,
                             "set": dict(self.set), "setnx": dict(self.setnx),
                             "max": dict(self.max), "latest": dict(self.latest)})


def apply(records: dict[str, Record], tombstones: dict[str, float], change: Change,
          now: float) -> None:
    """Apply ``change`` to one channel's ``records`` (``tombstones``: key -> unix time of its
    end). The reference rule: the Redis publish script does exactly this."""
    if change.end:
        records.pop(change.key, None)
        # Kept in the order they were set, oldest first: pruning stops at the first young one
        # instead of scanning every tombstone on each end.
        tombstones.pop(change.key, None)
        tombstones[change.key] = now
        while tombstones:
            oldest = next(iter(tombstones))
            if tombstones[oldest] >= now - TOMBSTONE_SECONDS:
                break
            del tombstones[oldest]
        return
    if change.key in tombstones:
        return
    record = records.setdefault(change.key, {})
    record.update(change.set)
    for name, value in change.setnx.items():
        record.setdefault(name, value)
    for name, number in change.max.items():
        if not isinstance(record.get(name), (int, float)) or record[name] < number:
            record[name] = number
    for name, value in change.latest.items():
        stamp = f"{name}_at"
        if not isinstance(record.get(stamp), str) or record[stamp] <= change.at:
            record[name] = value
            record[stamp] = change.at
