"""A back-end consumer subscribed on Redis gets the events as JSON on the documented channels."""

from __future__ import annotations

import asyncio
import secrets

import orjson
import redis.asyncio as aioredis

from bridge.redisconn.clients import drop_prefix
from tests.scenarios.conftest import TENANT, bridge_config, eventually, wait_ready


async def test_redis_subscriber_receives_json_events(start_simulator, start_bridge):
    prefix = f"cbtest-{secrets.token_hex(4)}:"
    simulator, sim = await start_simulator(
        extensions=["1001", "1002"], calls_per_second=5.0, time_scale=0.1, seed=3)
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    pubsub = client.pubsub()
    tenant_channel = f"{prefix}calls:{TENANT}"
    ext_channel = f"{prefix}calls:{TENANT}:1001"
    await pubsub.subscribe(tenant_channel, ext_channel)
    received: dict[str, list[dict]] = {tenant_channel: [], ext_channel: []}

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                received[message["channel"].decode()].append(orjson.loads(message["data"]))

    reader = asyncio.create_task(read())
    try:
        service, bridge = await start_bridge(bridge_config(
            sim, broker={"url": "redis://127.0.0.1:6379/0", "prefix": prefix}))
        await wait_ready(bridge)
        simulator.start_traffic()
        await eventually(lambda: len(received[ext_channel]) >= 5, 20,
                         "events on the extension channel")
        await simulator.stop_traffic()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await pubsub.aclose()
        await client.aclose()
        await drop_prefix("redis://127.0.0.1:6379/0", prefix)

    for message in received[ext_channel]:
        assert message["type"] == "event"
        assert message["channel"] == f"calls:{TENANT}:1001"
        assert message["event"]["extension"] == "1001"
        assert message["event"]["tenant"] == TENANT
        assert message["event"]["type"].startswith("call.")
    tenant_ids = {m["event"]["id"] for m in received[tenant_channel]}
    extensions = {m["event"].get("extension") for m in received[tenant_channel]}
    assert {"1001", "1002"} <= extensions
    # every extension event was also on the tenant channel (allowing for the last in flight)
    ext_ids = [m["event"]["id"] for m in received[ext_channel]]
    assert len(set(ext_ids[:-2]) - tenant_ids) == 0
