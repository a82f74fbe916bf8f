"""Many upstream streams in one process, and streams that share credentials share tokens."""

from __future__ import annotations

import asyncio

from tests.scenarios.conftest import (
    TENANT,
    bridge_config,
    eventually,
    wait_ready,
    watch,
)


async def test_fifty_streams_subscribe_and_deliver(start_simulator, start_bridge):
    accounts = [f"acct-{n:03d}" for n in range(50)]
    simulator, sim = await start_simulator(accounts=accounts, dialects=("kazoo-json",),
                                           calls_per_second=20.0, time_scale=0.05, seed=5)
    data = bridge_config(sim, dialect="kazoo-json")
    block = data["antbuddy"][0]
    data["antbuddy"] = [{**block, "account_id": a} for a in accounts]
    service, bridge = await start_bridge(data)
    body = await wait_ready(bridge, timeout=30)
    assert len(body["streams"]) == 50
    assert {s["state"] for s in body["streams"]} == {"subscribed"}
    bindings = len(service.config.antbuddy[0].bindings)
    assert simulator.hub.stats()["subscriptions"] == 50 * bindings
    # one shared token manager: one token for all fifty streams
    assert simulator.tokens.requests == 1
    async with watch(bridge, [f"calls:{TENANT}"]) as watcher:
        simulator.start_traffic()
        await eventually(lambda: len({e["event"]["account"] for e in watcher.events}) >= 10,
                         20, "events from many accounts")
        await simulator.stop_traffic()


async def test_streams_sharing_credentials_rotate_on_one_token_request(
        start_simulator, start_bridge):
    accounts = ["acct-a", "acct-b", "acct-c"]
    simulator, sim = await start_simulator(accounts=accounts, token_lifetime=2.0,
                                           expiry_policy="disconnect")
    data = bridge_config(sim, dialect="socketio-0.9")
    block = data["antbuddy"][0]
    data["antbuddy"] = [{**block, "account_id": a} for a in accounts]
    service, bridge = await start_bridge(data)
    await wait_ready(bridge)
    await eventually(lambda: min(s.status.rotations for s in service.streams) >= 4, 20,
                     "several rotations of every stream")
    await asyncio.sleep(0)
    rotations = max(s.status.rotations for s in service.streams)
    # every stream rotated, yet each token was fetched once for all three
    assert simulator.tokens.requests <= rotations + 2
    assert all(s.status.reconnects == 0 for s in service.streams)
