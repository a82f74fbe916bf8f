"""``python -m bridge serve`` as real processes: SIGTERM hands the streams over without losing an
upstream signal, a lone (or memory://) instance stops without waiting for a hand-over, SIGHUP
reloads, a shutdown that cannot publish still ends by its deadline."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from bridge.auth.tokens import mint
from bridge.brokers.redis.broker import RedisBroker
from tests.admin.clients import Client
from tests.admin.conftest import ADMIN, SHARED_REDIS, antbuddy, config_data, toml
from tests.scenarios.conftest import ACCOUNT, EXTENSIONS, JWT_SECRET, SCALE, TENANT, eventually
from tests.support.redis_server import private_redis
from tests.support.serve_process import ServeProcess

STREAM = f"antbuddy/{TENANT}/{ACCOUNT}"
CHANNEL = f"calls:{TENANT}"
SHUTDOWN_TIMEOUT = 5.0


class Instance(ServeProcess):
    """One ``python -m bridge serve`` process whose config file tests rewrite."""

    def write(self, data: dict[str, Any] | str) -> None:
        with open(self.config_path, "w") as f:
            f.write(data if isinstance(data, str) else toml(data))

    async def admin(self, method: str, path: str) -> Any:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            answer = await http.request(method, f"{self.url}{path}",
                                        headers={"authorization": f"Bearer {ADMIN}"})
        return answer.json()

    async def lease(self) -> dict[str, Any]:
        return (await self.admin("GET", "/admin/streams"))["streams"][0]["lease"]


@asynccontextmanager
async def serving(directory: str, configs: list[dict[str, Any]]) -> AsyncIterator[list[Instance]]:
    running: list[Instance] = []
    try:
        for n, data in enumerate(configs):
            running.append(await _spawn(directory, n, data))
        yield running
    finally:
        for instance in running:
            if instance.proc.returncode is None:
                instance.proc.kill()
                await instance.proc.wait()


async def _spawn(directory: str, n: int, data: dict[str, Any]) -> Instance:
    path = os.path.join(directory, f"inst-{n}.toml")
    log_path = os.path.join(directory, f"inst-{n}.log")
    with open(path, "w") as f:
        f.write(toml(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE__")}
    return await Instance.start(path, log_path, env=env, what=f"instance {n}")


def instance_config(sim: Any, prefix: str | None, n: int, redis_url: str = SHARED_REDIS,
                    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
                    **lease: Any) -> dict[str, Any]:
    """``prefix`` None: memory://."""
    data = config_data([antbuddy(sim, TENANT, ACCOUNT)], prefix=prefix,
                       lease={"ttl": 1.5, "instance_id": f"inst-{n}", **lease},
                       server={"shutdown_timeout": shutdown_timeout})
    if prefix is not None:
        data["broker"]["url"] = redis_url
    return data


async def history_ids(prefix: str, channel: str) -> list[str]:
    broker = RedisBroker(SHARED_REDIS, prefix=prefix)
    try:
        entries = await broker.history(channel, None, 100_000)
    finally:
        await broker.close()
    return [orjson.loads(frame)["event"]["id"] for _, frame in entries]


async def history_keys(prefix: str, channel: str) -> list[tuple[str, str]]:
    """(call id, Msg-ID) of every event in ``channel``'s history, in order."""
    broker = RedisBroker(SHARED_REDIS, prefix=prefix)
    try:
        entries = await broker.history(channel, None, 100_000)
    finally:
        await broker.close()
    events = [orjson.loads(frame)["event"] for _, frame in entries]
    return [(e["call_id"], e["upstream"]["msg_id"]) for e in events]


def journal_keys(simulator: Any) -> set[tuple[str, str]]:
    """(call id, Msg-ID) of every signal the simulator sent for the stream's account."""
    return {(call_id, msg_id) for account, _, call_id, msg_id in simulator.journal
            if account == ACCOUNT}


