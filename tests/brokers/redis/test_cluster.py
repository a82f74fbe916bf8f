"""The broker contract against a real 3-node Redis Cluster (``redis-cluster://``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from bridge.brokers.base import BrokerError, ReplayStatus, offset_key
from bridge.brokers.redis.cluster import RedisClusterBroker
from bridge.events.event import envelope
from tests.brokers.collector import WAIT, Collector
from tests.support.redis_cluster import Cluster, binaries_missing, redis_cluster

pytestmark = [
    pytest.mark.skipif(binaries_missing() is not None,
                       reason=f"Redis Cluster tests need redis binaries: {binaries_missing()}"),
    pytest.mark.asyncio(loop_scope="module"),
]




@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with redis_cluster() as started:
        yield started


@pytest_asyncio.fixture(loop_scope="module")
async def prefix(cluster: Cluster) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}:"
    yield name
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        for node in client.get_primaries():
            keys = [k async for k in client.scan_iter(match=name + "*", target_nodes=node)]
            for key in keys:
                await client.delete(key)
    finally:
        await client.aclose()


async def make(cluster: Cluster, prefix: str, **options: object) -> RedisClusterBroker:
    broker = RedisClusterBroker(cluster.url, prefix=prefix, **options)  # type: ignore[arg-type]
    await broker.start()
    return broker


async def owners(cluster: Cluster, prefix: str, channels: list[str]) -> dict[str, str]:
    """Which node serves each channel's keys, asked of the cluster itself."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        await client.initialize()
        return {c: client.get_node_from_key(f"{prefix}{{{c}}}:stream").name for c in channels}
    finally:
        await client.aclose()


async def spread(cluster: Cluster, prefix: str) -> list[str]:
    """Channels whose slots are served by three different nodes."""
    candidates = [f"calls:t{n}" for n in range(64)]
    chosen: dict[str, str] = {}
    for channel, node in (await owners(cluster, prefix, candidates)).items():
        chosen.setdefault(node, channel)
    assert len(chosen) == 3
    return list(chosen.values())


def event(n: int) -> bytes:
    return orjson.dumps({"id": f"ev-{n}", "type": "call.created", "n": n})


async def test_publish_across_slots_delivers_by_sharded_pubsub(cluster: Cluster,
                                                               prefix: str) -> None:
    broker = await make(cluster, prefix)
    collector = Collector()
    broker.set_handler(collector)
    try:
        channels = await spread(cluster, prefix)
        assert len({key_slot(f"{prefix}{{{c}}}:stream".encode()) for c in channels}) == 3
        for channel in channels:
            await broker.subscribe(channel)
        health = broker.health()
        assert health["sharded"] is True and health["links"] == 3 and health["state"] == "ok"
        published = [await broker.publish(channels, event(n)) for n in range(5)]
        got = await collector.until(15)
        for i, channel in enumerate(channels):
            offsets = [p[i] for p in published if p is not None]
            keys = [offset_key(o) for o in offsets]
            assert keys == sorted(set(keys))  # strictly increasing within the channel
            epoch = await broker.epoch(channel)
            mine = [(o, f) for c, o, f in got if c == channel]
            assert mine == [(o, envelope(channel, epoch, o, event(n)))
                            for n, o in enumerate(offsets)]
        await broker.unsubscribe(channels[0])
        await broker.publish(channels, event(99))
        await collector.until(17)
        assert all(c != channels[0] for c, _, _ in collector.got[15:])
    finally:
        await broker.close()


async def test_history_and_replay_page_through_the_gap(cluster: Cluster, prefix: str) -> None:
    broker = await make(cluster, prefix, history_length=100)
    try:
        offsets = [(await broker.publish(["calls:r"], event(n)) or [""])[0] for n in range(10)]
        epoch = await broker.epoch("calls:r")
        history = await broker.history("calls:r", offsets[2], 100)
        assert [o for o, _ in history] == offsets[3:]
        assert history[0][1] == envelope("calls:r", epoch, offsets[3], event(3))
        first = await broker.replay("calls:r", epoch=epoch, after=offsets[2], limit=4)
        assert first.status is ReplayStatus.OK and not first.complete
        assert [o for o, _ in first.items] == offsets[3:7]
        rest = await broker.replay("calls:r", epoch=epoch, after=first.items[-1][0], limit=4)
        assert [o for o, _ in rest.items] == offsets[7:] and rest.complete
        latest = await broker.replay("calls:r", epoch=epoch, after=offsets[-1], limit=4)
        assert latest.status is ReplayStatus.OK and latest.items == []
        old = await broker.replay("calls:r", epoch=epoch, after="1-0", limit=4, max_age=60)
        assert old.status is ReplayStatus.TOO_OLD
        moved = await broker.replay("calls:r", epoch="other", after=offsets[2], limit=4)
        assert moved.status is ReplayStatus.EPOCH_CHANGED and moved.epoch == epoch
    finally:
        await broker.close()


