"""Live state across real instances on one Redis: a client of instance B sees the calls that
started on instance A (whose stream carries them), the HTTP API of A agrees, and the state
outlives every instance."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from bridge.auth.tokens import mint, mint_api
from tests.scenarios.conftest import JWT_SECRET, SCALE, TENANT, eventually
from tests.scenarios.test_instances import Instance, held_by_one, holder_index, instances
from tests.support.redis_server import private_redis

CHANNEL = f"calls:{TENANT}"


async def state_message(instance: Instance) -> dict[str, Any]:
    token = mint(JWT_SECRET, sub="late-joiner", channels=[CHANNEL], ttl=600)
    async with connect(f"{instance.ws_url}/ws", proxy=None, compression=None,
                       max_size=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "channels": [CHANNEL],
                                    "state": True}).decode())
        async with asyncio.timeout(10 * SCALE):
            while True:
                message: dict[str, Any] = orjson.loads(await ws.recv())
                if message["type"] == "state":
                    return message
                assert message["type"] in ("welcome", "subscribed", "heartbeat"), message


async def api_calls(instance: Instance) -> dict[str, Any]:
    token = mint_api(JWT_SECRET, sub="crm", scopes=["calls:read"], tenants=[TENANT])
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        answer = await http.get(f"{instance.url}/api/v1/state/{TENANT}/calls",
                                headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def quiet(instance: Instance) -> bool:
    """Nothing left to publish on the stream holder."""
    body = await instance.readyz()
    return body["pipeline"]["pending"] == 0 and body["broker"]["buffered"] == 0


@pytest.mark.slow
async def test_a_client_of_another_instance_gets_the_calls_in_progress(start_simulator):
    prefix = f"cbtest-{secrets.token_hex(4)}:"
    simulator, sim = await start_simulator(
        extensions=[f"10{n:02d}" for n in range(12)], time_scale=0.2, seed=14)
    async with private_redis() as redis_server:
        async with instances(sim.url, redis_server.url, prefix, 2) as group:
            await eventually(lambda: held_by_one(group), 15, "exactly one holder of the stream")
            holder = await holder_index(group)
            a, b = group[holder], group[1 - holder]
            simulator.start_traffic(4.0)
            await eventually(lambda: _some_calls(a), 20, "calls in progress")
            await simulator.stop_traffic()  # the calls stop where they are: mid-call
            await eventually(lambda: quiet(a), 10, "the holder to publish everything")

            seen_on_b = await state_message(b)
            told_by_a = await api_calls(a)
            assert seen_on_b["calls"], "instance B saw none of the calls started on A"
            assert seen_on_b["calls"] == told_by_a["calls"]
            assert (seen_on_b["epoch"], seen_on_b["offset"]) == \
                (told_by_a["epoch"], told_by_a["offset"])
            assert all(call["legs"] for call in seen_on_b["calls"])

        # Every instance gone; a new one on the same Redis tells the same state.
        async with instances(sim.url, redis_server.url, prefix, 1) as (fresh,):
            after = await state_message(fresh)
        assert after["calls"] == seen_on_b["calls"]
        assert after["epoch"] == seen_on_b["epoch"]


async def _some_calls(instance: Instance) -> bool:
    return len((await api_calls(instance))["calls"]) >= 3
