"""Several callbridge instances on one Redis: leases, takeover, graceful shutdown.

The leases are tested directly against the shared Redis (own key prefix); the instances run as
real ``python -m bridge serve`` processes against the in-process simulator and a private Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.cluster.leases import LeasedRunner, LeaseStore
from bridge.redisconn.clients import drop_prefix
from tests.scenarios.conftest import (
    ACCOUNT,
    APP_ID,
    APP_SECRET,
    EXTENSIONS,
    JWT_SECRET,
    SCALE,
    TENANT,
    eventually,
)
from tests.support.redis_server import private_redis
from tests.support.serve_process import ServeProcess

SHARED_REDIS = "redis://127.0.0.1:6379/0"
STREAM = f"antbuddy/{TENANT}/{ACCOUNT}"
CHANNELS = [f"calls:{TENANT}", f"system:{TENANT}"]


# -- leases, directly ------------------------------------------------------------------------

@pytest.fixture
async def lease_prefix() -> AsyncIterator[str]:
    prefix = f"cbtest-lease-{secrets.token_hex(4)}:"
    yield prefix
    await drop_prefix(SHARED_REDIS, prefix)


async def test_one_holder_renewal_release_and_expiry(lease_prefix):
    a = LeaseStore(SHARED_REDIS, prefix=lease_prefix, ttl=0.5, instance_id="inst-a")
    b = LeaseStore(SHARED_REDIS, prefix=lease_prefix, ttl=0.5, instance_id="inst-b")
    try:
        assert await a.acquire("s1")
        assert not await b.acquire("s1")
        assert not await b.renew("s1"), "renewal must not steal another holder's lease"
        assert await b.holder("s1") == "inst-a"
        assert await a.renew("s1")
        assert not await b.release("s1"), "release must not delete another holder's lease"
        assert await a.release("s1")
        assert await b.acquire("s1")
        # b stops renewing: the lease expires and a takes it over
        await eventually(lambda: a.acquire("s1"), 5, "the expired lease to be free")
        assert await a.holder("s1") == "inst-a"
        assert not await b.renew("s1")
    finally:
        await a.close()
        await b.close()


def idle_stream() -> tuple[asyncio.Event, asyncio.Event, Callable[[], Awaitable[None]]]:
    """A stream that runs until cancelled: the events set when it started and stopped."""
    running, stopped = asyncio.Event(), asyncio.Event()

    async def stream() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    return running, stopped, stream


async def test_runner_stops_its_stream_when_the_lease_is_taken(lease_prefix):
    store = LeaseStore(SHARED_REDIS, prefix=lease_prefix, ttl=0.6, instance_id="inst-a")
    other = LeaseStore(SHARED_REDIS, prefix=lease_prefix, ttl=30, instance_id="inst-b")
    running, stopped, stream = idle_stream()
    runner = LeasedRunner(store, "s2", stream)
    task = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(5 * SCALE):
            await running.wait()
        assert runner.snapshot()["state"] == "held"
        # another instance overwrites the key (as after an expiry during a Redis outage)
        client = aioredis.Redis.from_url(SHARED_REDIS)
        await client.set(store.key("s2"), "inst-b:x", px=30_000)
        await client.aclose()
        async with asyncio.timeout(5 * SCALE):
            await stopped.wait()
        assert runner.snapshot()["state"] == "standby"
        await eventually(lambda: runner.snapshot()["held_by"] == "inst-b", 5,
                         "the runner to report the new holder")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        await other.close()


async def test_a_lost_lease_keeps_the_stream_until_the_new_holder_runs_it(lease_prefix):
    """Redis came back and another instance took the lease first: the stream runs on here
    until the new holder has marked it live, so no signal falls between the two."""
    store = LeaseStore(SHARED_REDIS, prefix=lease_prefix, ttl=6.0, instance_id="inst-a")
    running, stopped, stream = idle_stream()
    runner = LeasedRunner(store, "s3", stream)
    task = asyncio.create_task(runner.run())
    client = aioredis.Redis.from_url(SHARED_REDIS)
    try:
        async with asyncio.timeout(5 * SCALE):
            await running.wait()
        await client.set(store.key("s3"), "inst-b:x", px=30_000)
        await eventually(lambda: runner.snapshot()["state"] == "standby", 5, "the loss noticed")
        await asyncio.sleep(0.5)
        assert not stopped.is_set(), "stopped before the new holder runs the stream"
        await client.set(store.key("s3"), "inst-b:x+live", px=30_000)
        async with asyncio.timeout(2 * SCALE):
            await stopped.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await store.close()


# -- real processes ----------------------------------------------------------------------------

class Instance(ServeProcess):
    async def readyz(self) -> dict[str, Any]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            return (await http.get(f"{self.url}/readyz")).json()


@contextlib.asynccontextmanager
async def instances(sim_url: str, redis_url: str, prefix: str, count: int, *,
                    ttl: float = 2.0, broker: dict[str, Any] | None = None
                    ) -> AsyncIterator[list[Instance]]:
    with tempfile.TemporaryDirectory(prefix="callbridge-it-") as directory:
        running: list[Instance] = []
        try:
            for n in range(count):
                running.append(await _spawn(directory, n, sim_url, redis_url, prefix, ttl,
                                            broker or {}))
            yield running
        finally:
            for instance in running:
                if instance.proc.returncode is None:
                    instance.proc.kill()
                    await instance.proc.wait()


async def _spawn(directory: str, n: int, sim_url: str, redis_url: str, prefix: str,
                 ttl: float, broker: dict[str, Any]) -> Instance:
    broker_lines = "".join(f"{k} = {v!r}\n" for k, v in broker.items())
    config = f"""
