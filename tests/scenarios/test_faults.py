"""Broker outages: upstream stays up, local clients keep receiving, the buffer is published
later."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence

import orjson
import pytest

from bridge.brokers.base import BrokerError
from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.resilient import ResilientBroker
from bridge.calls.change import Change
from bridge.downstream.hub import Hub
from tests.downstream.conftest import run_uvicorn
from tests.downstream.harness import bridge_starter, client, recv, subscribe, token
from tests.scenarios.conftest import EXTENSIONS, SCALE, TENANT, eventually
from tests.scenarios.test_instances import Client, instances, no_duplicates
from tests.support.redis_server import private_redis


class FlakyBroker(MemoryBroker):
    """A memory broker whose publish can be switched off, as if the backend were unreachable."""

    def __init__(self) -> None:
        super().__init__(history_length=100)
        self.down = False

    async def publish(self, channels: Sequence[str], event_json: bytes, *,
                      event_id: str | None = None,
                      change: Change | None = None) -> list[str] | None:
        if self.down:
            raise BrokerError("backend unreachable")
        return await super().publish(channels, event_json, event_id=event_id, change=change)


def event(n: int) -> tuple[str, bytes]:
    event_id = f"ev-{n}"
    return event_id, orjson.dumps({"id": event_id, "n": n})


class Reader:
    """A hub client whose frames are read as they come (its link's writer, sending to a list)."""

    def __init__(self, hub: Hub) -> None:
        self.link = hub.attach()
        self.got: list[dict] = []
        self._task = asyncio.create_task(self.link.run(self._send, 5.0))

    async def _send(self, frame: str) -> None:
        self.got.append(orjson.loads(frame))

    async def settled(self) -> list[dict]:
        async with asyncio.timeout(5 * SCALE):
            while self.link.queued_bytes:
                await asyncio.sleep(0.01)
        return self.got

    async def close(self) -> None:
        self.link.close(1000)
        await self._task


@contextlib.asynccontextmanager
async def resilient_hub(buffer_events: int, retry_delay: float
                        ) -> AsyncIterator[tuple[FlakyBroker, ResilientBroker, Hub, Reader]]:
    """A hub on a resilient broker over a flaky one, and one reader of ``calls:t``."""
    inner = FlakyBroker()
    broker = ResilientBroker(inner, buffer_events=buffer_events, retry_delay=retry_delay)
    hub = Hub(broker)
    await broker.start()
    reader = Reader(hub)
    await hub.subscribe(reader.link, "calls:t")
    try:
        yield inner, broker, hub, reader
        await reader.close()
    finally:
        await broker.close()


async def test_outage_delivers_locally_then_publishes_each_event_once_to_every_client():
    async with resilient_hub(100, 0.01) as (inner, broker, hub, early):
        for n in range(3):
            await broker.publish(["calls:t"], event(n)[1], event_id=event(n)[0])
        confirmed = ((await early.settled())[-1]["epoch"], early.got[-1]["offset"])
        inner.down = True
        for n in range(3, 8):
            await broker.publish(["calls:t"], event(n)[1], event_id=event(n)[0])
        assert broker.health()["state"] == "buffering"
        assert broker.health()["buffered"] == 5
        # delivered at once, marked provisional, carrying the last confirmed position
        provisional = (await early.settled())[3:]
        assert [m["event"]["n"] for m in provisional] == [3, 4, 5, 6, 7]
        assert all(m.get("provisional") is True for m in provisional)
        assert {(m["epoch"], m["offset"]) for m in provisional} == {confirmed}
        late = Reader(hub)  # joins after the provisional frames went out
        await hub.subscribe(late.link, "calls:t")
        inner.down = False
        assert await broker.flush(5 * SCALE)
        await broker.publish(["calls:t"], event(8)[1], event_id=event(8)[0])
        # each event once to each client: the published copies only to the one without them
        assert [m["event"]["n"] for m in await early.settled()] == list(range(9))
        assert [m["event"]["n"] for m in await late.settled()] == list(range(3, 9))
        assert not any(m.get("provisional") for m in late.got)
        assert broker.health()["state"] != "buffering"
        # history holds everything, in order: a client resuming from the provisional
        # position is replayed the buffered events (and may see them twice, by event id)
        replay = await broker.replay("calls:t", epoch=confirmed[0], after=confirmed[1], limit=50)
        assert replay.status == "ok"
        assert [orjson.loads(f)["event"]["n"] for _, f in replay.items] == list(range(3, 9))
        await late.close()


async def test_an_event_another_instance_published_is_not_shown_again_provisionally():
    """Two instances run one stream (a takeover, or a Redis outage longer than the lease): the
    other one published an event while this one, still in an outage, receives it too."""
    async with resilient_hub(100, 5.0) as (inner, broker, _, reader):
        inner.down = True
        await broker.publish(["calls:t"], event(1)[1], event_id=event(1)[0])  # buffered
        await MemoryBroker.publish(inner, ["calls:t"], event(2)[1], event_id=event(2)[0])
        assert await broker.publish(["calls:t"], event(2)[1], event_id=event(2)[0]) is None
        got = await reader.settled()
        assert [(m["event"]["n"], bool(m.get("provisional"))) for m in got] == [
            (1, True), (2, False)]
        assert broker.health()["already_published"] == 1 and broker.health()["buffered"] == 1


async def test_overflow_is_counted_and_still_delivered_locally():
    async with resilient_hub(2, 0.01) as (inner, broker, _, reader):
        await broker.publish(["calls:t"], event(0)[1], event_id=event(0)[0])
        inner.down = True
        for n in range(1, 6):
            await broker.publish(["calls:t"], event(n)[1], event_id=event(n)[0])
        health = broker.health()
        assert (health["buffered"], health["overflow"]) == (2, 3)
        inner.down = False
        assert await broker.flush(5 * SCALE)
        assert [m["event"]["n"] for m in await reader.settled()] == list(range(6))
        history = await broker.history("calls:t", None, 50)
        # only what fit in the buffer reached the broker
        assert [orjson.loads(f)["event"]["n"] for _, f in history] == [0, 1, 2]


@pytest.mark.slow
async def test_redis_killed_during_traffic_and_restarted(start_simulator):
    prefix = f"cbtest-{secrets.token_hex(4)}:"
    simulator, sim = await start_simulator(extensions=EXTENSIONS, time_scale=0.05, seed=7)
    async with private_redis() as redis_server, \
            instances(sim.url, redis_server.url, prefix, 1, broker={"buffer_events": 15}) as group:
        bridge = group[0]
        await eventually(lambda: _ready(bridge), 15, "the bridge to be ready")
        client = await Client().start(bridge)
        simulator.start_traffic(20.0)
        await eventually(lambda: len(client.ids()) >= 10, 20, "traffic before the outage")

        await redis_server.stop(kill=True)
        during = len(client.ids())
        await eventually(lambda: _broker_state(bridge, "buffering"), 10, "/readyz to show it")
        await eventually(lambda: len(client.ids()) >= during + 30, 20,
                         "local delivery during the outage")
        body = await bridge.readyz()
        assert body["ready"] is False
        assert body["streams"][0]["state"] == "subscribed", "the upstream stream went down"
        assert body["broker"]["overflow"] > 0

        await redis_server.start()
        await eventually(lambda: _ready(bridge), 20, "recovery after Redis returned")
        after = len(client.ids())
        await eventually(lambda: len(client.ids()) >= after + 10, 20, "events after recovery")
        await simulator.stop_traffic()
        body = await bridge.readyz()
        broker = body["broker"]
        assert broker["buffered"] == 0
        assert broker["flushed"] == broker["buffered_total"] > 0
        ids = client.ids()
        assert no_duplicates(ids), "an event was delivered twice across the outage"
        await eventually(lambda: _all_delivered(bridge, client), 10, "every event delivered")
        await client.close()


async def _ready(bridge) -> bool:  # type: ignore[no-untyped-def]
    return bool((await bridge.readyz())["ready"])


async def _broker_state(bridge, state: str) -> bool:  # type: ignore[no-untyped-def]
    return (await bridge.readyz())["broker"]["state"] == state


async def _all_delivered(bridge, client: Client) -> bool:  # type: ignore[no-untyped-def]
    # Every event the pipeline accepted reached the local client exactly once, whether it was
    # published directly, buffered and published later, or beyond the buffer (local only).
    body = await bridge.readyz()
    pipeline = body["pipeline"]
    handled = pipeline["published"] + pipeline["duplicates"]
    accepted = pipeline["submitted"]
    delivered = len(set(client.ids())) + len(set(client.ids(f"system:{TENANT}")))
    return handled >= accepted and delivered == accepted


async def test_a_connected_client_misses_nothing_another_instance_published_meanwhile():
    """Redis restarts empty; another instance publishes before this one has subscribed again.
    The connected client gets a gap (the old epoch's history is gone), then every event of the
    new epoch, then live ones: nothing silently missing, nothing twice."""
    channel = f"calls:{TENANT}:1001"
    async with private_redis() as redis_server:
        url = redis_server.url
        here = ResilientBroker(RedisBroker(url, prefix="cb:", connect_timeout=1.0,
                                           socket_timeout=1.0), retry_delay=0.05)
        elsewhere = RedisBroker(url, prefix="cb:", connect_timeout=1.0, socket_timeout=1.0)
        await elsewhere.start()
        try:
            async with bridge_starter(run_uvicorn)(here) as b, \
                    client(b.url, token(channel)) as (ws, _):
                assert (await subscribe(ws, channel))["type"] == "subscribed"
                await elsewhere.publish([channel], event(0)[1])
                assert (await recv(ws))["event"]["n"] == 0
                await redis_server.restart()
                # At once: this instance is still waiting to reconnect its subscription.
                for n in range(1, 11):
                    await elsewhere.publish([channel], event(n)[1], event_id=event(n)[0])
                gap = await recv(ws)
                assert (gap["type"], gap["reason"]) == ("gap", "epoch_changed")
                got = [(await recv(ws))["event"]["n"] for _ in range(10)]
                await elsewhere.publish([channel], event(11)[1], event_id=event(11)[0])
                got.append((await recv(ws))["event"]["n"])
                assert got == list(range(1, 12))
        finally:
            await elsewhere.close()
