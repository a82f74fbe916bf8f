"""The pipeline: repeats dropped by event id, channels by event type, order kept through a
broker that fails, a full queue refused (never silently), drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import orjson
import pytest

from bridge.brokers.base import BrokerError
from bridge.brokers.memory import MemoryBroker
from bridge.calls.change import Change
from bridge.core.pipeline import Pipeline, channels_for
from bridge.events.event import Event, EventType


def event(n: int, *, type: EventType = EventType.CREATED, extension: str | None = "101") -> Event:
    return Event(id=f"ev-{n}", type=type, provider="antbuddy", tenant="acme",
                 occurred_at="2026-12-07T10:00:00.000Z", call_id=f"call-{n}",
                 extension=extension)


class FlakyBroker(MemoryBroker):
    """A memory broker whose first ``failures`` publishes raise BrokerError."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, channels: Sequence[str], event_json: bytes, *,
                      event_id: str | None = None,
                      change: Change | None = None) -> list[str] | None:
        if self.failures:
            self.failures -= 1
            raise BrokerError("redis at 127.0.0.1:1: connect failed")
        return await super().publish(channels, event_json, event_id=event_id, change=change)


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    task = asyncio.create_task(pipeline.run())
    try:
        yield pipeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ids_on(broker: MemoryBroker, channel: str) -> list[str]:
    return [orjson.loads(frame)["event"]["id"]
            for _, frame in await broker.history(channel, None, 100)]


@pytest.mark.parametrize(("kind", "extension", "expected"), [
    (EventType.CREATED, "101", ["calls:acme", "calls:acme:101"]),
    (EventType.ENDED, None, ["calls:acme"]),
    (EventType.SYSTEM, None, ["system:acme"]),
    (EventType.PRESENCE, "101", ["presence:acme"]),
    (EventType.VERIFICATION, None, ["verifications:acme"]),
])
def test_channels_follow_the_event_type(kind: EventType, extension: str | None,
                                        expected: list[str]) -> None:
    assert channels_for(event(1, type=kind, extension=extension)) == expected


async def test_events_are_published_once_in_order() -> None:
    broker = MemoryBroker()
    async with running(Pipeline(broker)) as pipeline:
        for n in (1, 2, 1, 3, 2):
            assert pipeline.submit(event(n))
        assert await pipeline.drain(5)
    assert await ids_on(broker, "calls:acme") == ["ev-1", "ev-2", "ev-3"]
    assert await ids_on(broker, "calls:acme:101") == ["ev-1", "ev-2", "ev-3"]
    assert pipeline.counts["duplicates"] == 2 and pipeline.counts["published"] == 3
    assert pipeline.published == {("antbuddy", "call.created"): 3}
    assert pipeline.received == {("antbuddy", "call.created"): 5}


async def test_a_failing_broker_delays_events_but_keeps_their_order() -> None:
    broker = FlakyBroker(failures=2)
    async with running(Pipeline(broker, retry_delay=0.01)) as pipeline:
        for n in range(1, 5):
            pipeline.submit(event(n))
        assert await pipeline.drain(5)
    assert await ids_on(broker, "calls:acme") == ["ev-1", "ev-2", "ev-3", "ev-4"]
    assert pipeline.counts["publish_errors"] == 2 and pipeline.counts["published"] == 4


async def test_a_full_queue_refuses_and_counts_and_the_event_can_come_again() -> None:
    broker = MemoryBroker()
    pipeline = Pipeline(broker, queue_size=2)
    assert pipeline.submit(event(1)) and pipeline.submit(event(2))
    assert not pipeline.submit(event(3))
    assert pipeline.counts["overflow"] == 1 and pipeline.pending == 2
    async with running(pipeline):
        assert await pipeline.drain(5)
        assert pipeline.submit(event(3)), "a refused event is not marked as seen"
        assert await pipeline.drain(5)
    assert await ids_on(broker, "calls:acme") == ["ev-1", "ev-2", "ev-3"]


async def test_drain_times_out_while_the_broker_is_down() -> None:
    pipeline = Pipeline(FlakyBroker(failures=10_000), retry_delay=0.01)
    async with running(pipeline):
        pipeline.submit(event(1))
        assert not await pipeline.drain(0.2)
        assert pipeline.pending == 0 or pipeline.counts["published"] == 0
