"""From normalized events to the broker: de-duplicate, route to channels, publish in order,
with the change each event makes to its channels' live state (:mod:`bridge.calls.legs`).

Upstream readers hand events over with :meth:`Pipeline.submit`, which never blocks: a bounded
queue sits between them and the single publisher task, so a slow broker can never stall an
upstream socket (Kazoo silently drops events for sockets that do not read promptly). When the
queue is full the event is counted and logged, never dropped silently.

What the metrics endpoint reports is kept here as plain numbers: events received and published
per ``(provider, type)`` (both bounded: providers are configured, types an enum) and the
publish latency, from :meth:`Pipeline.submit` to the broker's acknowledgement (during a broker
outage, to the event's being buffered: see :mod:`bridge.brokers.resilient`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bridge.brokers.base import Broker, BrokerError
from bridge.calls.legs import change_for
from bridge.common.histogram import Histogram
from bridge.common.logs import Every
from bridge.common.recent import RecentIds
from bridge.events import channels
from bridge.events.event import Event, EventType

log = logging.getLogger("bridge.core.pipeline")


def channels_for(event: Event) -> list[str]:
    """The channels an event is published on (documented in docs/events.md)."""
    if event.type == EventType.SYSTEM:
        return [channels.system(event.tenant)]
    if event.type == EventType.PRESENCE:
        return [channels.presence(event.tenant)]
    if event.type == EventType.VERIFICATION:
        return [channels.verifications(event.tenant)]
    out = [channels.tenant_calls(event.tenant)]
    if event.extension:
        out.append(channels.extension_calls(event.tenant, event.extension))
    return out


class Pipeline:
    def __init__(self, broker: Broker, *, queue_size: int = 10_000,
                 dedup_size: int = 65_536, retry_delay: float = 1.0) -> None:
        self._broker = broker
        #: (event, monotonic time of its submit)
        self._queue: asyncio.Queue[tuple[Event, float]] = asyncio.Queue(maxsize=queue_size)
        self._seen = RecentIds(dedup_size)
        self._retry_delay = retry_delay
        self.counts = {"submitted": 0, "duplicates": 0, "overflow": 0, "published": 0,
                       "publish_errors": 0}
        #: Events offered by (provider, type), duplicates and drops included.
        self.received: dict[tuple[str, str], int] = {}
        #: Events the broker took by (provider, type): published once, not duplicates.
        self.published: dict[tuple[str, str], int] = {}
        #: Seconds from submit to the broker's acknowledgement, per published event.
        self.latency = Histogram()
        self._overflow_log = Every(5.0)
        #: Called with each event the broker took (not with repeats), right after its publish:
        #: must not block (the closer of :mod:`bridge.core.closer` queues ``call.completed``).
        self.on_published: Callable[[Event], None] | None = None

    def submit(self, event: Event) -> bool:
        """Queue ``event`` for publishing. Never blocks.

        True when the event is queued, or was already seen (a duplicate: published or queued
        before). False only when it was dropped because the queue is full: a poller should then
        keep its cursor and offer the event again later.
        """
        key = (event.provider, event.type)
        self.received[key] = self.received.get(key, 0) + 1
        if event.id in self._seen:
            self.counts["duplicates"] += 1
            return True
        try:
            self._queue.put_nowait((event, time.monotonic()))
        except asyncio.QueueFull:
            self.counts["overflow"] += 1
            if self._overflow_log.due():
                log.error("publish queue full (%d): events are being dropped (%d so far)",
                          self._queue.maxsize, self.counts["overflow"])
            return False
        self._seen.add(event.id)
        self.counts["submitted"] += 1
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Publish queued events, in order, until cancelled."""
        while True:
            event, submitted = await self._queue.get()
            data = event.to_json()
            targets = channels_for(event)
            change = change_for(event)
            while True:
                try:
                    offsets = await self._broker.publish(targets, data, event_id=event.id,
                                                         change=change)
                    # None: another process (or an earlier run) already published this event
                    if offsets is None:
                        self.counts["duplicates"] += 1
                    else:
                        self.counts["published"] += 1
                        key = (event.provider, event.type)
                        self.published[key] = self.published.get(key, 0) + 1
                        self.latency.observe(time.monotonic() - submitted)
                        if self.on_published is not None:
                            self.on_published(event)
                    break
                except BrokerError as exc:
                    # Keep the event and keep order; the queue absorbs upstream meanwhile.
                    self.counts["publish_errors"] += 1
                    log.warning("publish failed, retrying in %.1fs: %s", self._retry_delay, exc)
                    await asyncio.sleep(self._retry_delay)
            self._queue.task_done()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued event is published; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return True
