"""Worker pools: share a channel's events between the consumers of a Redis consumer group.

Every event is handled at least once by one consumer of the group; an entry not acked within
``claim_after`` seconds goes to another live consumer (or back to the same one); an entry
delivered ``max_deliveries`` times without an ack is moved to the group's dead letters.
Names and the rule are in :mod:`bridge.consumer.groupwire`; docs/consumers.md explains them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from redis.exceptions import ResponseError

from bridge.brokers.base import BrokerError
from bridge.brokers.redis.wire import (
    display_url,
    entries_to_items,
    epoch_key,
    new_epoch,
    stream_key,
)
from bridge.common import redact
from bridge.common.aio import first_of
from bridge.common.backoff import backoff
from bridge.consumer import groupwire
from bridge.consumer.groupwire import DeadLetter
from bridge.consumer.items import Envelope
from bridge.events.channels import is_valid_channel
from bridge.events.event import envelope
from bridge.redisconn.clients import IO_ERRORS, command_client
from bridge.redisconn.url import parse_cluster_url

log = logging.getLogger(__name__)

#: While idle on a Redis Cluster, how often a consumer of several channels reads them again
#: (a blocking read waits on one slot only).
CLUSTER_POLL = 0.1
#: The longest wait between two attempts to reach Redis again.
RETRY_MAX = 10.0

OnDead = Callable[[DeadLetter], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry handed to this consumer: ack it with :meth:`GroupConsumer.ack` once handled.
    ``deliveries``: Redis's delivery count, 1 on the first delivery, 2 on the first redelivery
    (to this or another consumer), and so on."""

    envelope: Envelope
    channel: str
    offset: str
    deliveries: int