async def test_replay_refuses_a_trimmed_gap(cluster: Cluster, prefix: str) -> None:
    broker = await make(cluster, prefix, history_length=10)
    try:
        offsets = [(await broker.publish(["calls:t"], event(n)) or [""])[0] for n in range(300)]
        epoch = await broker.epoch("calls:t")
        kept = await broker.history("calls:t", None, 1000)
        assert kept and len(kept) < 300 and kept[-1][0] == offsets[-1]
        gone = await broker.replay("calls:t", epoch=epoch, after=offsets[0], limit=1000)
        assert gone.status is ReplayStatus.TRIMMED and gone.items == []
        oldest = await broker.replay("calls:t", epoch=epoch, after=kept[0][0], limit=1000)
        assert oldest.status is ReplayStatus.OK
        assert [o for o, _ in oldest.items] == [o for o, _ in kept[1:]]
    finally:
        await broker.close()


async def test_no_history_means_any_gap_is_trimmed(cluster: Cluster, prefix: str) -> None:
    broker = await make(cluster, prefix, history_length=0)
    try:
        first = (await broker.publish(["calls:z"], event(1)) or [""])[0]
        await broker.publish(["calls:z"], event(2))
        epoch = await broker.epoch("calls:z")
        assert await broker.history("calls:z", None, 10) == []
        replay = await broker.replay("calls:z", epoch=epoch, after=first, limit=10)
        assert replay.status is ReplayStatus.TRIMMED
    finally:
        await broker.close()


async def test_event_id_is_published_once_across_instances(cluster: Cluster, prefix: str) -> None:
    one, two = await make(cluster, prefix), await make(cluster, prefix)
    collector = Collector()
    one.set_handler(collector)
    try:
        await one.subscribe("calls:d")
        assert await one.publish(["calls:d"], event(1), event_id="call-1") is not None
        assert await two.publish(["calls:d"], event(1), event_id="call-1") is None
        assert await two.publish(["calls:d"], event(2), event_id="call-2") is not None
        got = await collector.until(2)
        assert [f for _, _, f in got] == [
            envelope("calls:d", await one.epoch("calls:d"), o, event(n))
            for o, n in zip([o for _, o, _ in got], (1, 2))
        ]
        assert len(await one.history("calls:d", None, 10)) == 2
    finally:
        await one.close()
        await two.close()


async def test_failed_publish_clears_its_dedup_mark(cluster: Cluster, prefix: str) -> None:
    broker = await make(cluster, prefix)
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        await client.set(f"{prefix}{{calls:x}}:stream", "not a stream")
        with pytest.raises(BrokerError):
            await broker.publish(["calls:x"], event(1), event_id="retry-me")
        await client.delete(f"{prefix}{{calls:x}}:stream")
        assert await broker.publish(["calls:x"], event(1), event_id="retry-me") is not None
    finally:
        await client.aclose()
        await broker.close()


async def test_epoch_changes_after_flushall(cluster: Cluster, prefix: str) -> None:
    broker = await make(cluster, prefix)
    try:
        offset = (await broker.publish(["calls:f"], event(1)) or [""])[0]
        before = await broker.epoch("calls:f")
        await cluster.flushall()
        after = await broker.epoch("calls:f")
        assert after != before
        replay = await broker.replay("calls:f", epoch=before, after=offset, limit=10)
        assert replay.status is ReplayStatus.EPOCH_CHANGED and replay.epoch == after
    finally:
        await broker.close()


async def test_a_plain_client_ssubscribes_and_reads_the_envelope(
    cluster: Cluster, prefix: str
) -> None:
    broker = await make(cluster, prefix)
    node = (await owners(cluster, prefix, ["calls:p"]))["calls:p"]
    host, _, port = node.rpartition(":")
    client = Redis(host=host, port=int(port))
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(f"{prefix}{{calls:p}}")
        async with asyncio.timeout(WAIT):
            while (await pubsub.get_message(timeout=WAIT)) is None:
                pass  # the subscribe confirmation
        offset = (await broker.publish(["calls:p"], event(7)) or [""])[0]
        async with asyncio.timeout(WAIT):
            message = None
            while message is None:
                message = await pubsub.get_message(timeout=WAIT)
        assert message["type"] == "smessage"
        frame = orjson.loads(message["data"])
        assert frame == {"type": "event", "channel": "calls:p", "offset": offset,
                         "epoch": await broker.epoch("calls:p"), "event": orjson.loads(event(7))}
    finally:
        await pubsub.aclose()
        await client.aclose()
        await broker.close()


async def test_plain_pubsub_when_sharding_is_off(cluster: Cluster, prefix: str) -> None:
    broker = await make(cluster, prefix, sharded=False)
    collector = Collector()
    broker.set_handler(collector)
    outsider = Redis(host="127.0.0.1", port=cluster.ports[-1])
    pubsub = outsider.pubsub()
    try:
        channels = await spread(cluster, prefix)
        for channel in channels:
            await broker.subscribe(channel)
        assert broker.health()["sharded"] is False and broker.health()["links"] == 1
        await pubsub.subscribe(prefix + channels[0])
        offsets = await broker.publish(channels, event(3))
        got = await collector.until(3)
        assert sorted((c, o) for c, o, _ in got) == sorted(zip(channels, offsets or []))
        async with asyncio.timeout(WAIT):
            message = None
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=WAIT)
        assert orjson.loads(message["data"])["channel"] == channels[0]
    finally:
        await pubsub.aclose()
        await outsider.aclose()
        await broker.close()
