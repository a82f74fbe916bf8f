"""The live-state part of the broker contract (``publish(..., change=)``, ``snapshot``), run
against every backend: ``memory://``, ``redis://`` and ``redis-cluster://`` (a private 3-node
cluster, started once for the module).

The reference is :func:`bridge.calls.change.apply`, folded in Python over the same changes.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from bridge.brokers.base import EPOCH_RE, Broker, Snapshot, offset_key
from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.redis.cluster import RedisClusterBroker
from bridge.brokers.redis.state import PARSE_CHUNK
from bridge.calls.change import Change, Record, apply
from bridge.calls.legs import change_for
from bridge.events.event import Event, EventType, Party
from bridge.redisconn.clients import drop_prefix
from tests.support.redis_cluster import Cluster, binaries_missing, redis_cluster
from tests.support.redis_server import private_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
HISTORY = 1000
CHANNELS = ["calls:acme", "calls:acme:101"]

# The cluster is started once for the module, so every test runs on the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    if binaries_missing() is not None:
        pytest.skip(f"Redis Cluster tests need redis binaries: {binaries_missing()}")
    async with redis_cluster() as started:
        yield started


async def drop_cluster_prefix(cluster: Cluster, prefix: str) -> None:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        for node in client.get_primaries():
            for key in [k async for k in client.scan_iter(match=prefix + "*", target_nodes=node)]:
                await client.delete(key)
    finally:
        await client.aclose()


@dataclass(frozen=True)
class Backend:
    name: str
    #: The private cluster, when ``name`` is "cluster".
    cluster: Cluster | None = None


def backend_of(request: pytest.FixtureRequest) -> Backend:
    # An async fixture cannot start another one (getfixturevalue): this plain one does.
    if request.param == "cluster":
        return Backend("cluster", request.getfixturevalue("cluster"))
    return Backend(request.param)


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_of(request)


@pytest.fixture(params=["redis", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> Backend:
    return backend_of(request)


@pytest_asyncio.fixture(loop_scope="module")
async def brokers(backend: Backend) -> AsyncIterator[tuple[Broker, Broker]]:
    """Two brokers sharing one backend, as two callbridge processes share one Redis and prefix
    (``memory://`` is one process by design: both are the same instance)."""
    if backend.name == "memory":
        memory = MemoryBroker(history_length=HISTORY)
        await memory.start()
        yield memory, memory
        await memory.close()
        return
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    pair: list[Broker]
    cluster = backend.cluster
    if cluster is None:
        pair = [RedisBroker(REDIS_URL, prefix=prefix, history_length=HISTORY) for _ in range(2)]
    else:
        pair = [RedisClusterBroker(cluster.url, prefix=prefix, history_length=HISTORY)
                for _ in range(2)]
    try:
        for backend in pair:
            await backend.start()
        yield pair[0], pair[1]
    finally:
        for backend in pair:
            await backend.close()
        if cluster is None:
            await drop_prefix(REDIS_URL, prefix)
        else:
            await drop_cluster_prefix(cluster, prefix)


@pytest.fixture
def broker(brokers: tuple[Broker, Broker]) -> Broker:
    return brokers[0]


def fold(changes: list[Change]) -> dict[str, Record]:
    """The records :func:`apply` makes of ``changes``, in order."""
    records: dict[str, Record] = {}
    tombstones: dict[str, float] = {}
    now = time.time()
    for change in changes:
        apply(records, tombstones, change, now)
    return records


def at(second: int) -> str:
    return f"2024-05-01T10:00:{second:02d}.000Z"


def call_event(kind: EventType, call_id: str, second: int, **fields: Any) -> Event:
    return Event(id=uuid.uuid4().hex, type=kind, provider="antbuddy", tenant="acme",
                 occurred_at=at(second), call_id=call_id, **fields)


def sequence() -> list[Change]:
    """Out of order, repeated, late and null-valued changes of every operation."""
    caller = Party(number="+15550100", name="Ann")
    events = [
        call_event(EventType.ANSWERED, "c1", 5, extension="101", caller=caller),  # before created
        call_event(EventType.CREATED, "c1", 1, extension="101", direction="incoming"),
        call_event(EventType.HELD, "c1", 9),
        call_event(EventType.UNHELD, "c1", 7),  # older than the hold: the hold stays
        call_event(EventType.BRIDGED, "c1", 6, bridge_id="b1"),
        call_event(EventType.ANSWERED, "c1", 8),  # max keeps the bridged rank
        call_event(EventType.CREATED, "c2", 2, extension="101"),
        call_event(EventType.ENDED, "c2", 10),
        call_event(EventType.ANSWERED, "c2", 4),  # late: the tombstone ignores it
        call_event(EventType.ENDED, "c3", 3),  # ended before anything else was seen
        call_event(EventType.CREATED, "c3", 1),
        Event(id="p1", type=EventType.PRESENCE, provider="quickom", tenant="acme",
              occurred_at=at(20), detail={"extension": "101", "online": True}),
        Event(id="p2", type=EventType.PRESENCE, provider="quickom", tenant="acme",
              occurred_at=at(15), detail={"extension": "101", "online": False}),
    ]
    changes = [c for c in map(change_for, events) if c is not None]
    return changes + [
        Change("leg:c4", at(1), set={"note": None, "tags": {"a": 1}}, setnx={"note": "x"},
               max={"note": 2}, latest={"parked": True}),
        Change("leg:c4", at(1), latest={"parked": False}),  # the same time still writes
        Change("leg:c4", at(0), set={"empty": {}}, latest={"parked": True}),
        Change("leg:c5", at(1)),  # a record with nothing in it
    ]


async def test_changes_give_the_records_of_apply(broker: Broker) -> None:
    changes = sequence()
    for n, change in enumerate(changes):
        await broker.publish(CHANNELS, b'{"n":%d}' % n, event_id=uuid.uuid4().hex, change=change)
    await broker.publish(CHANNELS, b'{"n":-1}')  # no change: the state stays
    expected = fold(changes)
    assert expected["leg:c1"]["rank"] == 3 and expected["leg:c1"]["held"] is True
    assert "leg:c2" not in expected and "leg:c3" not in expected
    assert expected["ext:101"]["online"] is True
    for channel in CHANNELS:
        snapshot = await broker.snapshot(channel)
        assert snapshot.records == expected
        assert (snapshot.epoch, snapshot.offset) == await broker.position(channel)


async def test_a_state_of_many_chunks_reads_whole(broker: Broker) -> None:
    # Redis snapshots are decoded a chunk of records at a time, the event loop running
    # between chunks: nothing is lost or doubled at the seams.
    count = 2 * PARSE_CHUNK + 3
    changes = [Change(f"leg:c{n}", at(n % 60), set={"extension": str(n)}, max={"rank": 1})
               for n in range(count)]
    for n, change in enumerate(changes):
        await broker.publish(CHANNELS[:1], b'{"n":%d}' % n, event_id=uuid.uuid4().hex,
                             change=change)
    snapshot = await broker.snapshot(CHANNELS[0])
    assert len(snapshot.records) == count
    assert snapshot.records == fold(changes)
    # Read by parts (the closer's sweep), every record comes once, in parts of the size asked.
    parts = [part async for part in broker.state_parts(CHANNELS[0], 400)]
    assert [len(part) for part in parts] == [400, 400, count - 800]
    assert {k: v for part in parts for k, v in part.items()} == snapshot.records
    # Only the kind of record asked for.
    await broker.publish(CHANNELS[:1], b"{}", event_id=uuid.uuid4().hex,
                         change=Change("ext:101", at(1), set={"online": True}))
    legs = [part async for part in broker.state_parts(CHANNELS[0], 400, prefix="leg:")]
    assert {k: v for part in legs for k, v in part.items()} == snapshot.records
    assert [part async for part in broker.state_parts(CHANNELS[0], 400, prefix="ext:")] == [
        {"ext:101": {"online": True}}]


async def test_a_repeated_event_id_applies_nothing(brokers: tuple[Broker, Broker]) -> None:
    broker, other = brokers
    created = Change("leg:c1", at(1), set={"extension": "101"}, max={"rank": 1})
    assert await broker.publish(CHANNELS, b"{}", event_id="e1", change=created) is not None
    before = await other.snapshot("calls:acme")
    ended = Change("leg:c1", at(2), end=True)
    assert await other.publish(CHANNELS, b"{}", event_id="e1", change=ended) is None
    assert await broker.publish(["calls:acme"], b"{}", event_id="e1", change=ended) is None
    assert await broker.snapshot("calls:acme") == before
    assert before.records == {"leg:c1": {"extension": "101", "rank": 1}}


async def test_snapshot_of_a_channel_without_events(brokers: tuple[Broker, Broker]) -> None:
    broker, other = brokers
    snapshot = await broker.snapshot("calls:quiet")
    assert EPOCH_RE.fullmatch(snapshot.epoch)
    assert snapshot == Snapshot(snapshot.epoch, "0-0", {})
    assert await other.epoch("calls:quiet") == snapshot.epoch  # created, as position does
    await broker.publish(["calls:quiet"], b"{}")  # an event without a change
    after = await other.snapshot("calls:quiet")
    assert (after.epoch, after.records) == (snapshot.epoch, {}) and after.offset != "0-0"


def random_change(rng: random.Random) -> Change:
    key = f"leg:c{rng.randrange(4)}"
    when = at(rng.randrange(60))
    if rng.random() < 0.1:
        return Change(key, when, end=True)
    return Change(key, when, set={"n": rng.randrange(100)}, setnx={"first": when},
                  max={"rank": rng.randrange(1, 4)}, latest={"held": rng.random() < 0.5})


async def test_snapshots_taken_while_publishing_match_the_history_up_to_their_offset(
    brokers: tuple[Broker, Broker],
) -> None:
    publisher, reader = brokers
    rng = random.Random(14)
    changes = [random_change(rng) for _ in range(150)]

    async def publish() -> None:
        for change in changes:
            # The event carries its change, so the history tells which changes an offset covers.
            event = orjson.dumps({"id": uuid.uuid4().hex, "change": orjson.loads(change.to_json())})
            await publisher.publish(CHANNELS, event, change=change)
            await asyncio.sleep(0)  # memory:// publishes without suspending

    task = asyncio.create_task(publish())
    snapshots: list[Snapshot] = []
    try:
        while not task.done():
            snapshots.append(await reader.snapshot("calls:acme"))
            await asyncio.sleep(0)
    finally:
        await task
    snapshots.append(await reader.snapshot("calls:acme"))

    history = await reader.history("calls:acme", None, HISTORY)
    assert len(history) == len(changes)
    logged = [(offset_key(o), Change(**orjson.loads(f)["event"]["change"])) for o, f in history]
    epoch = await reader.epoch("calls:acme")
    middle = 0
    for snapshot in snapshots:
        assert snapshot.epoch == epoch
        upto = offset_key(snapshot.offset)
        covered = [change for position, change in logged if position <= upto]
        assert snapshot.records == fold(covered), snapshot.offset
        middle += 0 < len(covered) < len(changes)
    assert middle > 0, "no snapshot was taken while the changes were being published"
    assert snapshots[-1].records == fold(changes)


# -- Redis: the state lives with the data ---------------------------------------------------------


@dataclass
class Store:
    """A Redis that test may flush: brokers made by ``make`` share it."""

    make: Callable[[], Broker]
    flush: Callable[[], Awaitable[None]]


@pytest_asyncio.fixture(loop_scope="module")
async def store(redis_backend: Backend) -> AsyncIterator[Store]:
    cluster = redis_backend.cluster
    if cluster is not None:
        prefix = f"test-{uuid.uuid4().hex[:12]}:"
        yield Store(lambda: RedisClusterBroker(cluster.url, prefix=prefix), cluster.flushall)
        await drop_cluster_prefix(cluster, prefix)
        return
    async with private_redis() as server:
        async def flush() -> None:
            client = aioredis.Redis.from_url(server.url)
            try:
                await client.flushall()
            finally:
                await client.aclose()

        yield Store(lambda: RedisBroker(server.url, prefix="cb:"), flush)


async def test_state_outlives_the_broker_and_is_lost_with_the_data(store: Store) -> None:
    changes = sequence()
    first = store.make()
    await first.start()
    try:
        for change in changes:
            await first.publish(CHANNELS, b"{}", change=change)
        before = await first.snapshot("calls:acme")
    finally:
        await first.close()
    assert before.records == fold(changes)

    second = store.make()  # a restarted callbridge instance: same Redis, new broker
    await second.start()
    try:
        assert await second.snapshot("calls:acme") == before
        await store.flush()
        lost = await second.snapshot("calls:acme")
        assert lost.epoch != before.epoch and (lost.offset, lost.records) == ("0-0", {})
        await second.publish(["calls:acme"], b"{}", change=changes[-1])
        after = await second.snapshot("calls:acme")
        assert after.epoch == lost.epoch and after.records == fold(changes[-1:])
    finally:
        await second.close()
