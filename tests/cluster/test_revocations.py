"""bridge.cluster.revocations: memory and Redis revocations; Redis ones reach every instance."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.brokers.memory import MemoryBroker
from bridge.cluster.revocations import MemoryRevocations, RedisRevocations, Revocations
from bridge.downstream import protocol as p
from bridge.downstream.endpoint import ws_route
from bridge.downstream.hub import Hub
from tests.downstream.conftest import run_uvicorn

REDIS_URL = "redis://127.0.0.1:6379/0"
SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))
SECRET = "s" * 40


@contextlib.asynccontextmanager
async def redis_revocations(prefix: str) -> AsyncIterator[RedisRevocations]:
    revocations = RedisRevocations(REDIS_URL, prefix=prefix)
    await revocations.start()
    try:
        yield revocations
    finally:
        await revocations.close()


async def heard(revocations: Revocations) -> asyncio.Queue[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    revocations.on_revoke(queue.put_nowait)
    return queue


async def test_memory_revocation_lasts_until_the_given_time() -> None:
    revocations = MemoryRevocations()
    queue = await heard(revocations)
    await revocations.revoke("a", time.time() + 60)
    await revocations.revoke("b", time.time() - 1)  # already lapsed: notified, not kept
    assert revocations.is_revoked("a") and not revocations.is_revoked("b")
    assert not revocations.is_revoked("c")
    assert [queue.get_nowait(), queue.get_nowait()] == ["a", "b"]
    with pytest.raises(ValueError):
        await revocations.revoke("", time.time() + 60)


async def test_redis_revocation_is_seen_by_another_instance(prefix: str) -> None:
    async with redis_revocations(prefix) as one, redis_revocations(prefix) as two:
        queue = await heard(two)
        await one.revoke("jti-9", time.time() + 30)
        async with asyncio.timeout(5 * SCALE):
            assert await queue.get() == "jti-9"
        # Decided from the copy the notice updated: no Redis round trip.
        assert two.is_revoked("jti-9") and not two.is_revoked("jti-8")
        redis = aioredis.Redis.from_url(REDIS_URL)
        try:
            ttl = await redis.pttl(f"{prefix}revoked:jti-9")
        finally:
            await redis.aclose()
        assert 0 < ttl <= 30_000


async def test_revoke_on_one_instance_closes_the_connection_on_another(prefix: str) -> None:
    token = mint(SECRET, sub="crm-1", channels=["calls:acme"], token_id="jti-x", ttl=600)
    async with redis_revocations(prefix) as one, redis_revocations(prefix) as two:
        hub = Hub(MemoryBroker())
        route = ws_route(hub, jwt_secret=SECRET, leeway=0.0, auth_timeout=5.0,
                         max_message_bytes=4096, heartbeat=30.0, revocations=two)
        async with run_uvicorn(Starlette(routes=[route])) as server, \
                connect(server.ws_url + "/ws") as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            async with asyncio.timeout(5 * SCALE):
                assert orjson.loads(await ws.recv())["type"] == "welcome"
            await one.revoke("jti-x", time.time() + 600)
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(5 * SCALE):
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == p.TOKEN_REVOKED
