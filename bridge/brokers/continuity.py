"""Gapless delivery across a lost subscription: catch up from history, or report a gap.

A Redis broker delivers live messages over a pub/sub connection. When that connection is lost
(Redis restarted, the connection killed, a liveness probe failed), everything published until
the channel is subscribed again never arrives on it. :class:`Continuity` sits between a broker's
pub/sub reader and its handler and closes that hole, channel by channel:

- it keeps each subscribed channel's **position**: the ``(epoch, offset)`` of the last message
  it delivered, or, before the first one, the channel's position read just before its
  SUBSCRIBE was sent (:meth:`anchor`), so every later message is delivered live or caught up;
- when the connection is lost its channels are **suspended** (:meth:`suspend`): live messages
  that arrive for them on the next connection are held, in order, in a bounded buffer;
- once a channel's SUBSCRIBE is confirmed again (:meth:`confirmed`), a worker reads its history
  after the position and delivers it, then the held messages newer than the last one read, in
  one step without yielding, and the channel is live again;
- when history cannot cover the hole, the gap callback is called once for the channel:
  ``epoch_changed`` (Redis lost the channel's history: what the new epoch holds is then
  delivered from its start), ``trimmed`` (the missed entries were trimmed), or ``unavailable``
  (Redis failed for longer than ``retry_for``); then live delivery goes on.

A held buffer that would outgrow ``hold_bytes`` (all channels together) is emptied instead and
the history read again: those messages are in history. The caller delivers live messages through
:meth:`live` on the reader task; handlers run on the event loop and must not block.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from bridge.brokers.base import (
    BrokerError,
    GapHandler,
    MessageHandler,
    Replay,
    ReplayStatus,
    offset_key,
)
from bridge.common.backoff import backoff
from bridge.common.logs import Every
from bridge.common.redact import redact
from bridge.events.event import frame_epoch

log = logging.getLogger("bridge.brokers.continuity")

#: ``read(channel) -> (epoch, offset)``: the channel's current epoch and newest offset.
PositionReader = Callable[[str], Awaitable[tuple[str, str]]]


class ReplayReader(Protocol):
    def __call__(self, channel: str, *, epoch: str, after: str, limit: int) -> Awaitable[Replay]:
        ...


class _Held:
    """Live messages of one suspended channel, in arrival order. One object per suspension:
    a catch-up that finds another object in place knows it was overtaken."""

    __slots__ = ("frames", "size", "overflowed", "queued")

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.size = 0
        self.overflowed = False
        self.queued = False


class Continuity:
    """Per-channel positions, suspended channels and the catch-up workers of one broker."""

    def __init__(self, deliver: MessageHandler, gap: GapHandler, read: PositionReader,
                 replay: ReplayReader, *, page: int = 500, hold_bytes: int = 32 << 20,
                 retry_for: float = 30.0, read_timeout: float = 10.0, workers: int = 4) -> None:
        self._deliver = deliver
        self._gap = gap
        self._read = read
        self._replay = replay
        self._page = page
        self._hold_limit = hold_bytes
        self._retry_for = retry_for
        self._read_timeout = read_timeout
        self._workers_wanted = workers
        #: channel -> (offset, frame of the last delivered message or the anchored epoch,
        #: the offset's sort key)
        self._pos: dict[str, tuple[str, bytes | str, tuple[int, int]]] = {}
        self._held: dict[str, _Held] = {}
        self._held_bytes = 0
        self._queue: dict[str, None] = {}  # suspended channels confirmed again, oldest first
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._gap_log = Every(5.0)
        #: Plain numbers for /readyz and metrics.
        self.counts = {"catch_ups": 0, "caught_up_events": 0, "gaps": 0, "hold_overflows": 0,
                       "repeats_dropped": 0}

    # -- the reader's side (no awaiting) -------------------------------------------------------

    def live(self, channel: str, offset: str, frame: bytes) -> None:
        """A live message: delivered now, or held while its channel is suspended."""
        held = self._held.get(channel)
        if held is None:
            self._emit(channel, offset, frame)
            return
        size = len(frame)
        if self._held_bytes + size > self._hold_limit:
            # History has them: empty this buffer and let the catch-up read further.
            self._held_bytes -= held.size
            held.frames.clear()
            held.size = 0
            held.overflowed = True
            self.counts["hold_overflows"] += 1
            return
        held.frames.append((offset, frame))
        held.size += size
        self._held_bytes += size

    def suspend(self, channels: Iterable[str]) -> None:
        """Their subscription is lost: hold their live messages until caught up."""
        for channel in channels:
            old = self._held.get(channel)
            if old is not None:
                self._held_bytes -= old.size
            self._held[channel] = _Held()  # a running catch-up sees it was overtaken
            self._queue.pop(channel, None)

    def confirmed(self, channel: str) -> None:
        """Redis confirmed ``channel``'s SUBSCRIBE: catch it up if it was suspended."""
        held = self._held.get(channel)
        if held is None or held.queued or self._closed:
            return
        held.queued = True
        self._queue[channel] = None
        self._wake.set()
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"catch-up {i}")
                             for i in range(self._workers_wanted)]

    def forget(self, channel: str) -> None:
        """``channel`` is no longer subscribed."""
        self._pos.pop(channel, None)
        self._queue.pop(channel, None)
        held = self._held.pop(channel, None)
        if held is not None:
            self._held_bytes -= held.size

    def known(self, channel: str) -> bool:
        return channel in self._pos

    @property
    def suspended(self) -> int:
        return len(self._held)

    # -- positions ---------------------------------------------------------------------------

    async def anchor(self, channel: str) -> None:
        """Read ``channel``'s position, before its SUBSCRIBE is sent. Raises BrokerError."""
        epoch, offset = await self._read(channel)
        self._pos.setdefault(channel, (offset, epoch, offset_key(offset)))

    def _epoch(self, channel: str) -> str | None:
        pos = self._pos.get(channel)
        if pos is None:
            return None
        mark = pos[1]
        return mark if isinstance(mark, str) else frame_epoch(mark)

    # -- catching up ---------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            channel = next(iter(self._queue))
            del self._queue[channel]
            try:
                await self._catch_up(channel)
            except Exception as exc:  # a worker must outlive any failure
                log.error("catch-up of %s failed: %s", channel, redact(repr(exc)))
                self._go_live(channel, self._held.get(channel), None, None)

    async def _catch_up(self, channel: str) -> None:
        held = self._held.get(channel)
        if held is None:
            return
        epoch, pos = self._epoch(channel), self._pos.get(channel)
        if epoch is None or pos is None:
            self._go_live(channel, held, None, None)  # never anchored: nobody to catch up
            return
        self.counts["catch_ups"] += 1
        after, gapped = pos[0], False
        loop = asyncio.get_running_loop()
        deadline, delays = loop.time() + self._retry_for, backoff(initial=0.2, maximum=2.0)
        while True:
            held.overflowed = False
            try:
                async with asyncio.timeout(self._read_timeout):
                    replay = await self._replay(channel, epoch=epoch, after=after,
                                                limit=self._page)
            except (BrokerError, TimeoutError) as exc:
                if self._held.get(channel) is not held:
                    return
                if loop.time() < deadline:
                    await asyncio.sleep(next(delays))
                    continue
                log.warning("catch-up of %s gave up: %s", channel,
                            redact(str(exc) or "history read timed out"))
                self._report(channel, "unavailable", epoch, gapped)
                self._go_live(channel, held, None, None)
                return
            if self._held.get(channel) is not held:
                return  # unsubscribed, or suspended again: another catch-up follows
            if replay.status is ReplayStatus.EPOCH_CHANGED:
                self._report(channel, "epoch_changed", replay.epoch, gapped)
                gapped, epoch, after = True, replay.epoch, "0-0"
                continue
            if replay.status is not ReplayStatus.OK:
                self._report(channel, replay.status.value, replay.epoch, gapped)
                self._go_live(channel, held, None, None)
                return
            for offset, frame in replay.items:
                if self._emit(channel, offset, frame):
                    self.counts["caught_up_events"] += 1
                after = offset
            if replay.complete and not held.overflowed:
                self._go_live(channel, held, epoch, after)
                return

    def _report(self, channel: str, reason: str, epoch: str, already: bool) -> None:
        if not already:
            self.counts["gaps"] += 1
            # After Redis lost its data every channel reports it: one line, not thousands.
            if self._gap_log.due():
                log.warning("lost subscriptions: history could not give back what %s missed "
                            "(%s); %d channel(s) so far", channel, reason, self.counts["gaps"])
            self._gap(channel, reason, epoch)

    def _go_live(self, channel: str, held: _Held | None, epoch: str | None,
                 after: str | None) -> None:
        """Deliver the held messages newer than ``(epoch, after)`` (all of them when None),
        then deliver live: one step, nothing can slip in between."""
        if held is None or self._held.get(channel) is not held:
            return
        del self._held[channel]
        self._held_bytes -= held.size
        floor = offset_key(after) if after is not None else None
        for offset, frame in held.frames:
            if floor is not None and frame_epoch(frame) == epoch and offset_key(offset) <= floor:
                continue  # history gave it already
            self._emit(channel, offset, frame)

    def _emit(self, channel: str, offset: str, frame: bytes) -> bool:
        """Deliver a message unless it is at or below the channel's position in the same epoch:
        within a subscription, offsets only grow, so that is a copy already delivered (however
        it came twice: live and from history, or twice from the connection)."""
        key = offset_key(offset)
        pos = self._pos.get(channel)
        if pos is not None and key <= pos[2]:
            mark = pos[1]
            if (mark if isinstance(mark, str) else frame_epoch(mark)) == frame_epoch(frame):
                self.counts["repeats_dropped"] += 1
                return False
        self._pos[channel] = (offset, frame, key)
        self._deliver(channel, offset, frame)
        return True
