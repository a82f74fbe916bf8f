"""Server heartbeats for every open connection, driven by one timer instead of a task each.

The heartbeat interval is cut into slots (about one per second, at most :data:`MAX_SLOTS`).
Each connection joins a random slot, so connections opened together (a restart, a load test)
do not all beat in the same instant; every tick encodes one heartbeat frame and queues it on
the links of the slot that falls due. A connection's first beat comes within one interval.
The timer runs only while some connection is registered.
"""

from __future__ import annotations

import asyncio
import random
import time

from bridge.downstream import protocol as p
from bridge.downstream.link import ClientLink, text_frame

#: Upper bound on slots per interval (ticks per interval).
MAX_SLOTS = 100


class Heartbeats:
    def __init__(self, interval: float, *, rng: random.Random | None = None) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be > 0")
        self.interval = interval
        count = max(1, min(MAX_SLOTS, round(interval)))
        self._tick = interval / count
        self._slots: list[set[ClientLink]] = [set() for _ in range(count)]
        self._slot_of: dict[ClientLink, int] = {}
        self._next = 0
        self._timer: asyncio.TimerHandle | None = None
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, link: ClientLink) -> None:
        if link in self._slot_of:
            return
        slot = self._rng.randrange(len(self._slots))
        self._slots[slot].add(link)
        self._slot_of[link] = slot
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._beat)

    def discard(self, link: ClientLink) -> None:
        slot = self._slot_of.pop(link, None)
        if slot is not None:
            self._slots[slot].discard(link)
        if not self._slot_of and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _beat(self) -> None:
        links = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if links:
            frame = p.encode_heartbeat(time.time())
            size = len(frame)  # ASCII
            wire = text_frame(frame.encode())
            for link in links:  # put() may close a slow link; it never leaves the set here
                link.put(frame, size, wire)
        self._timer = asyncio.get_running_loop().call_later(self._tick, self._beat)
