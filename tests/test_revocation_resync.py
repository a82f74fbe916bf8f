"""Revocations missed while an instance's listener was away still close its clients: after each
subscribe the instance checks its open connections' token ids against the revocation keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.auth import mint
from bridge.brokers.memory import MemoryBroker
from bridge.downstream import protocol as p
from bridge.downstream.endpoint import Route, WsApp, ws_route
from bridge.hub import Hub
from bridge.redis_client import drop_prefix
from bridge.redis_listener import ChannelListener
from bridge.revocation import CHUNK, MemoryRevocations, RedisRevocations
from tests.cluster import binaries_missing, redis_cluster
from tests.redis_server import PrivateRedis, private_redis

from .downstream.conftest import RunningServer, run_uvicorn
from .test_revocation import SCALE, SECRET

REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 10 * SCALE


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-resync-{uuid.uuid4().hex}:"
    yield name
    await drop_prefix(REDIS_URL, name)


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
                     max_message_bytes=4096, heartbeat=30.0, revocations=revocations)
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


# -- the batch check ---------------------------------------------------------------------------

@pytest.fixture(params=["redis", "cluster"])
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "redis":
        yield REDIS_URL
        return
    if binaries_missing():
        pytest.skip(binaries_missing() or "")
    async with redis_cluster() as cluster:
        yield cluster.url


async def test_revoked_among_finds_the_revoked_ids_across_chunks(url: str, prefix: str) -> None:
    ids = [f"jti-{i}" for i in range(2 * CHUNK + 200)]
    revoked = {ids[0], ids[CHUNK + 3], ids[-1]}
    async with started(RedisRevocations(url, prefix=prefix)) as revocations:
        for token_id in revoked:
            await revocations.revoke(token_id, time.time() + 60)
        await revocations.revoke(ids[5], time.time() - 1)  # lapsed: no key
        assert await revocations.revoked_among(ids + [ids[0]]) == revoked
        assert await revocations.revoked_among([]) == set()


async def test_memory_revoked_among_and_no_resync() -> None:
    revocations = MemoryRevocations()
    runs: list[None] = []

    async def resync() -> None:
        runs.append(None)

    revocations.on_resync(resync)
    await revocations.revoke("a", time.time() + 60)
    await revocations.revoke("b", time.time() - 1)
    assert await revocations.revoked_among(["a", "b", "c"]) == {"a"}
    assert runs == []  # nothing can be missed in one process


# -- the listener ------------------------------------------------------------------------------

async def test_listener_calls_on_listening_after_each_subscribe() -> None:
    async with private_redis() as server:
        sub = aioredis.Redis.from_url(server.url)
        admin = aioredis.Redis.from_url(server.url)
        calls: asyncio.Queue[None] = asyncio.Queue(maxsize=10)
        messages: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10)
        listener = ChannelListener(sub, "ch", messages.put_nowait, what="test", timeout=WAIT,
                                   on_listening=lambda: calls.put_nowait(None))
        try:
            await listener.start()
            async with asyncio.timeout(WAIT):
                await calls.get()
            # Subscribed means confirmed by Redis: a publish now is heard.
            assert await admin.publish("ch", b"one") == 1
            async with asyncio.timeout(WAIT):
                assert await messages.get() == b"one"
            assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
            async with asyncio.timeout(WAIT):
                await calls.get()
            assert await admin.publish("ch", b"two") == 1
            async with asyncio.timeout(WAIT):
                assert await messages.get() == b"two"
        finally:
            await listener.close()
            await sub.aclose()
            await admin.aclose()


async def test_a_failing_on_listening_does_not_stop_the_listener(
        caplog: pytest.LogCaptureFixture) -> None:
    async with private_redis() as server:
        sub = aioredis.Redis.from_url(server.url)
        admin = aioredis.Redis.from_url(server.url)
        messages: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10)

        def broken() -> None:
            raise RuntimeError("broken callback")

        listener = ChannelListener(sub, "ch", messages.put_nowait, what="test", timeout=WAIT,
                                   on_listening=broken)
        try:
            with caplog.at_level(logging.ERROR, logger="bridge.redis_listener"):
                await listener.start()
                assert await admin.publish("ch", b"still") == 1
                async with asyncio.timeout(WAIT):
                    assert await messages.get() == b"still"
            assert any("on_listening failed" in r.getMessage() for r in caplog.records)
        finally:
            await listener.close()
            await sub.aclose()
            await admin.aclose()


# -- resync runs -------------------------------------------------------------------------------

async def test_resyncs_never_overlap_and_one_asked_during_a_run_follows_it(prefix: str) -> None:
    async with started(RedisRevocations(REDIS_URL, prefix=prefix)) as revocations:
        release = asyncio.Event()
        started_runs: asyncio.Queue[None] = asyncio.Queue(maxsize=10)
        running = 0
        most = 0

        async def resync() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            started_runs.put_nowait(None)
            try:
                async with asyncio.timeout(WAIT):
                    await release.wait()
            finally:
                running -= 1

        revocations.on_resync(resync)
        # What the listener calls after each subscribe; three arrive during the first run.
        revocations._resync_soon()
        async with asyncio.timeout(WAIT):
            await started_runs.get()
        revocations._resync_soon()
        revocations._resync_soon()
        release.set()
        async with asyncio.timeout(WAIT):
            await started_runs.get()  # exactly one more run
        task = revocations._resync
        assert task is not None
        async with asyncio.timeout(WAIT):
            await task
        assert started_runs.empty() and most == 1


async def test_close_cancels_a_running_resync(prefix: str) -> None:
    revocations = RedisRevocations(REDIS_URL, prefix=prefix)
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def resync() -> None:
        entered.set()
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with started(revocations):
        revocations.on_resync(resync)
        revocations._resync_soon()
        async with asyncio.timeout(WAIT):
            await entered.wait()
    assert cancelled.is_set()


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
            assert await b.is_revoked("jti-gone")


async def test_a_failed_resync_leaves_connections_open(caplog: pytest.LogCaptureFixture) -> None:
    async with private_redis() as server:
        async with started(RedisRevocations(server.url, prefix="cb:", timeout=2.0)) as b, \
                serving(b) as (web, route), client(web, "jti-1") as ws:
            await server.stop()
            with caplog.at_level(logging.WARNING, logger="bridge.downstream.endpoint"):
                await route.resync()  # Redis gone: fails open
            assert any("revocation resync failed" in r.getMessage() for r in caplog.records)
            await still_open(ws)