async def test_sigterm_hands_the_stream_over_losing_no_signal_and_a_resuming_client_misses_nothing(
        start_simulator, prefix, tmp_path):
    simulator, sim = await start_simulator(extensions=EXTENSIONS, time_scale=0.05, seed=8,
                                           journal_size=100_000)
    # A lease ttl far beyond the test's waits (standby attempts every 10 s): the survivor takes
    # the stream over on the release notice; the old holder runs it until the survivor is live.
    configs = [instance_config(sim, prefix, n, ttl=30.0) for n in range(2)]
    async with serving(str(tmp_path), configs) as group:
        async def holder() -> int | None:
            states = [(await i.lease())["state"] for i in group]
            return states.index("held") if sorted(states) == ["held", "standby"] else None

        await eventually(lambda: _is_set(holder()), 15, "exactly one holder of the stream")
        first = await holder()
        assert first is not None
        old, survivor = group[first], group[1 - first]
        # Signals sent before the first subscription reach nobody: traffic starts after it.
        await eventually(lambda: _subscribed(old), 10, "the holder to subscribe upstream")
        await eventually(lambda: _knows_holder(survivor, f"inst-{first}"), 10,
                         "the standby instance to see the holder")
        token = mint(JWT_SECRET, sub="crm", channels=[CHANNEL], ttl=600)
        client = await Client.open(old.ws_url, token, [CHANNEL])
        resumed: Client | None = None
        try:
            simulator.start_traffic(20.0)
            await eventually(lambda: len(client.ids(CHANNEL)) >= 30, 20, "traffic")

            old.proc.send_signal(signal.SIGTERM)
            assert await client.wait_closed() == 1012
            async with asyncio.timeout((SHUTDOWN_TIMEOUT + 5) * SCALE):
                assert await old.proc.wait() == 0, old.log()[-3000:]
            assert f"lease {STREAM} handed over to inst-{1 - first}" in old.log(), \
                old.log()[-3000:]
            redis = aioredis.Redis.from_url(SHARED_REDIS)
            try:
                value = await redis.get(f"{prefix}lease:{STREAM}")
            finally:
                await redis.aclose()
            assert value is not None and value.startswith(b"inst-%d:" % (1 - first)), \
                "the survivor holds the lease the old holder released"
            assert await _held(survivor) and await _subscribed(survivor)

            position = client.last(CHANNEL)
            assert position is not None
            last_seen = client.ids(CHANNEL)[-1]

            async def missed() -> bool:  # published while the client was away: to be replayed
                history = await history_ids(prefix, CHANNEL)
                return len(history) - history.index(last_seen) > 5

            await eventually(missed, 10, "events published while the client is away")
            resumed = await Client.open(survivor.ws_url, token, [CHANNEL],
                                        resume={CHANNEL: position})
            seen = len(client.ids(CHANNEL))
            await eventually(lambda: len(resumed.ids(CHANNEL)) >= 30, 20, "traffic after")
            await simulator.stop_traffic()

            async def complete() -> bool:
                # Every published event, in order, once: live, then replayed, then live again.
                history = await history_ids(prefix, CHANNEL)
                delivered = client.ids(CHANNEL) + resumed.ids(CHANNEL)
                start = history.index(delivered[0])
                return delivered == history[start:]

            await eventually(complete, 10, "the client to have every published event once")
            delivered = client.ids(CHANNEL) + resumed.ids(CHANNEL)
            assert len(delivered) == len(set(delivered)) > seen
            assert "not published" not in old.log()

            # No gap upstream: every signal sent, before, during and after the hand-over, is in
            # the channel's history, once.
            expected = journal_keys(simulator)
            await eventually(lambda: _covers(history_keys(prefix, CHANNEL), expected), 10,
                             "every signal sent to be in the history")
            history = await history_keys(prefix, CHANNEL)
            assert set(history) == expected
            assert [k for k, n in Counter(history).items() if n > 1] == []
        finally:
            await client.close()
            if resumed is not None:
                await resumed.close()


async def _is_set(value: Any) -> bool:
    return (await value) is not None


async def _held(instance: Instance) -> bool:
    return (await instance.lease())["state"] == "held"


async def _subscribed(instance: Instance) -> bool:
    stream = (await instance.admin("GET", "/admin/streams"))["streams"][0]
    return stream["lease"]["state"] == "held" and stream["state"] == "subscribed"


async def _knows_holder(instance: Instance, name: str) -> bool:
    return (await instance.lease())["held_by"] == name