class GroupConsumer:
    """One consumer ``consumer`` of group ``group`` on ``channels``.

    ``async with GroupConsumer(...) as g: async for delivery in g: ...; await g.ack(delivery)``.
    Entering creates the group on each channel's stream when missing (``start="new"``: from the
    events published after that, ``"all"``: from the oldest kept; a group that exists keeps its
    place). Iterating first gives this consumer's own entries left pending by an earlier run
    under the same name, then new entries, ``batch`` at most per read, waiting ``block``
    seconds at most per read. Between reads, every ``claim_after / 2`` seconds (10 s at most),
    entries of any consumer idle longer than ``claim_after`` are claimed, ``batch`` at most per
    channel and round. Entries delivered ``max_deliveries`` times, and entries whose stream data
    was trimmed while pending, are acked and moved to the dead letters
    (:func:`groupwire.dead_key`), then reported to ``on_dead`` (a function or coroutine
    function) and logged at WARNING. Redis failures are retried with backoff for as long as the
    consumer runs; :meth:`close` ends the iteration at once.
    """

    def __init__(
        self, url: str, channels: Iterable[str], *, group: str, consumer: str,
        prefix: str = "callbridge:", claim_after: float = 30.0, max_deliveries: int = 5,
        start: Literal["new", "all"] = "new", batch: int = 100, block: float = 1.0,
        on_dead: OnDead | None = None,
    ) -> None:
        self.channels = list(dict.fromkeys(channels))
        if not self.channels or not all(is_valid_channel(c) for c in self.channels):
            raise ValueError(f"invalid channels {self.channels!r}")
        if start not in ("new", "all") or not group or not consumer:
            raise ValueError("group and consumer must be set, start 'new' or 'all'")
        if claim_after <= 0 or max_deliveries < 1 or batch < 1 or block <= 0:
            raise ValueError("claim_after and block must be > 0, max_deliveries and batch >= 1")
        self._cluster = url.startswith("redis-cluster://")
        if self._cluster:
            nodes, _, password = parse_cluster_url(url)
            shown = "redis-cluster://" + ",".join(f"{h}:{p}" for h, p in nodes)
        else:
            password, shown = urlsplit(url).password, display_url(url)
            password = unquote(password) if password else None
        redact.register(password)
        self.group, self.consumer, self.display_url = group, consumer, shown
        self._prefix, self._start, self._on_dead = prefix, start, on_dead
        self._name = groupwire.group_name(prefix, group)
        self._claim_ms = max(1, round(claim_after * 1000))
        self._claim_every = min(claim_after / 2, 10.0)
        self._max, self._batch, self._block = max_deliveries, batch, block
        self._client = command_client(url, timeout=block + 5.0)
        self._claim = self._client.register_script(groupwire.CLAIM_SCRIPT)
        self._own = self._client.register_script(groupwire.OWN_SCRIPT)
        self._channel_of = {stream_key(prefix, c): c for c in self.channels}
        self._buffer: deque[Delivery] = deque()
        self._epochs: dict[str, str] = {}
        self._ready = False
        self._created = False
        self._own_after = {c: "0" for c in self.channels}
        self._claim_cursor = {c: "0-0" for c in self.channels}
        self._next_claim = 0.0
        self._closed = asyncio.Event()
        self._delays: Iterator[float] = backoff(0.25, 2.0, RETRY_MAX)

    def __repr__(self) -> str:
        return (f"GroupConsumer({self.display_url!r}, group={self.group!r}, "
                f"consumer={self.consumer!r})")

    async def __aenter__(self) -> GroupConsumer:
        """Create the groups now when Redis answers (so that events published from then on
        are the group's with ``start="new"``); when it does not, iterating retries."""
        try:
            await self._prepare()
        except IO_ERRORS as exc:
            log.warning("group %s: redis at %s: %s; creating the group later", self.group,
                        self.display_url, redact.redact(str(exc)) or type(exc).__name__)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> GroupConsumer:
        return self

    async def __anext__(self) -> Delivery:
        while not self._buffer or self._closed.is_set():
            if self._closed.is_set():
                raise StopAsyncIteration  # what the buffer held stays pending for the group
            try:
                await self._round()
            except IO_ERRORS as exc:
                if _no_group(exc):  # the stream was lost with its group: create it again
                    self._ready = False
                delay = next(self._delays)
                log.warning("group %s: redis at %s: %s; retrying in %.1fs", self.group,
                            self.display_url, redact.redact(str(exc)) or type(exc).__name__,
                            delay)
                await first_of(delay, self._closed.wait())
            else:
                self._delays = backoff(0.25, 2.0, RETRY_MAX)
        return self._buffer.popleft()

    async def ack(self, delivery: Delivery) -> None:
        """Record ``delivery`` as handled: the group never gives it again. Raises
        :class:`BrokerError` when Redis cannot be reached; the entry is then delivered again
        after ``claim_after`` (at-least-once)."""
        try:
            await self._client.xack(stream_key(self._prefix, delivery.channel), self._name,
                                    delivery.offset)
        except IO_ERRORS as exc:
            reason = redact.redact(str(exc)) or type(exc).__name__
            raise BrokerError(f"redis at {self.display_url}: ack failed: {reason}") from None

    async def close(self) -> None:
        """End the iteration (a read in progress is abandoned) and close the connections.
        Unacked deliveries stay pending: the next run under this name, or another consumer
        after ``claim_after``, gets them."""
        if self._closed.is_set():
            return
        self._closed.set()
        await self._client.aclose()

    async def _round(self) -> None:
        """One step: create the groups if needed, then claim when due, else read own pending
        entries until none is left, else read new entries."""
        if not self._ready:
            await self._prepare()
        if time.monotonic() >= self._next_claim:
            more = False
            for channel in self.channels:
                cursor = self._claim_cursor[channel]
                now = _now_ms()
                reply = await self._claim(
                    keys=self._keys(channel),
                    args=groupwire.settle_args(self._name, self.consumer, self._max, now,
                                               self._claim_ms, cursor, self._batch))
                self._claim_cursor[channel] = await self._settled(channel, now, reply)
                more = more or self._claim_cursor[channel] != "0-0"
            # An unfinished scan continues at once; a finished one waits for the next round.
            self._next_claim = time.monotonic() + (0.0 if more else self._claim_every)
            if self._buffer or more:
                return
        pending = [c for c in self.channels if self._own_after[c] != "0-0"]
        for channel in pending:
            now = _now_ms()
            reply = await self._own(
                keys=self._keys(channel),
                args=groupwire.settle_args(self._name, self.consumer, self._max, now,
                                           self._own_after[channel], self._batch))
            self._own_after[channel] = await self._settled(channel, now, reply)
        if pending:
            return
        await self._read_new()

    async def _prepare(self) -> None:
        """Create each channel's group (a group re-created after its stream was lost starts
        from the stream's first entry) and read each channel's epoch."""
        for channel in self.channels:
            start = "$" if self._start == "new" and not self._created else "0"
            try:
                await self._client.xgroup_create(stream_key(self._prefix, channel), self._name,
                                                 id=start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            epoch = epoch_key(self._prefix, channel)
            await self._client.set(epoch, new_epoch(), nx=True)
            value = await self._client.get(epoch)
            self._epochs[channel] = value.decode() if isinstance(value, bytes) else str(value)
            self._claim_cursor[channel] = "0-0"
        self._created = self._ready = True

    async def _read_new(self) -> None:
        streams = {stream_key(self._prefix, c): ">" for c in self.channels}
        if not self._cluster or len(streams) == 1:
            replies = [self._xreadgroup(streams, self._block)]
        else:  # one key per command on a cluster: read each channel, then poll while idle
            replies = [self._xreadgroup({key: ">"}, None) for key in streams]
        for reply in replies:
            for key, entries in await reply:
                channel = self._channel_of[_text(key)]
                epoch = self._epochs[channel]
                for offset, frame in entries_to_items(channel, epoch, entries):
                    self._buffer.append(Delivery(Envelope(channel, epoch, offset, frame),
                                                 channel, offset, 1))
        if not self._buffer and self._cluster and len(streams) > 1:
            await first_of(min(CLUSTER_POLL, self._block), self._closed.wait())

    async def _xreadgroup(self, streams: dict[str, str], block: float | None) -> Any:
        ms = None if block is None else max(1, round(block * 1000))
        read = self._client.xreadgroup(self._name, self.consumer, streams, count=self._batch,
                                       block=ms)
        task = asyncio.ensure_future(read)
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait([task, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not task.done():  # closed, or our caller cancelled: abandon the read
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *IO_ERRORS):
                    await task
        return task.result() if not task.cancelled() and task.result() else []

    async def _settled(self, channel: str, now: int, reply: Any) -> str:
        cursor, delivered, dead = groupwire.parse_settled(channel, self.group, now, reply)
        epoch = self._epochs[channel]
        for offset, event, count in delivered:
            frame = envelope(channel, epoch, offset, event)
            self._buffer.append(Delivery(Envelope(channel, epoch, offset, frame), channel,
                                         offset, count))
        for record in dead:
            await self._report(record)
        return cursor

    async def _report(self, record: DeadLetter) -> None:
        log.warning("group %s: entry %s of %s moved to dead letters (%s, %d deliveries, last "
                    "consumer %s)", record.group, record.offset, record.channel, record.reason,
                    record.deliveries, record.consumer)
        if self._on_dead is None:
            return
        try:
            result = self._on_dead(record)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("group %s: on_dead failed for entry %s of %s", record.group,
                          record.offset, record.channel)

    def _keys(self, channel: str) -> list[str]:
        return [stream_key(self._prefix, channel),
                groupwire.dead_key(self._prefix, channel, self.group)]


def _no_group(exc: BaseException) -> bool:
    """The group is gone: its stream was deleted (flushed, lost with a restart), while we read
    it (UNBLOCKED) or before (NOGROUP)."""
    return isinstance(exc, ResponseError) and any(s in str(exc) for s in ("NOGROUP", "UNBLOCKED"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
