"""A broker wrapper that rides out broker outages: buffer, deliver locally, publish later.

:meth:`ResilientBroker.publish` never raises for an unreachable broker. When the inner broker
fails (or earlier events are still waiting), the event goes into a bounded in-order buffer and
is delivered at once to this process's own subscribers as a **provisional** frame::

    {"type":"event","channel":C,"epoch":E,"offset":O,"provisional":true,"event":{...}}

where ``(E, O)`` is the last confirmed position this process saw on the channel (the frame of
the newest event that came back from the broker), so a client resuming from it is replayed
everything after it, the buffered events included once they are published (it may see those
twice: clients de-duplicate by event id). A channel with no confirmed position yet gets a
provisional epoch that no broker issues, so resuming from it is answered ``epoch_changed``:
an explicit gap, never a silent one.

Provisional frames go to the provisional handler (:meth:`Broker.set_provisional_handler`).
A flusher task publishes the buffer, oldest first, once the broker answers again; the copies
that come back over pub/sub go to the message handler like any other, and the receiver (the
hub) sends each only to the clients that did not get it provisionally. Events beyond
``buffer_events`` are counted, logged and delivered locally only: they never reach the broker
or its history.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bridge.brokers.base import Broker, BrokerError, Replay, Snapshot
from bridge.calls.change import Change, Record
from bridge.common.logs import Every
from bridge.common.recent import RecentIds
from bridge.events.event import frame_epoch, frame_event_id

log = logging.getLogger("bridge.brokers.resilient")

#: Inner broker states in which publishing also reaches this process's subscription.
READY_STATES = ("ok", "connected")


_PROVISIONAL = b'","provisional":true,"event":'


def provisional_frame(channel: str, epoch: str, offset: str, event_json: bytes) -> bytes:
    return b"".join((
        b'{"type":"event","channel":"', channel.encode(), b'","epoch":"', epoch.encode(),
        b'","offset":"', offset.encode(), _PROVISIONAL, event_json, b"}",
    ))


class ResilientBroker(Broker):
    def __init__(self, inner: Broker, *, buffer_events: int = 10_000,
                 retry_delay: float = 0.5, publish_timeout: float = 5.0,
                 published_size: int = 100_000) -> None:
        super().__init__()
        self.inner = inner
        self.display_url = inner.display_url
        self._buffer: deque[tuple[list[str], bytes, str | None, Change | None]] = deque()
        self._buffer_events = buffer_events
        self._retry_delay = retry_delay
        self._publish_timeout = publish_timeout
        self._confirmed: dict[str, tuple[str, str]] = {}
        #: Ids of events that came back from the broker: published, by this instance or
        #: another running the same stream; one of those is never delivered provisionally.
        self._published = RecentIds(published_size)
        self._provisional_epoch = "p" + secrets.token_hex(6)
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._outage_since: float | None = None
        self._last_error: str | None = None
        self._overflow_log = Every(5.0)
        self.counts = {"buffered": 0, "flushed": 0, "overflow": 0, "local_deliveries": 0,
                       "already_published": 0}
        inner.set_handler(self._from_inner)
        inner.set_gap_handler(self._deliver_gap)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.inner.start()
        self._flusher = asyncio.create_task(self._flush_loop(), name="broker buffer flusher")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        if self._buffer:
            log.error("broker closed with %d buffered event(s) unpublished", len(self._buffer))
        await self.inner.close()

    async def flush(self, timeout: float) -> bool:
        """Wait until the buffer is published; False when events remain after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while self._buffer:
                    self._wake.set()
                    await asyncio.sleep(0.05)
        except TimeoutError:
            return False
        return True

    # -- delivery ------------------------------------------------------------------------------

    def _from_inner(self, channel: str, offset: str, frame: bytes) -> None:
        epoch = frame_epoch(frame)
        if epoch is not None:
            self._confirmed[channel] = (epoch, offset)
        event_id = frame_event_id(frame)
        if event_id is not None:
            self._published.add(event_id)
        self._deliver(channel, offset, frame)

    def _deliver_locally(self, channels: Sequence[str], event_json: bytes,
                         event_id: str | None) -> list[str]:
        offsets = []
        for channel in channels:
            epoch, offset = self._confirmed.get(channel, (self._provisional_epoch, "0-0"))
            frame = provisional_frame(channel, epoch, offset, event_json)
            self._deliver_provisional(channel, offset, frame, event_id)
            offsets.append(offset)
        self.counts["local_deliveries"] += 1
        return offsets

    # -- publishing ----------------------------------------------------------------------------

    async def publish(
        self, channels: Sequence[str], event_json: bytes, *, event_id: str | None = None,
        change: Change | None = None,
    ) -> list[str] | None:
        if event_id is not None and event_id in self._published:
            # It came back from the broker already (another instance running the same stream
            # published it, or a provider read it again): this process's clients had it. The
            # broker would drop it too, unless it lost its data (and the id's mark) meanwhile.
            self.counts["already_published"] += 1
            return None
        if not self._inner_ready():
            # Publishing now could succeed while our subscription is still being re-established,
            # and this process's clients would never see the event: keep delivering locally.
            self._enter_outage("broker subscription " + str(self.inner.health().get("state")))
        elif not self._buffer:
            try:
                return await self._publish(channels, event_json, event_id, change)
            except BrokerError as exc:
                self._enter_outage(str(exc))
        if len(self._buffer) >= self._buffer_events:
            self.counts["overflow"] += 1
            if self._overflow_log.due():
                log.error("broker unreachable and buffer full (%d): events delivered locally "
                          "only, not published (%d so far)", self._buffer_events,
                          self.counts["overflow"])
            return self._deliver_locally(channels, event_json, event_id)
        self._buffer.append((list(channels), event_json, event_id, change))
        self.counts["buffered"] += 1
        self._wake.set()
        return self._deliver_locally(channels, event_json, event_id)

    async def _publish(self, channels: Sequence[str], event_json: bytes,
                       event_id: str | None, change: Change | None) -> list[str] | None:
        # A publish that timed out may have been applied: retrying it is safe because the
        # broker drops a second publish of the same event id.
        try:
            async with asyncio.timeout(self._publish_timeout):
                return await self.inner.publish(channels, event_json, event_id=event_id,
                                                change=change)
        except TimeoutError:
            raise BrokerError(f"publish timed out after {self._publish_timeout:g}s") from None

    def _inner_ready(self) -> bool:
        return self.inner.health().get("state", "ok") in READY_STATES

    def _enter_outage(self, error: str) -> None:
        self._last_error = error
        if self._outage_since is None:
            self._outage_since = time.time()
            log.warning("broker unreachable, buffering events: %s", error)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                if not self._inner_ready():
                    await asyncio.sleep(self._retry_delay)
                    continue
                channels, event_json, event_id, change = self._buffer[0]
                if event_id is not None and event_id in self._published:
                    # Another instance published it meanwhile (and Redis may have lost the
                    # mark since): this process's clients had it provisionally, then for real.
                    self._buffer.popleft()
                    self.counts["already_published"] += 1
                    continue
                try:
                    await self._publish(channels, event_json, event_id, change)
                except BrokerError as exc:
                    self._enter_outage(str(exc))
                    await asyncio.sleep(self._retry_delay)
                    continue
                self._buffer.popleft()
                self.counts["flushed"] += 1
            if self._outage_since is not None:
                log.info("broker reachable again after %.1fs; buffer published",
                         time.time() - self._outage_since)
                self._outage_since = None

    # -- pass-through --------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        await self.inner.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.inner.unsubscribe(channel)

    async def epoch(self, channel: str) -> str:
        return await self.inner.epoch(channel)

    async def snapshot(self, channel: str) -> Snapshot:
        # Not while events wait in the buffer: the state would not have them yet, and the
        # client would miss them (they come as live frames from before the snapshot's offset).
        self._check_state()
        return await self.inner.snapshot(channel)

    async def state_parts(self, channel: str, size: int, prefix: str = ""
                          ) -> AsyncIterator[dict[str, Record]]:
        self._check_state()
        async for part in self.inner.state_parts(channel, size, prefix):
            yield part

    def _check_state(self) -> None:
        if self._buffer:
            raise BrokerError("events are waiting to be published; the state is behind")

    async def position(self, channel: str) -> tuple[str, str]:
        return await self.inner.position(channel)

    async def history(self, channel: str, after: str | None, limit: int
                      ) -> list[tuple[str, bytes]]:
        return await self.inner.history(channel, after, limit)

    async def replay(self, channel: str, *, epoch: str, after: str, limit: int,
                     max_age: float | None = None) -> Replay:
        return await self.inner.replay(channel, epoch=epoch, after=after, limit=limit,
                                       max_age=max_age)

    async def ping(self) -> None:
        await self.inner.ping()

    def health(self) -> dict[str, Any]:
        inner = self.inner.health()
        state = "buffering" if self._outage_since is not None else inner.get("state", "ok")
        return {**inner, "state": state, "buffered": len(self._buffer),
                "buffer_limit": self._buffer_events,
                "outage_since": round(self._outage_since, 3) if self._outage_since else None,
                "last_error": self._last_error if self._outage_since else inner.get("last_error"),
                **{k: v for k, v in self.counts.items() if k != "buffered"},
                "buffered_total": self.counts["buffered"]}
