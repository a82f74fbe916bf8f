"""``memory://``: the embedded broker. One process, no persistence, bounded history rings.

Each channel's epoch is created with its ring, so a restarted process starts new epochs and
clients resuming across the restart are told their gap cannot be filled.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import Sequence

from bridge.brokers.base import Broker, Replay, ReplayStatus, Snapshot, offset_key
from bridge.calls.change import Change, Record, apply
from bridge.common.recent import RecentWindow
from bridge.events.event import envelope


class _Channel:
    __slots__ = ("epoch", "ring", "last", "dropped", "records", "tombstones")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(6)
        #: Created by the first publish: a subscribed channel nobody publishes to costs no ring.
        self.ring: deque[tuple[str, bytes]] | tuple[()] = ()
        self.last = (0, -1)
        #: The newest offset evicted from the ring: entries up to it are gone.
        self.dropped = (0, -1)
        #: Live state (:mod:`bridge.calls.change`).
        self.records: dict[str, Record] = {}
        self.tombstones: dict[str, float] = {}


class MemoryBroker(Broker):
    display_url = "memory://"

    def __init__(self, history_length: int = 1000, dedup_window: float = 600.0,
                 dedup_size: int = 100_000) -> None:
        super().__init__()
        self._history_length = history_length
        self._channels: dict[str, _Channel] = {}
        self._subscribed: set[str] = set()
        self._seen = RecentWindow(dedup_window, size=dedup_size)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribed.clear()

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
        return channel

    async def publish(
        self, channels: Sequence[str], event_json: bytes, *, event_id: str | None = None,
        change: Change | None = None,
    ) -> list[str] | None:
        if event_id is not None and not self._seen.add(event_id):
            return None
        now = time.time()
        ms = int(now * 1000)
        offsets = []
        for name in channels:
            channel = self._channel(name)
            last_ms, last_seq = channel.last
            channel.last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
            offset = f"{channel.last[0]}-{channel.last[1]}"
            if change is not None:
                apply(channel.records, channel.tombstones, change, now)
            frame = envelope(name, channel.epoch, offset, event_json)
            if self._history_length:
                ring = channel.ring
                if not isinstance(ring, deque):
                    ring = channel.ring = deque(maxlen=self._history_length)
                if len(ring) == ring.maxlen:
                    channel.dropped = offset_key(ring[0][0])
                ring.append((offset, frame))
            else:
                channel.dropped = channel.last
            if name in self._subscribed:
                self._deliver(name, offset, frame)
            offsets.append(offset)
        return offsets

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def epoch(self, channel: str) -> str:
        return self._channel(channel).epoch

    async def position(self, channel: str) -> tuple[str, str]:
        state = self._channel(channel)
        ms, seq = state.last
        return state.epoch, f"{ms}-{seq}" if seq >= 0 else "0-0"

    async def snapshot(self, channel: str) -> Snapshot:
        state = self._channel(channel)
        epoch, offset = await self.position(channel)
        return Snapshot(epoch, offset, {k: dict(r) for k, r in state.records.items()})

    async def history(
        self, channel: str, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        ring = self._channels[channel].ring if channel in self._channels else ()
        if after is None:
            return list(ring)[:limit]
        key = offset_key(after)
        return [item for item in ring if offset_key(item[0]) > key][:limit]

    async def replay(
        self, channel: str, *, epoch: str, after: str, limit: int, max_age: float | None = None
    ) -> Replay:
        state = self._channel(channel)
        if epoch != state.epoch:
            return Replay(ReplayStatus.EPOCH_CHANGED, state.epoch)
        key = offset_key(after)
        if max_age is not None and key != (0, 0) and key[0] < (time.time() - max_age) * 1000:
            return Replay(ReplayStatus.TOO_OLD, state.epoch)
        if key < state.dropped:
            return Replay(ReplayStatus.TRIMMED, state.epoch)
        newer = [item for item in state.ring if offset_key(item[0]) > key]
        return Replay(ReplayStatus.OK, state.epoch, newer[:limit], len(newer) <= limit)

    async def ping(self) -> None:
        return None
