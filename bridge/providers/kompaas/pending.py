"""Verifications waiting for their outcome webhook, with their deadlines (pure, no I/O).

This is the one-process table (``memory://`` brokers); :mod:`.redis_store` keeps the same
records in Redis for several instances. Every verification gets the same timeout, so insertion
order is deadline order: the oldest entry is always the next to expire and one timer serves them
all. Every table is bounded; finished verifications are remembered (newest
``finished_capacity``) so a late or repeated webhook is recognised and never produces a second
event, and outcomes of ids not (yet) known are held (newest ``held_capacity``) because an
outcome may overtake the answer to the start request that tells callbridge the id.
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
    #: None only for a verification whose record outlived nobody to read it (Redis: every
    #: instance was down well past its deadline); its timeout is still reported.
    phone: str | None
    #: Wall-clock start (for the event), or None as above.
    started_at: float | None
    #: The deadline in the store's clock (:meth:`.store.PendingStore.now`).
    deadline: float
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Held:
    """An outcome as the webhook reported it."""

    q931: int
    final: str | None
    outcome: str


class PendingTable:
    def __init__(self, capacity: int = 10_000, finished_capacity: int = 10_000,
                 held_capacity: int = 1024) -> None:
        self.capacity = capacity
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._finished: OrderedDict[str, str] = OrderedDict()  # uuid -> outcome
        self._finished_capacity = finished_capacity
        self._held: OrderedDict[str, Held] = OrderedDict()  # newest last
        self._held_capacity = held_capacity

    def __len__(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return len(self._pending) < self.capacity

    def add(self, entry: Pending) -> Held | None:
        """Track ``entry``; TableFull when at capacity. A repeated uuid keeps its first entry.

        When its outcome arrived first (held by :meth:`complete`), the verification ends at
        once instead: the held outcome is returned and the caller emits the event.
        """
        if entry.uuid in self._pending or entry.uuid in self._finished:
            return None
        held = self._held.pop(entry.uuid, None)
        if held is not None:
            self._remember(entry.uuid, held.outcome)
            return held
        if not self.has_room():
            raise TableFull(f"{len(self._pending)} verifications pending")
        self._pending[entry.uuid] = entry
        return None

    def complete(self, uuid: str, outcome: str, hold: Held | None = None,
                 ) -> tuple[str, Pending | None, str | None]:
        """Resolve ``uuid`` with ``outcome``.

        Returns ``(PENDING, entry, None)`` when it was waiting (the caller emits the event),
        ``(FINISHED, None, earlier_outcome)`` when it had already ended (late or repeated
        webhook: emit nothing), ``(UNKNOWN, None, None)`` when callbridge is not tracking it;
        ``hold`` is then kept for :meth:`add`, in case the start's answer is still in flight.
        """
        entry = self._pending.pop(uuid, None)
        if entry is not None:
            self._remember(uuid, outcome)
            return PENDING, entry, None
        earlier = self._finished.get(uuid)
        if earlier is not None:
            return FINISHED, None, earlier
        if hold is not None:
            self._held[uuid] = hold
            self._held.move_to_end(uuid)
            while len(self._held) > self._held_capacity:
                self._held.popitem(last=False)
        return UNKNOWN, None, None

    def expire(self, now: float, outcome: str) -> list[Pending]:
        """Remove and return every entry whose deadline is at or before ``now``."""
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
