"""Where verifications wait for their outcome: the contract and its one-process form.

A ``memory://`` broker means one process: :class:`MemoryStore` keeps the pure
:class:`~.pending.PendingTable`. Redis brokers (``redis://``, ``rediss://``,
``redis-cluster://``) mean any instance may receive the webhook of a verification another one
started, and a restarted instance must still know what was pending:
:class:`~.redis_store.RedisStore` keeps the same records in Redis. :func:`.stores.open_store`
picks one by the broker URL; the provider only sees :class:`PendingStore`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from bridge.providers.kompaas.outcome import TIMED_OUT
from bridge.providers.kompaas.pending import Held, Pending, PendingTable


class StoreUnavailable(Exception):
    """The store did not answer. The message is redacted and names no secret."""


class PendingStore(ABC):
    #: ``memory`` or ``redis``, for /readyz.
    kind: str = ""
    #: The longest an idle timer waits before reading the earliest deadline again (other
    #: instances add verifications to a shared store without waking this one).
    poll_interval: float = 60.0

    @abstractmethod
    def now(self) -> float:
        """The clock of :attr:`Pending.deadline` in this store."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Verifications pending, as last seen (exact in memory)."""

    @abstractmethod
    async def has_room(self) -> bool:
        """False when the capacity is reached (checked before a paid call is placed)."""

    @abstractmethod
    async def add(self, entry: Pending) -> Held | None:
        """Track ``entry`` (TableFull at capacity); a repeated uuid keeps its first entry.

        Returns the outcome when it had arrived first: the verification is then finished and
        the caller emits its event.
        """

    @abstractmethod
    async def complete(self, uuid: str, held: Held) -> tuple[str, Pending | None, str | None]:
        """Resolve ``uuid``, as :meth:`.pending.PendingTable.complete`; exactly one caller
        anywhere gets ``PENDING`` for a verification, whether outcome or timeout came first."""

    @abstractmethod
    async def expire(self) -> list[Pending]:
        """Claim and return the verifications whose deadline has passed (each one returned
        to one caller only); they are remembered as timed out."""

    @abstractmethod
    async def next_deadline(self) -> float | None:
        """The earliest deadline (in :meth:`now`'s clock), or None when nothing is pending."""

    async def close(self) -> None:
        return None


class MemoryStore(PendingStore):
    """One process: the pure table, a monotonic clock."""

    kind = "memory"

    def __init__(self, capacity: int = 10_000) -> None:
        self.table = PendingTable(capacity=capacity)

    def now(self) -> float:
        return time.monotonic()

    @property
    def size(self) -> int:
        return len(self.table)

    async def has_room(self) -> bool:
        return self.table.has_room()

    async def add(self, entry: Pending) -> Held | None:
        return self.table.add(entry)

    async def complete(self, uuid: str, held: Held) -> tuple[str, Pending | None, str | None]:
        return self.table.complete(uuid, held.outcome, hold=held)

    async def expire(self) -> list[Pending]:
        return self.table.expire(self.now(), TIMED_OUT)

    async def next_deadline(self) -> float | None:
        return self.table.next_deadline()