async def _covers(keys: Any, expected: set[tuple[str, str]]) -> bool:
    return set(await keys) >= expected


async def test_a_lone_instance_stops_without_waiting_for_a_hand_over(
        start_simulator, prefix, tmp_path):
    _, sim = await start_simulator()
    # A hand-over wait far beyond the test's waits: an instance that waited would fail it.
    data = instance_config(sim, prefix, 0, shutdown_timeout=120.0, handover_timeout=60.0)
    async with serving(str(tmp_path), [data]) as [instance]:
        await eventually(lambda: _subscribed(instance), 10, "the stream")
        instance.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15 * SCALE):
            assert await instance.proc.wait() == 0, instance.log()[-3000:]
        assert "hand-over: no other instance listens; 1 stream(s) stop now" in instance.log()
        redis = aioredis.Redis.from_url(SHARED_REDIS)
        try:
            assert await redis.get(f"{prefix}lease:{STREAM}") is None, "the lease was released"
        finally:
            await redis.aclose()


async def test_a_memory_instance_stops_without_waiting_for_a_hand_over(start_simulator, tmp_path):
    _, sim = await start_simulator()
    data = instance_config(sim, None, 0, shutdown_timeout=120.0, handover_timeout=60.0)
    async with serving(str(tmp_path), [data]) as [instance]:
        await eventually(lambda: _subscribed(instance), 10, "the stream")
        instance.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15 * SCALE):
            assert await instance.proc.wait() == 0, instance.log()[-3000:]
        assert "hand-over: no other instance listens" in instance.log()
        assert "waiting up to" not in instance.log()


async def test_sighup_applies_the_file_and_a_bad_file_keeps_the_running_accounts(
        start_simulator, prefix, tmp_path):
    _, sim = await start_simulator(accounts=[ACCOUNT, "acct-more"])
    data = instance_config(sim, prefix, 0)
    async with serving(str(tmp_path), [data]) as [instance]:
        async def states() -> dict[str, str]:
            streams = (await instance.admin("GET", "/admin/streams"))["streams"]
            return {s["name"]: s["state"] for s in streams}

        await eventually(lambda: _equals(states(), {STREAM: "subscribed"}), 10, "the stream")
        more = antbuddy(sim, "more", "acct-more")
        instance.write({**data, "antbuddy": [*data["antbuddy"], more]})
        instance.proc.send_signal(signal.SIGHUP)
        wanted = {STREAM: "subscribed", "antbuddy/more/acct-more": "subscribed"}
        await eventually(lambda: _equals(states(), wanted), 10, "the added stream")
        await eventually(lambda: "reload applied" in instance.log(), 5, "the reload log line")

        instance.write({**data, "antbuddy": [*data["antbuddy"], {**more, "port": 1}]})
        instance.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "reload refused" in instance.log(), 5, "the refusal")
        assert "antbuddy[more].port: unknown key" in instance.log()
        assert await states() == wanted
        instance.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout((SHUTDOWN_TIMEOUT + 5) * SCALE):
            assert await instance.proc.wait() == 0


async def _equals(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def test_a_shutdown_that_cannot_publish_ends_by_its_deadline(start_simulator, tmp_path):
    simulator, sim = await start_simulator(extensions=EXTENSIONS, time_scale=0.05, seed=9)
    async with private_redis() as redis_server:
        data = instance_config(sim, "cbtest-deadline:", 0, redis_url=redis_server.url,
                               shutdown_timeout=2.0)
        async with serving(str(tmp_path), [data]) as [instance]:
            await eventually(lambda: _held(instance), 10, "the stream")
            await redis_server.stop()
            simulator.start_traffic(20.0)

            async def buffered() -> bool:
                async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
                    body = (await http.get(f"{instance.url}/readyz")).json()
                return body["broker"]["buffered"] > 0

            await eventually(buffered, 15, "events buffered while Redis is gone")
            instance.proc.send_signal(signal.SIGTERM)
            # The deadline is 2 s; the process exits on its own, before the watchdog's cut.
            async with asyncio.timeout((2.0 + 10) * SCALE):
                assert await instance.proc.wait() == 0, instance.log()[-3000:]
            await simulator.stop_traffic()
            assert "buffered event(s) not published within 2s" in instance.log()
