"""The broker contract (bridge/brokers/base.py), run against every backend."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bridge.brokers.base import Broker, offset_key
from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis import RedisBroker
from bridge.events import Event, EventType, envelope

REDIS_URL = "redis://127.0.0.1:6379/0"
HISTORY = 50
#: Safety net only: every wait ends as soon as what it awaits happens. Scale it on a slow
#: machine with CALLBRIDGE_TEST_TIMEOUT_SCALE.
WAIT = 5.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


class Collector:
    """The broker handler: records deliveries and wakes waiters."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, channel: str, offset: str, frame: bytes) -> None:
        self.got.append((channel, offset, frame))
        self._changed.set()

    async def until(self, count: int) -> list[tuple[str, str, bytes]]:
        async with asyncio.timeout(WAIT):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got


async def delete_prefix(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "memory":
        memory = MemoryBroker(history_length=HISTORY)
        await memory.start()
        yield memory
        await memory.close()
        return
    prefix = f"test-{uuid.uuid4().hex}:"
    backend = RedisBroker(REDIS_URL, prefix=prefix, history_length=HISTORY)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
        await delete_prefix(prefix)


@pytest.fixture
def collector(broker: Broker) -> Collector:
    handler = Collector()
    broker.set_handler(handler)
    return handler


def event_json(n: int = 0) -> bytes:
    return Event(
        id=uuid.uuid4().hex,
        type=EventType.CREATED,
        provider="antbuddy",
        tenant="acme",
        occurred_at="2024-05-01T10:00:00.000Z",
        call_id=f"call-{n}",
        extension="101",
    ).to_json()


async def test_publish_returns_one_increasing_offset_per_channel(broker: Broker) -> None:
    channels = ["calls:acme", "calls:acme:101"]
    rounds = [await broker.publish(channels, event_json(n)) for n in range(5)]
    assert all(len(offsets) == len(channels) for offsets in rounds)
    for index in range(len(channels)):
        keys = [offset_key(offsets[index]) for offsets in rounds]
        assert all(a < b for a, b in zip(keys, keys[1:]))
    assert await broker.publish([], event_json()) == []


async def test_handler_gets_envelope_frames_of_subscribed_channels_only(
    broker: Broker, collector: Collector
) -> None:
    await broker.subscribe("calls:acme")
    await broker.subscribe("calls:acme:101")
    first, second = event_json(1), event_json(2)
    offsets = await broker.publish(["calls:acme", "calls:other", "calls:acme:101"], first)
    # A later event on a subscribed channel: anything about calls:other would arrive before it.
    (marker,) = await broker.publish(["calls:acme"], second)
    got = await collector.until(3)
    assert sorted(got[:2]) == sorted(
        [
            ("calls:acme", offsets[0], envelope("calls:acme", offsets[0], first)),
            ("calls:acme:101", offsets[2], envelope("calls:acme:101", offsets[2], first)),
        ]
    )
    assert got[2:] == [("calls:acme", marker, envelope("calls:acme", marker, second))]


async def test_unsubscribe_stops_delivery(broker: Broker, collector: Collector) -> None:
    await broker.subscribe("calls:acme")
    await broker.subscribe("system:acme")
    await broker.publish(["calls:acme"], event_json(1))
    await collector.until(1)
    await broker.unsubscribe("calls:acme")
    await broker.unsubscribe("calls:acme")  # idempotent
    await broker.unsubscribe("calls:never")  # never subscribed: no error
    await broker.publish(["calls:acme"], event_json(2))
    (marker,) = await broker.publish(["system:acme"], event_json(3))
    got = await collector.until(2)
    assert [(c, o) for c, o, _ in got[1:]] == [("system:acme", marker)]
    assert [c for c, _, _ in got] == ["calls:acme", "system:acme"]


async def test_subscribe_is_idempotent(broker: Broker, collector: Collector) -> None:
    await broker.subscribe("calls:acme")
    await broker.subscribe("calls:acme")
    await asyncio.gather(broker.subscribe("calls:acme"), broker.subscribe("calls:acme"))
    (first,) = await broker.publish(["calls:acme"], event_json(1))
    (last,) = await broker.publish(["calls:acme"], event_json(2))
    got = await collector.until(2)
    assert [o for _, o, _ in got] == [first, last]


async def test_resubscribe_after_unsubscribe_delivers_again(
    broker: Broker, collector: Collector
) -> None:
    await broker.subscribe("calls:acme")
    await broker.unsubscribe("calls:acme")
    await broker.subscribe("calls:acme")
    (offset,) = await broker.publish(["calls:acme"], event_json())
    got = await collector.until(1)
    assert [o for _, o, _ in got] == [offset]


async def test_history_pages_after_an_offset(broker: Broker) -> None:
    events = [event_json(n) for n in range(6)]
    offsets = [(await broker.publish(["calls:acme"], e))[0] for e in events]
    await broker.publish(["calls:other"], event_json(99))
    expected = [(o, envelope("calls:acme", o, e)) for o, e in zip(offsets, events)]

    assert await broker.history("calls:acme", None, 100) == expected
    assert await broker.history("calls:acme", None, 2) == expected[:2]
    assert await broker.history("calls:acme", offsets[1], 3) == expected[2:5]
    assert await broker.history("calls:acme", offsets[3], 100) == expected[4:]
    assert await broker.history("calls:acme", offsets[-1], 100) == []
    assert await broker.history("calls:acme", "0-0", 100) == expected
    assert await broker.history("calls:nobody", None, 100) == []


async def test_history_keeps_the_newest_history_length_events(broker: Broker) -> None:
    total = HISTORY + 350  # several Redis stream nodes, so approximate trimming drops some
    offsets = [(await broker.publish(["calls:acme"], event_json(n)))[0] for n in range(total)]
    kept = [offset for offset, _ in await broker.history("calls:acme", None, total)]
    assert HISTORY <= len(kept) < total
    assert offsets[0] not in kept
    assert kept == offsets[-len(kept) :]


async def test_frames_of_history_equal_live_frames(broker: Broker, collector: Collector) -> None:
    await broker.subscribe("calls:acme:101")
    payload = event_json()
    (offset,) = await broker.publish(["calls:acme:101"], payload)
    (live,) = await collector.until(1)
    assert await broker.history("calls:acme:101", None, 10) == [(offset, live[2])]
    assert live == ("calls:acme:101", offset, envelope("calls:acme:101", offset, payload))


async def test_ping(broker: Broker) -> None:
    await broker.ping()
