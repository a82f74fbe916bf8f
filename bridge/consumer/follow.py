"""Follow channels straight from Redis, from a saved position, with the guarantees of ``/ws``.

A :class:`Consumer` reads each channel's history stream (docs/brokers.md): every event of a
channel once, in offset order, or a :class:`~bridge.consumer.items.Gap` where history cannot
give back what was missed. Whether history covers a position is decided by the broker's own
replay script (:data:`bridge.brokers.redis.wire.REPLAY_SCRIPT`): ``epoch_changed`` when the
channel's history was lost (the new epoch's events follow from its first), ``trimmed`` when
events after the position were trimmed (the oldest events history still holds follow).

Reading: ``XREAD BLOCK`` on the channels' streams is only the wake-up; what a channel missed is
then read with the replay script from its position, so every read checks the epoch. A wait that
times out re-checks every channel, so a history lost while the consumer waited is noticed within
``block`` seconds. On ``redis://`` one connection waits on every channel; on
``redis-cluster://`` a multi-key command may not span slots, so one connection waits per
channel (each channel is its own slot). Connection failures are retried with
:func:`bridge.common.backoff.backoff`; the positions do not move meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from bridge.brokers.base import ReplayStatus
from bridge.brokers.redis import wire
from bridge.common.backoff import backoff
from bridge.consumer.items import Envelope, Gap, Position
from bridge.consumer.position import PositionStore
from bridge.events.channels import granted, is_valid_channel, is_valid_pattern
from bridge.redisconn.clients import IO_ERRORS
from bridge.redisconn.url import parse_cluster_url

log = logging.getLogger("bridge.consumer.follow")
#: The longest wait between two attempts to reach Redis again.
RECONNECT_MAX = 5.0
Start = Literal["latest", "earliest"] | Mapping[str, Position]
Item = Envelope | Gap


@dataclass
class _Cursor:
    """A channel's read position (None until established) and how to establish it."""

    position: Position | None
    how: Literal["latest", "earliest"] = "latest"


