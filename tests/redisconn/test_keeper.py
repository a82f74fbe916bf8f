"""The pub/sub keeper against a real Redis: confirmations, messages and losses reported, every
channel subscribed again after a loss, a failing callback survived, close() bounded.

The brokers' suites cover the probe and catch-up through the keeper; these are the behaviours
of the keeper itself, with a private server where Redis is stopped or connections killed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from bridge.redisconn.keeper import Keeper
from tests.support.redis_server import PrivateRedis, private_redis

#: Safety net only: every wait ends as soon as what it awaits happens.
WAIT = 5.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))
T = TypeVar("T")


class Seen:
    """What a keeper reported, in bounded queues the test reads with timeouts."""

    def __init__(self) -> None:
        self.subscribed: asyncio.Queue[bytes] = asyncio.Queue(maxsize=100)
        self.messages: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue(maxsize=100)
        self.lost: asyncio.Queue[frozenset[bytes]] = asyncio.Queue(maxsize=100)

    def keeper(self, client: aioredis.Redis, *names: bytes, sharded: bool = False) -> Keeper:
        return Keeper(client, name="test", timeout=WAIT, channels=names, sharded=sharded,
                      on_message=lambda n, d: self.messages.put_nowait((n, d)),
                      on_subscribed=self.subscribed.put_nowait, on_lost=self.lost.put_nowait)


async def get(queue: asyncio.Queue[T]) -> T:
    async with asyncio.timeout(WAIT):
        return await queue.get()


@contextlib.asynccontextmanager
async def clients(server: PrivateRedis) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    sub, admin = aioredis.Redis.from_url(server.url), aioredis.Redis.from_url(server.url)
    try:
        yield sub, admin
    finally:
        await sub.aclose()
        await admin.aclose()


async def kill_pubsub(admin: aioredis.Redis) -> int:
    return int(await admin.client_kill_filter(_type="pubsub"))


async def test_every_subscribe_is_confirmed_again_after_a_loss() -> None:
    async with private_redis() as server, clients(server) as (sub, admin):
        seen = Seen()
        keeper = seen.keeper(sub, b"a", b"b")
        keeper.run()
        try:
            assert {await get(seen.subscribed), await get(seen.subscribed)} == {b"a", b"b"}
            assert await keeper.wait_connected(WAIT) and keeper.state == "connected"
            # Confirmed means Redis registered it: a publish now is heard.
            assert await admin.publish("a", b"one") == 1
            assert await get(seen.messages) == (b"a", b"one")

            assert await kill_pubsub(admin) == 1
            assert await get(seen.lost) == frozenset({b"a", b"b"})
            assert {await get(seen.subscribed), await get(seen.subscribed)} == {b"a", b"b"}
            assert await keeper.wait_connected(WAIT) and keeper.reconnects == 1
            assert await admin.publish("b", b"two") == 1
            assert await get(seen.messages) == (b"b", b"two")
        finally:
            await keeper.close()


async def test_connect_fails_at_once_and_run_retries_until_redis_is_back() -> None:
    async with private_redis() as server, clients(server) as (sub, admin):
        seen = Seen()
        keeper = seen.keeper(sub, b"a")
        await server.stop()
        try:
            with pytest.raises((OSError, aioredis.RedisError, TimeoutError)):
                await keeper.connect()
            assert keeper.state == "reconnecting"
            keeper.run()
            await asyncio.sleep(0.5)  # a few failed attempts
            assert not keeper.connected.is_set()
            await server.start()
            assert await get(seen.subscribed) == b"a"
            assert await keeper.wait_connected(WAIT)
            assert await admin.publish("a", b"back") == 1
            assert await get(seen.messages) == (b"a", b"back")
        finally:
            await keeper.close()


async def test_add_and_remove_while_connected() -> None:
    async with private_redis() as server, clients(server) as (sub, admin):
        seen = Seen()
        keeper = seen.keeper(sub, b"a")
        await keeper.connect()
        keeper.run()
        try:
            assert await get(seen.subscribed) == b"a"
            assert await keeper.add([b"b"]) is True
            assert await get(seen.subscribed) == b"b"
            await keeper.remove([b"a"])
            # Removed: nothing more is delivered.
            await admin.publish("a", b"gone")
            assert await admin.publish("b", b"kept") == 1
            assert await get(seen.messages) == (b"b", b"kept")
            assert keeper.channels == {b"b"}
            assert await admin.pubsub_numsub("a") == [(b"a", 0)]
        finally:
            await keeper.close()


@pytest.mark.parametrize("sharded", [False, True])
async def test_removed_and_added_again_is_confirmed_by_the_new_subscribe(sharded: bool) -> None:
    """The reply to the first SUBSCRIBE, or to the UNSUBSCRIBE, must not count: neither for
    the confirmation nor as Redis ending the subscription (what a moved slot looks like)."""
    async with private_redis() as server, clients(server) as (sub, admin):
        seen = Seen()
        keeper = seen.keeper(sub, b"x", sharded=sharded)
        await keeper.connect()
        keeper.run()
        try:
            assert await get(seen.subscribed) == b"x"
            await keeper.remove([b"x"])
            await keeper.add([b"x"])
            assert await get(seen.subscribed) == b"x"
            publish = admin.spublish if sharded else admin.publish
            assert await publish("x", b"again") == 1
            assert await get(seen.messages) == (b"x", b"again")
            assert seen.lost.empty() and keeper.reconnects == 0 and seen.subscribed.empty()
        finally:
            await keeper.close()


async def test_a_keeper_with_no_channel_holds_no_connection() -> None:
    async with private_redis() as server, clients(server) as (sub, admin):
        seen = Seen()
        keeper = seen.keeper(sub)
        keeper.run()
        try:
            await asyncio.sleep(0.3)
            assert await admin.client_list(_type="pubsub") == []
            assert await keeper.add([b"late"]) is False  # made by the connection to come
            assert await get(seen.subscribed) == b"late"
        finally:
            await keeper.close()


async def test_a_failing_callback_does_not_stop_the_keeper(
        caplog: pytest.LogCaptureFixture) -> None:
    async with private_redis() as server, clients(server) as (sub, admin):
        messages: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10)

        def broken(_name: bytes) -> None:
            raise RuntimeError("broken callback")

        keeper = Keeper(sub, name="test", timeout=WAIT, channels=[b"ch"],
                        on_message=lambda _n, data: messages.put_nowait(data),
                        on_subscribed=broken)
        try:
            with caplog.at_level(logging.ERROR, logger="bridge.redisconn.keeper"):
                keeper.run()
                assert await keeper.wait_connected(WAIT)
                assert await admin.publish("ch", b"still") == 1
                assert await get(messages) == b"still"
            assert any("on_subscribed failed" in r.getMessage() for r in caplog.records)
        finally:
            await keeper.close()


async def test_close_ends_a_reconnecting_reader_within_its_timeout() -> None:
    async with private_redis() as server, clients(server) as (sub, _admin):
        keeper = Keeper(sub, name="test", timeout=1.0, channels=[b"a"],
                        on_message=lambda _n, _d: None)
        keeper.run()
        assert await keeper.wait_connected(WAIT)
        await server.stop()
        await asyncio.sleep(0.3)  # the loss noticed, retrying
        loop = asyncio.get_running_loop()
        started = loop.time()
        await keeper.close()
        assert loop.time() - started < 1.5
        assert not keeper.running and keeper.state == "reconnecting"
        await keeper.close()  # idempotent
