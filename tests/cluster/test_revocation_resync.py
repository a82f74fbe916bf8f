"""Every instance decides from its own copy of the revoked token ids: loaded at start and after
each resubscribe (so revocations missed while away still close its clients), kept through a
Redis outage, written back when Redis lost them, and never a Redis round trip per connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.brokers.memory import MemoryBroker
from bridge.cluster.revocation_wire import BARE_NOTICE_SPAN, parse_notice
from bridge.cluster.revocations import MemoryRevocations, RedisRevocations, RevokedIds
from bridge.downstream import protocol as p
from bridge.downstream.endpoint import WsApp, ws_route
from bridge.downstream.hub import Hub
from bridge.downstream.route import Route
from tests.cluster.test_revocations import SCALE, SECRET
from tests.downstream.conftest import RunningServer, run_uvicorn
from tests.support.redis_cluster import binaries_missing, redis_cluster
from tests.support.redis_server import PrivateRedis, private_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 10 * SCALE


@contextlib.asynccontextmanager
async def started(revocations: RedisRevocations) -> AsyncIterator[RedisRevocations]:
    await revocations.start()
    try:
        yield revocations
    finally:
        await revocations.close()


@contextlib.asynccontextmanager
async def serving(revocations: RedisRevocations) -> AsyncIterator[tuple[RunningServer, Route]]:
    """A websocket endpoint using ``revocations``, under real uvicorn."""
    route = ws_route(Hub(MemoryBroker()), jwt_secret=SECRET, leeway=0.0, auth_timeout=5.0,
                     max_message_bytes=4096, heartbeat=30.0, revocations=revocations,
                     max_connections_per_ip=10_000)
    assert isinstance(route.app, WsApp)
    async with run_uvicorn(Starlette(routes=[route])) as server:
        yield server, route.app.route


@contextlib.asynccontextmanager
async def client(server: RunningServer, token_id: str) -> AsyncIterator[ClientConnection]:
    token = mint(SECRET, sub=f"crm-{token_id}", channels=["calls:acme"], token_id=token_id,
                 ttl=600)
    async with connect(server.ws_url + "/ws") as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        async with asyncio.timeout(WAIT):
            assert orjson.loads(await ws.recv())["type"] == "welcome"
        yield ws


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(WAIT):
            while True:
                await ws.recv()
    return info.value.rcvd.code if info.value.rcvd is not None else None


async def still_open(ws: ClientConnection) -> None:
    await ws.send(orjson.dumps({"type": "ping", "id": 1}).decode())
    async with asyncio.timeout(WAIT):
        assert orjson.loads(await ws.recv()) == {"type": "pong", "id": 1}


# -- the local copy ----------------------------------------------------------------------------

@pytest.fixture(params=["redis", "cluster"])
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "redis":
        yield REDIS_URL
        return
    if binaries_missing():
        pytest.skip(binaries_missing() or "")
    async with redis_cluster() as cluster:
        yield cluster.url


async def test_a_new_instance_loads_every_live_revocation(url: str, prefix: str) -> None:
    ids = [f"jti-{i}" for i in range(1200)]
    async with started(RedisRevocations(url, prefix=prefix)) as one:
        for token_id in ids[:3]:
            await one.revoke(token_id, time.time() + 60)
        await one.revoke(ids[5], time.time() - 1)  # lapsed: not stored
        async with started(RedisRevocations(url, prefix=prefix)) as two:
            assert two.synced
            assert {t for t in ids if two.is_revoked(t)} == set(ids[:3])


async def test_memory_revocations_are_always_synced() -> None:
    revocations = MemoryRevocations()
    await revocations.revoke("a", time.time() + 60)
    await revocations.revoke("b", time.time() - 1)
    assert revocations.synced
    assert {t for t in ["a", "b", "c"] if revocations.is_revoked(t)} == {"a"}


def test_revoked_ids_only_grow_until_they_lapse() -> None:
    ids = RevokedIds()
    now = time.time()
    assert ids.add("a", now + 10) and not ids.add("a", now + 5)  # the later time stays
    assert ids.contains("a", now + 7)
    assert ids.merge({"a": now + 20, "b": now + 1, "c": now - 1}, now) == ["b"]
    assert ids.contains("a", now + 15) and not ids.contains("c", now)
    ids.prune(now + 2)
    assert len(ids) == 1


@pytest.mark.parametrize("payload, expected", [
    (b'{"jti":"j1","until":1900000000.5}', ("j1", 1900000000.5)),
    (b"bare-id", ("bare-id", 1000.0 + BARE_NOTICE_SPAN)),
    (b'{"jti":"","until":1}', None),
    (b'{"jti":"j1","until":true}', None),
    (b'{"jti":"j1"}', None),
    (b"\xff\xfe", None),
    (b"x" * 201, None),
])
def test_notices_are_read_strictly(payload: bytes, expected: tuple[str, float] | None) -> None:
    assert parse_notice(payload, 1000.0) == expected


# -- two instances -----------------------------------------------------------------------------

async def acl(server: PrivateRedis, *args: str) -> Any:
    admin = aioredis.Redis.from_url(server.url)
    try:
        return await admin.execute_command(*args)
    finally:
        await admin.aclose()


async def test_a_revocation_missed_while_the_listener_was_away_closes_the_client() -> None:
    async with private_redis() as server:
        # Instance B connects as its own Redis user, so the test can keep exactly B out.
        await acl(server, "ACL", "SETUSER", "bee", "on", ">bee-pass", "~*", "&*", "+@all")
        b_url = f"redis://bee:bee-pass@127.0.0.1:{server.port}/0"
        async with started(RedisRevocations(server.url, prefix="cb:")) as a, \
                started(RedisRevocations(b_url, prefix="cb:")) as b, \
                serving(b) as (web, _), \
                client(web, "jti-gone") as gone, client(web, "jti-kept") as kept:
            await acl(server, "ACL", "SETUSER", "bee", "off")
            assert await acl(server, "CLIENT", "KILL", "USER", "bee") >= 1
            # B is disconnected and cannot come back: it cannot hear this notification.
            await a.revoke("jti-gone", time.time() + 600)
            await acl(server, "ACL", "SETUSER", "bee", "on")
            # B's listener subscribes again, checks its open tokens, closes the revoked one.
            assert await close_code(gone) == p.TOKEN_REVOKED
            await still_open(kept)
            assert b.is_revoked("jti-gone")


async def refused_with(server: RunningServer, token_id: str) -> int | None:
    """Connect with a token of ``token_id``; the close code, None when welcomed."""
    token = mint(SECRET, sub=f"crm-{token_id}", channels=["calls:acme"], token_id=token_id,
                 ttl=600)
    async with connect(server.ws_url + "/ws", open_timeout=WAIT) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        try:
            async with asyncio.timeout(WAIT):
                first = orjson.loads(await ws.recv())
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        assert first["type"] == "welcome"
        return None


async def test_an_outage_decides_from_the_last_copy() -> None:
    async with private_redis() as server:
        async with started(RedisRevocations(server.url, prefix="cb:", timeout=2.0)) as b, \
                serving(b) as (web, _), client(web, "jti-kept") as kept:
            await b.revoke("jti-gone", time.time() + 600)
            await server.stop()
            # Redis is gone: the revoked token is still refused, the others still admitted.
            assert await refused_with(web, "jti-gone") == p.TOKEN_REVOKED
            assert await refused_with(web, "jti-new") is None
            await still_open(kept)


async def test_an_instance_that_never_loaded_refuses_with_retry_later_until_it_has() -> None:
    async with private_redis() as server:
        await server.stop()
        revocations = RedisRevocations(server.url, prefix="cb:", timeout=0.5)
        async with started(revocations) as b, serving(b) as (web, _):
            assert not b.synced
            assert await refused_with(web, "jti-1") == p.TRY_AGAIN_LATER
            assert p.reconnect_advice(p.TRY_AGAIN_LATER) == "backoff"
            await server.start()
            async with asyncio.timeout(WAIT * 2):
                while not b.synced:
                    await asyncio.sleep(0.05)
            assert await refused_with(web, "jti-1") is None


async def test_revocations_redis_lost_are_written_back() -> None:
    async with private_redis() as server:
        async with started(RedisRevocations(server.url, prefix="cb:", timeout=2.0)) as b:
            await b.revoke("jti-gone", time.time() + 600)
            await server.restart()  # empty: the revocation is gone from Redis
            async with asyncio.timeout(WAIT * 2):
                while b.resyncs < 2:
                    await asyncio.sleep(0.05)
            async with started(RedisRevocations(server.url, prefix="cb:")) as fresh:
                assert fresh.is_revoked("jti-gone")
            assert await acl(server, "EXISTS", "cb:revoked:jti-gone") == 1


async def test_a_reconnect_storm_never_admits_a_revoked_token() -> None:
    """1,000 connections at once, half with a revoked token: every revoked one is refused
    with 4004 and every other one admitted, with a command pool far smaller than the storm."""
    async with private_redis() as server:
        async with started(RedisRevocations(server.url, prefix="cb:", pool_size=2)) as b, \
                serving(b) as (web, _):
            await b.revoke("jti-revoked", time.time() + 600)
            ids = ["jti-revoked" if i % 2 else f"jti-ok-{i}" for i in range(1000)]
            async with asyncio.timeout(WAIT * 12):
                codes = await asyncio.gather(*(refused_with(web, t) for t in ids))
            outcomes = {(t == "jti-revoked", code) for t, code in zip(ids, codes)}
            assert outcomes == {(True, p.TOKEN_REVOKED), (False, None)}
