"""``memory://``: the embedded broker. One process, no persistence, bounded history rings."""

from __future__ import annotations

import time
from collections import deque
from typing import Sequence

from bridge.brokers.base import Broker, offset_key
from bridge.events import envelope


class MemoryBroker(Broker):
    display_url = "memory://"

    def __init__(self, history_length: int = 1000) -> None:
        super().__init__()
        self._history_length = history_length
        self._history: dict[str, deque[tuple[str, bytes]]] = {}
        self._last: dict[str, tuple[int, int]] = {}
        self._subscribed: set[str] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribed.clear()

    def _next_offset(self, channel: str) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last.get(channel, (0, -1))
        nxt = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self._last[channel] = nxt
        return f"{nxt[0]}-{nxt[1]}"

    async def publish(self, channels: Sequence[str], event_json: bytes) -> list[str]:
        offsets = []
        for channel in channels:
            offset = self._next_offset(channel)
            frame = envelope(channel, offset, event_json)
            ring = self._history.get(channel)
            if ring is None:
                ring = self._history[channel] = deque(maxlen=self._history_length)
            ring.append((offset, frame))
            if channel in self._subscribed:
                self._deliver(channel, offset, frame)
            offsets.append(offset)
        return offsets

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def history(
        self, channel: str, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        ring = self._history.get(channel, ())
        if after is None:
            return list(ring)[:limit]
        key = offset_key(after)
        return [item for item in ring if offset_key(item[0]) > key][:limit]

    async def ping(self) -> None:
        return None