[server]
host = "127.0.0.1"
port = 0
shutdown_timeout = 5
[broker]
url = "{redis_url}"
prefix = "{prefix}"
probe_interval = 0.5
{broker_lines}
[auth]
jwt_secret = "{JWT_SECRET}"
[lease]
ttl = {ttl}
instance_id = "inst-{n}"
[upstream]
reconnect_initial = 0.1
reconnect_max = 0.5
[[antbuddy]]
tenant = "{TENANT}"
oapi_url = "{sim_url}"
ws_url = "{sim_url.replace('http://', 'ws://')}"
app_id = "{APP_ID}"
app_secret = "{APP_SECRET}"
account_id = "{ACCOUNT}"
"""
    path = os.path.join(directory, f"inst-{n}.toml")
    with open(path, "w") as f:
        f.write(config)
    log_path = os.path.join(directory, f"inst-{n}.log")
    return await Instance.start(path, log_path, what=f"instance {n}")


class Client:
    """A websocket client on one instance, collecting event frames and its close code."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, instance: Instance) -> Client:
        self._task = asyncio.create_task(self._run(instance))
        async with asyncio.timeout(10 * SCALE):
            await self.subscribed.wait()
        return self

    async def _run(self, instance: Instance) -> None:
        token = mint(JWT_SECRET, sub="it-client", channels=CHANNELS, ttl=600)
        async with connect(f"{instance.ws_url}/ws", proxy=None, compression=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            await ws.send(orjson.dumps({"type": "subscribe", "id": 1,
                                        "channels": CHANNELS}).decode())
            try:
                async for frame in ws:
                    message = orjson.loads(frame)
                    if message["type"] == "event":
                        self.events.append(message)
                    elif message["type"] == "subscribed":
                        self.subscribed.set()
            except ConnectionClosed:
                pass
            self.close_code = ws.close_code

    def ids(self, channel: str = f"calls:{TENANT}") -> list[str]:
        return [m["event"]["id"] for m in self.events if m["channel"] == channel]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def lease_states(group: list[Instance]) -> list[str]:
    states = []
    for instance in group:
        body = await instance.readyz()
        states.append(body["streams"][0]["lease"]["state"])
    return states


async def held_by_one(group: list[Instance]) -> bool:
    return sorted(await lease_states(group)) == ["held"] + ["standby"] * (len(group) - 1)


async def holder_index(group: list[Instance]) -> int:
    return (await lease_states(group)).index("held")


def no_duplicates(ids: list[str]) -> bool:
    return len(ids) == len(set(ids))


@pytest.mark.slow
async def test_two_instances_share_redis_and_survive_a_killed_holder(start_simulator):
    prefix = f"cbtest-{secrets.token_hex(4)}:"
    simulator, sim = await start_simulator(extensions=EXTENSIONS, time_scale=0.05, seed=5)
    async with private_redis() as redis_server, \
            instances(sim.url, redis_server.url, prefix, 2) as group:
        await eventually(lambda: held_by_one(group), 15, "exactly one holder of the stream")
        clients = [await Client().start(instance) for instance in group]
        simulator.start_traffic(20.0)
        await eventually(lambda: all(len(c.ids()) >= 30 for c in clients), 20, "traffic")
        await simulator.stop_traffic()
        first = await holder_index(group)
        published = lambda: group[first].readyz()
        await eventually(lambda: _settled(clients, published), 10, "both clients caught up")
        a, b = clients[0].ids(), clients[1].ids()
        assert no_duplicates(a) and no_duplicates(b)
        assert set(a) == set(b)
        assert await held_by_one(group)

        # kill -9 the holder: the other takes the stream over within the lease ttl
        group[first].proc.kill()
        await group[first].proc.wait()
        survivor, client = group[1 - first], clients[1 - first]
        await eventually(lambda: _holds(survivor), 10, "the survivor to take the stream over")
        before = len(client.ids())
        simulator.start_traffic(20.0)
        await eventually(lambda: len(client.ids()) >= before + 20, 20, "events after takeover")
        await simulator.stop_traffic()
        assert no_duplicates(client.ids()), "an event was delivered twice across the takeover"
        for c in clients:
            await c.close()


async def _settled(clients: list[Client], readyz: Any) -> bool:
    body = await readyz()
    published = body["pipeline"]["published"]
    # every published call event reached both clients (system notices travel separately)
    return all(len(c.ids()) + len(c.ids(f"system:{TENANT}")) >= published for c in clients) \
        and len({len(c.ids()) for c in clients}) == 1


async def _holds(instance: Instance) -> bool:
    body = await instance.readyz()
    return body["streams"][0]["lease"]["state"] == "held" and body["ready"]


@pytest.mark.slow
async def test_sigterm_releases_the_lease_and_closes_clients_1012(start_simulator):
    prefix = f"cbtest-{secrets.token_hex(4)}:"
    _, sim = await start_simulator(extensions=EXTENSIONS, time_scale=0.05, seed=6)
    # A ttl far beyond the test's waits: only an explicit release lets the other take over.
    async with private_redis() as redis_server, \
            instances(sim.url, redis_server.url, prefix, 2, ttl=60.0) as group:
        await eventually(lambda: held_by_one(group), 15, "exactly one holder of the stream")
        first = await holder_index(group)
        client = await Client().start(group[first])
        group[first].proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15 * SCALE):
            assert await group[first].proc.wait() == 0
        key = f"{prefix}lease:{STREAM}"
        redis = aioredis.Redis.from_url(redis_server.url)
        value = await redis.get(key)
        await redis.aclose()
        assert value is None or not value.startswith(f"inst-{first}:".encode()), \
            "the lease was not released at shutdown"
        await eventually(lambda: client.close_code is not None, 5, "the client to be closed")
        assert client.close_code == 1012
        await client.close()
