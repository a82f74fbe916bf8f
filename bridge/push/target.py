"""One target's delivery loop: the deliveries of a source POSTed, in order per channel.

A *source* yields deliveries (a consumer group's entries, :mod:`bridge.consumer.groups`) and
takes acknowledgements. Each channel has its own lane: a bounded queue and one task that
pushes one event at a time (at most one in flight per channel), retrying with backoff until a
2xx answer or until ``retry_for`` seconds passed since the first attempt, when the event is
dead-lettered; either way it is then acknowledged and the channel's next event goes. The lanes
of one target run side by side; a lane whose queue is full holds the reader back, so a target
never buffers more than ``queue_size`` events per channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, Protocol, TypeVar

import httpx

from bridge.brokers.base import BrokerError, offset_key
from bridge.common.backoff import backoff
from bridge.common.redact import redact
from bridge.config.model import WebhookTarget
from bridge.consumer.items import Envelope
from bridge.push.record import DeliveryLog, Outcome
from bridge.push.signature import HEADER, sign

log = logging.getLogger("bridge.push")

#: Events waiting per channel of one target (the reader waits beyond it).
QUEUE_SIZE = 16
RETRY_INITIAL = 1.0
RETRY_MAX = 60.0


class Delivery(Protocol):
    """What the loop needs of one delivery (``bridge.consumer.groups.Delivery`` has it)."""

    @property
    def envelope(self) -> Envelope: ...

    @property
    def channel(self) -> str: ...

    @property
    def offset(self) -> str: ...


D = TypeVar("D", bound=Delivery)


class Source(Protocol[D]):
    """Deliveries in order per channel, and their acknowledgement."""

    def __aiter__(self) -> AsyncIterator[D]: ...

    async def ack(self, delivery: D) -> None: ...


class TargetPusher(Generic[D]):
    """Pushes one target's deliveries; :meth:`run` consumes one source until it ends.

    ``dead`` records a dead letter (it may raise :class:`BrokerError`: logged, the event is
    acknowledged all the same). An event delivered here is never pushed again by this object,
    even when the source yields it again (an acknowledgement lost, a redelivery): it is only
    acknowledged again.
    """

    def __init__(self, target: WebhookTarget, http: httpx.AsyncClient, *,
                 dead: Callable[[Outcome], Awaitable[None]], log_: DeliveryLog | None = None,
                 queue_size: int = QUEUE_SIZE, retry_initial: float = RETRY_INITIAL,
                 retry_max: float = RETRY_MAX) -> None:
        self.target = target
        self.log = log_ or DeliveryLog()
        self._http = http
        self._dead = dead
        self._queue_size = queue_size
        self._retry = (retry_initial, retry_max)
        #: Per channel, (epoch, offset key) of the last event pushed or given up.
        self._done: dict[str, tuple[str, tuple[int, int]]] = {}

    async def run(self, source: Source[D]) -> None:
        """Push until ``source`` ends (then every lane finishes) or this is cancelled.

        An error of a lane (an acknowledgement that failed) ends the run with it.
        """
        lanes: dict[str, asyncio.Queue[D | None]] = {}
        async with asyncio.TaskGroup() as group:
            async for delivery in source:
                _raise_if_cancelling()
                queue = lanes.get(delivery.channel)
                if queue is None:
                    queue = lanes[delivery.channel] = asyncio.Queue(self._queue_size)
                    group.create_task(self._lane(source, queue),
                                      name=f"push {self.target.name} {delivery.channel}")
                await queue.put(delivery)
            for queue in lanes.values():
                await queue.put(None)

    async def _lane(self, source: Source[D], queue: asyncio.Queue[D | None]) -> None:
        while (delivery := await queue.get()) is not None:
            envelope = delivery.envelope
            position = (envelope.epoch, offset_key(delivery.offset))
            done = self._done.get(delivery.channel)
            if done is None or done[0] != position[0] or done[1] < position[1]:
                await self._push(envelope)
                self._done[delivery.channel] = position
            await source.ack(delivery)
            _raise_if_cancelling()

    async def _push(self, envelope: Envelope) -> Outcome:
        """POST one event until a 2xx answer or ``retry_for``; the outcome is logged, counted,
        and dead-lettered when it is ``dead``."""
        target, body = self.target, envelope.frame
        event_id = str(envelope.event.get("id", ""))
        headers = {"Content-Type": "application/json", "User-Agent": "callbridge",
                   "Callbridge-Event-Id": event_id, "Callbridge-Channel": envelope.channel,
                   "Callbridge-Offset": envelope.offset}
        delays = backoff(self._retry[0], maximum=self._retry[1])
        give_up = time.monotonic() + target.retry_for
        attempts = 0
        while True:
            attempts += 1
            headers[HEADER] = sign(body, target.keys, int(time.time()))
            status, error = await self._post(body, headers)
            remaining = give_up - time.monotonic()
            if error is None or remaining <= 0:
                break
            self.log.retried(error)
            if attempts == 1:
                log.warning("webhook %s: event %s of %s not delivered (%s); retrying for up "
                            "to %.0fs", target.name, event_id, envelope.channel, error,
                            target.retry_for)
            await asyncio.sleep(min(next(delays), remaining))
        outcome = Outcome(target=target.name, channel=envelope.channel, offset=envelope.offset,
                          event_id=event_id, outcome="dead" if error else "delivered",
                          attempts=attempts, status=status, error=error, at=time.time())
        if error is not None:
            log.error("webhook %s: event %s of %s (offset %s) dead-lettered after %d "
                      "attempt(s) in %.0fs: %s", target.name, event_id, envelope.channel,
                      envelope.offset, attempts, target.retry_for, error)
            try:
                await self._dead(outcome)  # kept before it is counted
            except BrokerError as exc:
                log.error("webhook %s: dead letter of event %s not kept: %s", target.name,
                          event_id, exc)
            _raise_if_cancelling()
        self.log.ended(outcome)
        return outcome

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """``(status, None)`` for a 2xx answer, else ``(status or None, what went wrong)``.

        Bounded by the target's ``timeout`` in all; the answer's body is never read.
        """
        try:
            async with asyncio.timeout(self.target.timeout):
                async with self._http.stream("POST", self.target.url, content=body,
                                             headers=headers) as response:
                    status = response.status_code
        except TimeoutError:
            return None, f"no answer within {self.target.timeout:g}s"
        except (httpx.HTTPError, OSError) as exc:
            return None, self._describe(exc)
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status}"

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).replace(self.target.url, "<url>")
        return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def _raise_if_cancelling() -> None:
    """Raise CancelledError when this task is being cancelled: redis.asyncio can complete a
    command and swallow a cancel that arrived meanwhile, and a lane that lost its cancel would
    keep its target's task group (and the instance's shutdown) waiting forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
