"""Server heartbeats for every open connection, driven by one timer instead of a task each.

A :class:`~bridge.common.wheel.Wheel` of the connections' links: each link beats once per
interval, in its own slot, so connections opened together do not all beat in the same
instant; every tick encodes one heartbeat frame for the links of the slot that falls due. A
connection's first beat comes within one interval.
"""

from __future__ import annotations

import random
import time

from bridge.common.wheel import TICK, Wheel
from bridge.downstream import protocol as p
from bridge.downstream.link import ClientLink, text_frame


class Heartbeats(Wheel[ClientLink]):
    def __init__(self, interval: float, *, tick: float = TICK,
                 rng: random.Random | None = None) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be > 0")
        super().__init__(interval, self._beat, tick=tick, rng=rng)
        self.interval = interval

    @staticmethod
    def _beat(links: list[ClientLink]) -> None:
        frame = p.encode_heartbeat(time.time())
        size = len(frame)  # ASCII
        wire = text_frame(frame.encode())
        for link in links:
            link.put(frame, size, wire)
