"""Consumer groups on a real 3-node Redis Cluster (``redis-cluster://``): two consumers of one
group share channels served by different nodes; entries one leaves unacked go to the other."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from redis.asyncio.cluster import RedisCluster

from bridge.brokers.redis.cluster import RedisClusterBroker
from bridge.consumer.groups import Delivery, GroupConsumer
from tests.support.redis_cluster import Cluster, binaries_missing, redis_cluster

pytestmark = [
    pytest.mark.skipif(binaries_missing() is not None,
                       reason=f"Redis Cluster tests need redis binaries: {binaries_missing()}"),
]

WAIT = 30.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with redis_cluster() as started:
        yield started


async def spread(cluster: Cluster, prefix: str) -> list[str]:
    """Channels whose streams are served by three different nodes."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        await client.initialize()
        chosen: dict[str, str] = {}
        for channel in (f"calls:t{n}" for n in range(64)):
            node = client.get_node_from_key(f"{prefix}{{{channel}}}:stream").name
            chosen.setdefault(node, channel)
    finally:
        await client.aclose()
    assert len(chosen) == 3
    return list(chosen.values())


async def test_two_consumers_share_channels_across_nodes(cluster: Cluster) -> None:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    channels = await spread(cluster, prefix)
    broker = RedisClusterBroker(cluster.url, prefix=prefix)
    await broker.start()
    options = dict(group="hooks", prefix=prefix, claim_after=0.5, block=0.1, batch=5)
    first = GroupConsumer(cluster.url, channels, consumer="a", **options)  # type: ignore[arg-type]
    second = GroupConsumer(cluster.url, channels, consumer="b", **options)  # type: ignore[arg-type]
    seen: dict[str, list[Delivery]] = {"a": [], "b": []}
    acked: set[tuple[str, str]] = set()

    async def work(consumer: GroupConsumer, hold: int | None) -> None:
        async for delivery in consumer:
            seen[consumer.consumer].append(delivery)
            if hold is None:
                await consumer.ack(delivery)
                acked.add((delivery.channel, delivery.offset))
            elif len(seen[consumer.consumer]) == hold:
                await consumer.close()  # gone with what it held: "b" claims it

    try:
        async with first, second:
            published: set[tuple[str, str]] = set()

            async def publish(numbers: range) -> None:
                for n in numbers:
                    channel = channels[n % 3]
                    [offset] = await broker.publish([channel],
                                                    orjson.dumps({"id": f"ev-{n}"})) or []
                    published.add((channel, offset))

            tasks = [asyncio.ensure_future(work(first, 3))]
            await publish(range(6))
            async with asyncio.timeout(WAIT):
                await tasks[0]  # "a" took 3 and is gone
            tasks.append(asyncio.ensure_future(work(second, None)))
            await publish(range(6, 30))
            async with asyncio.timeout(WAIT):
                while not published <= acked:
                    await asyncio.sleep(0.05)
            await first.close()
            await second.close()
            await asyncio.gather(*tasks)
    finally:
        await broker.close()
    assert len(seen["a"]) == 3
    taken = {(d.channel, d.offset) for d in seen["a"]}
    # What "a" took, and what it had read but not yet handed out, came to "b" a second time.
    again = {(d.channel, d.offset) for d in seen["b"] if d.deliveries == 2}
    assert taken <= again
    assert {d.deliveries for d in seen["b"]} <= {1, 2}
    assert len(seen["b"]) == len(published)
    assert all(d.envelope.channel == d.channel and d.envelope.event["id"].startswith("ev-")
               for d in seen["b"])