class Consumer:
    """Follow ``channels`` and every channel matching ``tenant_patterns`` (``calls:acme:*``).

    ``async for item in consumer`` yields :class:`Envelope` and :class:`Gap` items, in offset
    order per channel (channels interleave). Where a channel starts: its position in ``store``
    if it has one (resumed: nothing after it is missed, nothing up to it is yielded again);
    else ``start``: ``"latest"`` (events published from now on), ``"earliest"`` (the oldest
    event history holds) or a mapping of positions (channels absent from it: ``"latest"``).
    Channels that match a pattern later (a new extension, found by a SCAN every ``rescan``
    seconds) start at their earliest event.

    ``commit(envelope)`` saves one channel's position, ``commit()`` the position of every item
    yielded so far; with ``commit_every=N`` the consumer commits by itself every N items, when
    the next one is asked for (the previous ones count as handled), and on :meth:`close`.
    ``close()`` stops the reads (at most ``timeout`` seconds) and closes the store.
    """

    def __init__(self, url: str, channels: Iterable[str] = (), *, prefix: str = "callbridge:",
                 store: PositionStore | None = None, start: Start = "latest",
                 tenant_patterns: Iterable[str] = (), commit_every: int | None = None,
                 block: float = 5.0, rescan: float = 10.0, timeout: float = 5.0,
                 page: int = 200, buffer: int = 1000) -> None:
        self.channels = list(channels)
        self.patterns = list(tenant_patterns)
        bad = [c for c in self.channels if not is_valid_channel(c)]
        bad += [p for p in self.patterns if not is_valid_pattern(p)]
        if bad or not (self.channels or self.patterns):
            raise ValueError(f"invalid or no channels: {bad}")
        if commit_every is not None and commit_every < 1:
            raise ValueError("commit_every must be at least 1")
        self.prefix, self.store, self._start = prefix, store, start
        self._commit_every, self._block, self._rescan = commit_every, block, rescan
        self._timeout, self._page = timeout, page
        self._cluster = url.startswith("redis-cluster://")
        self._client = _client(url, socket_timeout=block + timeout, connect_timeout=timeout)
        self._replay = self._client.register_script(wire.REPLAY_SCRIPT)
        self._history = self._client.register_script(wire.HISTORY_SCRIPT)
        self._position = self._client.register_script(wire.POSITION_SCRIPT)
        self._queue: asyncio.Queue[Item | BaseException] = asyncio.Queue(buffer)
        self._groups: dict[int, dict[str, _Cursor]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._yielded: dict[str, Position] = {}
        self._unsaved: dict[str, Position] = {}
        self._since_commit = 0
        self._started = self._closed = False

    # -- the caller's side ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the saved positions, find the channels and start reading (the first
        ``__anext__`` does it when not called)."""
        if self._started:
            return
        self._started = True
        saved = await self.store.load() if self.store is not None else {}
        found = await self._scan() if self.patterns else []
        given = self._start if isinstance(self._start, Mapping) else {}
        how: Literal["latest", "earliest"] = "earliest" if self._start == "earliest" else "latest"
        for channel in dict.fromkeys(self.channels + found):
            position = saved.get(channel) or given.get(channel)
            if position is None and how == "latest":  # "latest" is when start() returns
                position = await self._newest(channel)
                self._yielded[channel] = position
            self._add(channel, position, how)
        if self.patterns:
            self._tasks[-1] = asyncio.create_task(self._discover(saved))

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Item:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        if self._commit_every is not None and self._since_commit >= self._commit_every:
            await self.commit()
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Envelope):
            self._yielded[item.channel] = item.position
        elif item.reason == ReplayStatus.EPOCH_CHANGED:
            self._yielded[item.channel] = Position(item.epoch, "0-0")
        self._since_commit += 1
        return item

    async def commit(self, item: Envelope | Mapping[str, Position] | None = None) -> None:
        """Save positions through the store: an envelope's, given ones, or (None) those of
        every item yielded so far. Without a store, nothing is saved."""
        if isinstance(item, Envelope):
            self._unsaved[item.channel] = item.position
        elif item is not None:
            self._unsaved.update(item)
        else:
            self._unsaved.update(self._yielded)
            self._since_commit = 0
        if self.store is not None and self._unsaved:
            await self.store.save(self._unsaved)
        self._unsaved = {}

    @property
    def positions(self) -> dict[str, Position]:
        """The position of the last item yielded on each channel."""
        return dict(self._yielded)

    async def close(self) -> None:
        """Stop reading; auto-commit what was yielded; close the connections and the store."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks.values())
        # Cancel again until they end: Python 3.11's wait_for(), used inside the client
        # library, swallows a cancellation that races with a blocked read's completion.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while any(not task.done() for task in tasks) and loop.time() < deadline:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.05)
        while not self._queue.empty():  # wake a reader waiting in __anext__: the end
            self._queue.get_nowait()
        self._queue.put_nowait(StopAsyncIteration())
        try:
            if self._commit_every is not None:
                await self.commit()
        finally:
            if self.store is not None:
                await self.store.close()
            await self._client.aclose()

    # -- reading -------------------------------------------------------------------------------

    def _add(self, channel: str, position: Position | None, how: Literal["latest", "earliest"],
             ) -> None:
        key = key_slot(wire.stream_key(self.prefix, channel).encode()) if self._cluster else 0
        group = self._groups.setdefault(key, {})
        group[channel] = _Cursor(position, how)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._follow(group))

    async def _scan(self) -> list[str]:
        glob = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix)
        found = set()
        for pattern in self.patterns:
            match = f"{glob}{{{pattern}}}:stream"
            async for key in self._client.scan_iter(match=match, count=1000, _type="stream"):
                channel = key.decode()[len(self.prefix) + 1:-len("}:stream")]
                if is_valid_channel(channel) and granted(channel, [pattern]):
                    found.add(channel)
        return sorted(found)

    async def _discover(self, saved: Mapping[str, Position]) -> None:
        delays = backoff(0.25, 2.0, RECONNECT_MAX)
        while True:
            try:
                await asyncio.sleep(self._rescan)
                for channel in await self._scan():
                    if not any(channel in group for group in self._groups.values()):
                        self._add(channel, saved.get(channel), "earliest")
                delays = backoff(0.25, 2.0, RECONNECT_MAX)
            except IO_ERRORS as exc:
                log.warning("channel scan failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(next(delays))
            except Exception as exc:  # not retryable: the caller gets it
                await self._queue.put(exc)
                return

    async def _follow(self, group: dict[str, _Cursor]) -> None:
        """Read one group's channels until cancelled: catch up, wait for news, repeat."""
        delays = backoff(0.25, 2.0, RECONNECT_MAX)
        check: set[str] | None = None  # None: every channel of the group
        while True:
            try:
                for channel in list(group) if check is None else check:
                    await self._catch_up(channel, group[channel])
                check = await self._wait(group)
                delays = backoff(0.25, 2.0, RECONNECT_MAX)
            except IO_ERRORS as exc:
                if self._closed:  # close() cut the connection under the read: the end
                    return
                log.warning("reading from Redis failed (%s); retrying", type(exc).__name__)
                check = None
                await asyncio.sleep(next(delays))
            except Exception as exc:  # not retryable: the caller gets it
                await self._queue.put(exc)
                return

    async def _wait(self, group: dict[str, _Cursor]) -> set[str] | None:
        """The channels with entries after their position, at most ``block`` seconds from now;
        None when the wait timed out (or some channel has no position yet)."""
        streams = {wire.stream_key(self.prefix, c): cur.position.offset
                   for c, cur in group.items() if cur.position is not None}
        if len(streams) < len(group):
            return None
        reply = await self._client.xread(streams, count=1, block=max(1, int(self._block * 1000)))
        if not reply:
            return None
        names = reply.keys() if isinstance(reply, dict) else [entry[0] for entry in reply]
        return {name.decode()[len(self.prefix) + 1:-len("}:stream")] for name in names}

    async def _catch_up(self, channel: str, cursor: _Cursor) -> None:
        """Queue what ``channel`` has after its cursor, or a gap, and move the cursor."""
        keys = wire.channel_keys(self.prefix, channel)
        position = cursor.position
        if position is None:
            position, queued = await self._establish(channel, cursor.how, keys)
            if not queued:  # nothing of it queued: a commit may save where it starts
                self._yielded.setdefault(channel, position)
        while True:
            cursor.position = position
            args = wire.replay_args(position.epoch, position.offset, self._page, None)
            replay = wire.parse_replay(channel, await self._replay(keys=keys, args=args),
                                       self._page)
            if replay.status is ReplayStatus.OK:
                for offset, frame in replay.items:
                    await self._queue.put(Envelope(channel, replay.epoch, offset, frame))
                    position = cursor.position = Position(replay.epoch, offset)
                if replay.complete:
                    return
                continue
            await self._queue.put(Gap(channel, replay.status.value, replay.epoch))
            if replay.status is ReplayStatus.EPOCH_CHANGED:
                position = Position(replay.epoch, "0-0")
            else:  # trimmed: go on from the oldest event history still holds
                position, _ = await self._establish(channel, "earliest", keys)

    async def _establish(self, channel: str, how: Literal["latest", "earliest"],
                         keys: list[str]) -> tuple[Position, bool]:
        """Where a channel starts: its newest position ("latest"), or after the first page of
        its history, queued ("earliest"); and whether events were queued."""
        position = await self._newest(channel)
        if how == "earliest":
            reply = await self._history(keys=keys, args=wire.history_args(None, self._page))
            if reply[1]:
                epoch, offset = reply[0].decode(), position.offset
                for offset, frame in wire.entries_to_items(channel, epoch, reply[1]):
                    await self._queue.put(Envelope(channel, epoch, offset, frame))
                return Position(epoch, offset), True
        return position, False

    async def _newest(self, channel: str) -> Position:
        """The channel's epoch (created when missing) and newest offset."""
        reply = await self._position(keys=wire.channel_keys(self.prefix, channel),
                                     args=[wire.new_epoch()])
        return Position(*wire.parse_position(reply))


def _client(url: str, *, socket_timeout: float, connect_timeout: float) -> Any:
    """A client whose connections outlive a blocked ``XREAD`` (``socket_timeout``)."""
    if not url.startswith("redis-cluster://"):
        return aioredis.Redis.from_url(url, socket_timeout=socket_timeout,
                                       socket_connect_timeout=connect_timeout)
    nodes, username, password = parse_cluster_url(url)
    # One blocked connection per followed channel: the per-node cap is only a safety net.
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], username=username,
                        password=password, max_connections=4096, socket_timeout=socket_timeout,
                        socket_connect_timeout=connect_timeout)
