"""The broker contract (bridge/brokers/base.py), run against every backend."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from bridge.brokers.base import EPOCH_RE, Broker, Replay, ReplayStatus, offset_key
from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.events.event import Event, EventType, envelope
from bridge.redisconn.clients import drop_prefix
from tests.brokers.collector import Collector

REDIS_URL = "redis://127.0.0.1:6379/0"
HISTORY = 50


async def delete_prefix(prefix: str) -> None:
    await drop_prefix(REDIS_URL, prefix)


@pytest.fixture(params=["memory", "redis"])
async def brokers(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, Broker]]:
    """Two brokers sharing one backend, as two callbridge processes share one Redis and prefix.

    ``memory://`` is one process by design: both are the same instance.
    """
    if request.param == "memory":
        memory = MemoryBroker(history_length=HISTORY)
        await memory.start()
        yield memory, memory
        await memory.close()
        return
    prefix = f"test-{uuid.uuid4().hex}:"
    pair = [RedisBroker(REDIS_URL, prefix=prefix, history_length=HISTORY) for _ in range(2)]
    try:
        for backend in pair:
            await backend.start()
        yield pair[0], pair[1]
    finally:
        for backend in pair:
            await backend.close()
        await delete_prefix(prefix)


@pytest.fixture
def broker(brokers: tuple[Broker, Broker]) -> Broker:
    return brokers[0]


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
    acme, ext = await broker.epoch("calls:acme"), await broker.epoch("calls:acme:101")
    assert sorted(got[:2]) == sorted(
        [
            ("calls:acme", offsets[0], envelope("calls:acme", acme, offsets[0], first)),
            ("calls:acme:101", offsets[2], envelope("calls:acme:101", ext, offsets[2], first)),
        ]
    )
    assert got[2:] == [("calls:acme", marker, envelope("calls:acme", acme, marker, second))]


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
    epoch = await broker.epoch("calls:acme")
    expected = [(o, envelope("calls:acme", epoch, o, e)) for o, e in zip(offsets, events)]

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
    epoch = await broker.epoch("calls:acme:101")
    assert live == ("calls:acme:101", offset, envelope("calls:acme:101", epoch, offset, payload))


async def test_ping(broker: Broker) -> None:
    await broker.ping()


# -- epochs and replay ----------------------------------------------------------------------------


async def test_epoch_is_stable_and_carried_by_every_frame(
    brokers: tuple[Broker, Broker], collector: Collector
) -> None:
    broker, other = brokers
    before = await broker.epoch("calls:acme")
    assert EPOCH_RE.fullmatch(before)
    await broker.subscribe("calls:acme")
    (offset,) = await other.publish(["calls:acme"], event_json())
    ((_, delivered, frame),) = await collector.until(1)
    assert delivered == offset and orjson.loads(frame)["epoch"] == before
    assert await broker.epoch("calls:acme") == before
    assert await other.epoch("calls:acme") == before
    assert [f for _, f in await broker.history("calls:acme", None, 10)] == [frame]
    assert await broker.epoch("calls:other") != "" and EPOCH_RE.fullmatch(
        await broker.epoch("calls:other")
    )


async def test_position_is_the_epoch_and_the_newest_offset(broker: Broker) -> None:
    epoch, offset = await broker.position("calls:acme")
    assert (epoch, offset) == (await broker.epoch("calls:acme"), "0-0")
    offsets = [(await broker.publish(["calls:acme"], event_json()))[0] for _ in range(3)]
    assert await broker.position("calls:acme") == (epoch, offsets[-1])
    replay = await broker.replay("calls:acme", epoch=epoch, after=offsets[-1], limit=10)
    assert replay.status == "ok" and replay.items == []
    # The position of a channel with no event yet is never too old.
    replay = await broker.replay("calls:acme", epoch=epoch, after="0-0", limit=10, max_age=1)
    assert replay.status == "ok" and [o for o, _ in replay.items] == offsets


async def test_replay_pages_through_the_gap_with_a_complete_flag(broker: Broker) -> None:
    events = [event_json(n) for n in range(7)]
    offsets = [(await broker.publish(["calls:acme"], e))[0] for e in events]
    epoch = await broker.epoch("calls:acme")
    expected = [(o, envelope("calls:acme", epoch, o, e)) for o, e in zip(offsets, events)]

    pages: list[Replay] = []
    after = offsets[0]
    while not pages or not pages[-1].complete:
        page = await broker.replay("calls:acme", epoch=epoch, after=after, limit=4)
        assert page.status is ReplayStatus.OK and page.epoch == epoch
        pages.append(page)
        after = page.items[-1][0] if page.items else after
        assert len(pages) < 10
    assert [item for page in pages for item in page.items] == expected[1:]
    assert [len(page.items) for page in pages] == [4, 2]

    exact = await broker.replay("calls:acme", epoch=epoch, after=offsets[2], limit=4)
    assert (exact.items, exact.complete) == (expected[3:], True)
    caught_up = await broker.replay("calls:acme", epoch=epoch, after=offsets[-1], limit=4)
    assert (caught_up.status, caught_up.items, caught_up.complete) == (ReplayStatus.OK, [], True)
    fresh = await broker.replay("calls:acme", epoch=epoch, after="0-0", limit=100)
    assert fresh.items == expected


async def test_replay_of_another_epoch_is_refused(broker: Broker) -> None:
    (offset,) = await broker.publish(["calls:acme"], event_json())
    await broker.publish(["calls:acme"], event_json())
    epoch = await broker.epoch("calls:acme")
    stale = "old" + epoch[:8]
    result = await broker.replay("calls:acme", epoch=stale, after=offset, limit=10)
    assert result == Replay(ReplayStatus.EPOCH_CHANGED, epoch)


async def test_replay_after_an_offset_older_than_max_age_is_too_old(broker: Broker) -> None:
    (offset,) = await broker.publish(["calls:acme"], event_json())
    epoch = await broker.epoch("calls:acme")
    hour_old = f"{int(time.time() * 1000) - 3_600_000}-0"
    result = await broker.replay("calls:acme", epoch=epoch, after=hour_old, limit=10, max_age=60)
    assert result == Replay(ReplayStatus.TOO_OLD, epoch)
    recent = await broker.replay("calls:acme", epoch=epoch, after=offset, limit=10, max_age=60)
    assert (recent.status, recent.items) == (ReplayStatus.OK, [])
    # The epoch check comes first.
    other = await broker.replay("calls:acme", epoch="x" + epoch, after=hour_old, limit=1,
                                max_age=60)
    assert other.status is ReplayStatus.EPOCH_CHANGED


async def test_replay_past_the_history_length_is_trimmed_never_partial(broker: Broker) -> None:
    total = HISTORY + 350  # several Redis stream nodes, so approximate trimming drops some
    offsets = [(await broker.publish(["calls:acme"], event_json(n)))[0] for n in range(total)]
    epoch = await broker.epoch("calls:acme")
    kept = [offset for offset, _ in await broker.history("calls:acme", None, total)]
    assert HISTORY <= len(kept) < total and kept == offsets[-len(kept) :]

    statuses = []
    for index, after in enumerate(["0-0", *offsets]):
        result = await broker.replay("calls:acme", epoch=epoch, after=after, limit=total)
        statuses.append(result.status)
        if result.status is ReplayStatus.OK:
            # Covered: exactly every event after the offset, nothing missing.
            assert (result.complete, [o for o, _ in result.items]) == (True, offsets[index:])
        else:
            assert result == Replay(ReplayStatus.TRIMMED, epoch), after
    # Every offset before the newest dropped one is refused; every kept one is covered. (The
    # newest dropped offset itself is covered where the backend knows it, refused otherwise.)
    dropped = total - len(kept)
    assert set(statuses[:dropped]) == {ReplayStatus.TRIMMED}
    assert set(statuses[dropped + 1 :]) == {ReplayStatus.OK}


async def test_replay_rejects_a_malformed_offset(broker: Broker) -> None:
    epoch = await broker.epoch("calls:acme")
    with pytest.raises(ValueError):
        await broker.replay("calls:acme", epoch=epoch, after="latest", limit=1)


# -- de-duplication ------------------------------------------------------------------------------


async def test_publish_of_a_seen_event_id_is_dropped_across_instances(
    brokers: tuple[Broker, Broker], collector: Collector
) -> None:
    broker, other = brokers
    await broker.subscribe("calls:acme")
    event_id = uuid.uuid4().hex
    payload = event_json()
    first = await broker.publish(["calls:acme", "calls:acme:101"], payload, event_id=event_id)
    assert first is not None and len(first) == 2
    assert await other.publish(["calls:acme", "calls:acme:101"], payload, event_id=event_id) is None
    assert await broker.publish(["calls:acme"], payload, event_id=event_id) is None
    (marker,) = await other.publish(["calls:acme"], event_json(), event_id=uuid.uuid4().hex)
    got = await collector.until(2)
    assert [o for _, o, _ in got] == [first[0], marker]
    assert [o for o, _ in await broker.history("calls:acme", None, 10)] == [first[0], marker]
    assert [o for o, _ in await other.history("calls:acme:101", None, 10)] == [first[1]]
    # Without an id nothing is de-duplicated.
    assert await broker.publish(["calls:acme"], payload) is not None
    assert await broker.publish(["calls:acme"], payload) is not None
