"""Verifications waiting for their outcome webhook, with their deadlines (pure, no I/O).

Every verification gets the same timeout, so insertion order is deadline order: the oldest entry
is always the next to expire and one timer serves them all. Both tables are bounded; finished
verifications are remembered (newest ``finished_capacity``) so a late or repeated webhook is
recognised and never produces a second event.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

PENDING = "pending"
FINISHED = "finished"
UNKNOWN = "unknown"


class TableFull(Exception):
    """Too many verifications are waiting for an outcome."""


@dataclass(frozen=True)
class Pending:
    uuid: str
    phone: str
    #: Wall-clock start (for the event) and monotonic deadline (for the timer).
    started_at: float
    deadline: float
    answer: dict[str, Any] = field(default_factory=dict)


class PendingTable:
    def __init__(self, capacity: int = 10_000, finished_capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._finished: OrderedDict[str, str] = OrderedDict()  # uuid -> outcome
        self._finished_capacity = finished_capacity

    def __len__(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return len(self._pending) < self.capacity

    def add(self, entry: Pending) -> None:
        """Track ``entry``; TableFull when at capacity. A repeated uuid keeps its first entry."""
        if entry.uuid in self._pending or entry.uuid in self._finished:
            return
        if not self.has_room():
            raise TableFull(f"{len(self._pending)} verifications pending")
        self._pending[entry.uuid] = entry

    def complete(self, uuid: str, outcome: str) -> tuple[str, Pending | None, str | None]:
        """Resolve ``uuid`` with ``outcome``.

        Returns ``(PENDING, entry, None)`` when it was waiting (the caller emits the event),
        ``(FINISHED, None, earlier_outcome)`` when it had already ended (late or repeated
        webhook: emit nothing), ``(UNKNOWN, None, None)`` when callbridge never started it.
        """
        entry = self._pending.pop(uuid, None)
        if entry is not None:
            self._remember(uuid, outcome)
            return PENDING, entry, None
        earlier = self._finished.get(uuid)
        if earlier is not None:
            return FINISHED, None, earlier
        return UNKNOWN, None, None

    def expire(self, now: float, outcome: str) -> list[Pending]:
        """Remove and return every entry whose deadline is at or before ``now`` (monotonic)."""
        due: list[Pending] = []
        while self._pending:
            uuid, entry = next(iter(self._pending.items()))
            if entry.deadline > now:
                break
            del self._pending[uuid]
            self._remember(uuid, outcome)
            due.append(entry)
        return due

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return next(iter(self._pending.values())).deadline

    def _remember(self, uuid: str, outcome: str) -> None:
        self._finished[uuid] = outcome
        while len(self._finished) > self._finished_capacity:
            self._finished.popitem(last=False)
