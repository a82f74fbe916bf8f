"""Consumer: following channels from Redis, positions, gaps, patterns, restarts, a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.consumer.follow import Consumer
from bridge.consumer.items import Envelope, Gap, Position
from bridge.consumer.position import FileStore, RedisStore
from bridge.redisconn.clients import command_client
from tests.consumer.publishing import REDIS_URL, eventually, numbers, publish, take
from tests.support.redis_cluster import binaries_missing, redis_cluster
from tests.support.redis_server import private_redis


async def test_follows_from_latest_in_order_and_commits(
        prefix: str, client: aioredis.Redis, tmp_path: Path) -> None:
    await publish(client, prefix, "calls:acme:101", 0)  # before the start: not yielded
    consumer = Consumer(REDIS_URL, ["calls:acme:101", "calls:acme"], prefix=prefix,
                        store=FileStore(tmp_path / "pos.json"), block=0.5)
    async with consumer:
        for n in range(1, 6):
            await publish(client, prefix, "calls:acme:101", n)
        items = await take(consumer, 5)
        assert numbers(items) == [1, 2, 3, 4, 5]
        await consumer.commit(items[2])
    saved = await FileStore(tmp_path / "pos.json").load()
    assert saved["calls:acme:101"] == items[2].position  # type: ignore[union-attr]
    # Restarted from the store: what followed the commit, nothing before it.
    async with Consumer(REDIS_URL, ["calls:acme:101"], prefix=prefix,
                        store=FileStore(tmp_path / "pos.json"), block=0.5) as again:
        assert numbers(await take(again, 2)) == [4, 5]


async def test_earliest_and_given_start_and_auto_commit(
        prefix: str, client: aioredis.Redis) -> None:
    offsets = [await publish(client, prefix, "calls:acme", n) for n in range(4)]
    async with Consumer(REDIS_URL, ["calls:acme"], prefix=prefix, start="earliest",
                        block=0.5) as consumer:
        first = await take(consumer, 4)
        assert numbers(first) == [0, 1, 2, 3]
    epoch = first[0].epoch
    store = RedisStore(REDIS_URL, prefix + "positions")
    async with Consumer(REDIS_URL, ["calls:acme"], prefix=prefix, store=store, commit_every=1,
                        start={"calls:acme": Position(epoch, offsets[1])},
                        block=0.5) as consumer:
        assert numbers(await take(consumer, 2)) == [2, 3]
    check = RedisStore(REDIS_URL, prefix + "positions")
    assert await check.load() == {"calls:acme": Position(epoch, offsets[3])}
    await check.close()


async def test_trimmed_position_gives_a_gap_then_what_history_holds(
        prefix: str, client: aioredis.Redis) -> None:
    offsets = [await publish(client, prefix, "calls:acme", n, history_length=0)
               for n in range(3)]
    epoch = (await client.get(prefix + "{calls:acme}:epoch")).decode()
    async with Consumer(REDIS_URL, ["calls:acme"], prefix=prefix, block=0.5,
                        start={"calls:acme": Position(epoch, offsets[0])}) as consumer:
        gap = (await take(consumer, 1))[0]
        assert gap == Gap("calls:acme", "trimmed", epoch)
        await publish(client, prefix, "calls:acme", 3)
        assert numbers(await take(consumer, 1)) == [3]


async def test_tenant_pattern_picks_up_a_new_extension(
        prefix: str, client: aioredis.Redis) -> None:
    await publish(client, prefix, "calls:acme:101", 0)
    await publish(client, prefix, "calls:other:101", 0)
    await publish(client, prefix, "calls:acme", 0)  # not an extension channel
    async with Consumer(REDIS_URL, prefix=prefix, tenant_patterns=["calls:acme:*"],
                        rescan=0.2, block=0.5) as consumer:
        await eventually(lambda: "calls:acme:101" in consumer.positions)
        await publish(client, prefix, "calls:acme:101", 1)
        await publish(client, prefix, "calls:acme:102", 2)  # a new extension: from its first
        await publish(client, prefix, "calls:other:102", 3)
        items = await take(consumer, 2)
        assert sorted((i.channel, n) for i, n in zip(items, numbers(items))) == [
            ("calls:acme:101", 1), ("calls:acme:102", 2)]


async def test_epoch_change_and_restart_of_redis() -> None:
    async with private_redis() as server:
        redis = aioredis.Redis.from_url(server.url)
        try:
            await publish(redis, "cb:", "calls:acme", 0)
            async with Consumer(server.url, ["calls:acme"], prefix="cb:", block=0.5) as consumer:
                await eventually(lambda: "calls:acme" in consumer.positions)
                old = consumer.positions["calls:acme"].epoch
                await publish(redis, "cb:", "calls:acme", 1)
                assert numbers(await take(consumer, 1)) == [1]
                # FLUSHALL while the consumer waits: a gap, then the new epoch from its first.
                await redis.flushall()
                await publish(redis, "cb:", "calls:acme", 2)
                await publish(redis, "cb:", "calls:acme", 3)
                items = await take(consumer, 3)
                assert numbers(items) == ["epoch_changed", 2, 3]
                assert items[0].epoch != old and items[1].epoch == items[0].epoch
                # Redis restarted empty while the consumer is away: the same, after reconnecting.
                await server.stop(kill=True)
                await server.start()
                await redis.aclose()
                redis = aioredis.Redis.from_url(server.url)
                await publish(redis, "cb:", "calls:acme", 4)
                assert numbers(await take(consumer, 2)) == ["epoch_changed", 4]
        finally:
            await redis.aclose()


@pytest.mark.skipif(binaries_missing() is not None, reason="redis-server/redis-cli missing")
async def test_follows_on_a_cluster() -> None:
    async with redis_cluster() as cluster:
        client = command_client(cluster.url, timeout=5.0)
        channels = [f"calls:acme:{n}" for n in range(101, 106)]
        try:
            async with Consumer(cluster.url, channels, prefix="cb:", block=0.5) as consumer:
                await eventually(lambda: len(consumer.positions) == len(channels))
                for n, channel in enumerate(channels * 2):
                    await publish(client, "cb:", channel, n)
                items = await take(consumer, 10)
                assert all(isinstance(i, Envelope) for i in items)
                for channel in channels:
                    mine = [n for i, n in zip(items, numbers(items)) if i.channel == channel]
                    assert len(mine) == 2 and mine[0] < mine[1]
                await cluster.flushall()
                await publish(client, "cb:", channels[0], 99)
                assert numbers(await take(consumer, 2)) == ["epoch_changed", 99]
        finally:
            await client.aclose()
