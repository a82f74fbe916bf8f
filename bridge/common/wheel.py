"""A timing wheel: members visited once per period, spread over it, by one timer.

Per-connection chores that recur (a heartbeat, a keepalive ping) cost a timer each when every
connection schedules its own: with 10,000 connections that is hundreds of timer handles made
and dropped every second, heap churn in the event loop, and young objects for the garbage
collector. A wheel cuts the period into slots (one per ``tick``, at most :data:`MAX_SLOTS`);
each member joins a random slot, so members added together (a restart, a load test) are not
all visited in the same instant; one timer visits the slot that falls due. A tick visits few
members: each tick is one callback on the event loop, and everything else waits behind it.
The timer runs only while the wheel has members.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

#: Seconds between ticks, each visiting one slot.
TICK = 0.05
#: Upper bound on slots per period (ticks per period).
MAX_SLOTS = 2000

M = TypeVar("M", bound=Hashable)


class Wheel(Generic[M]):
    """Calls ``visit(members)`` for each slot in turn; every member once per ``period``."""

    def __init__(self, period: float, visit: Callable[[list[M]], None], *, tick: float = TICK,
                 rng: random.Random | None = None) -> None:
        if period <= 0:
            raise ValueError("wheel period must be > 0")
        self.period = period
        count = max(1, min(MAX_SLOTS, round(period / tick)))
        self._tick = period / count
        self._visit = visit
        self._slots: list[set[M]] = [set() for _ in range(count)]
        self._slot_of: dict[M, int] = {}
        self._next = 0
        self._timer: asyncio.TimerHandle | None = None
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, member: M) -> None:
        """Visit ``member`` within one period, then once per period. Idempotent."""
        if member in self._slot_of:
            return
        slot = self._rng.randrange(len(self._slots))
        self._slots[slot].add(member)
        self._slot_of[member] = slot
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._turn)

    def discard(self, member: M) -> None:
        slot = self._slot_of.pop(member, None)
        if slot is not None:
            self._slots[slot].discard(member)
        if not self._slot_of and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _turn(self) -> None:
        members = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        self._timer = asyncio.get_running_loop().call_later(self._tick, self._turn)
        if members:
            self._visit(list(members))  # a visit may discard members
