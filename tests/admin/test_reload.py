"""Reloading the account blocks of a running bridge (``POST /admin/reload``), over real HTTP,
with the simulator's traffic running and a websocket client watching an unchanged account."""

from __future__ import annotations

import logging
from collections import Counter

import httpx
import redis.asyncio as aioredis

from bridge.auth.tokens import mint
from bridge.simulator.app import Simulator
from tests.admin.clients import Client
from tests.admin.conftest import ADMIN, SHARED_REDIS, Bridge, antbuddy, config_data
from tests.scenarios.conftest import EXTENSIONS, JWT_SECRET, bridge_config, eventually

A, B, C = "antbuddy/ta/acct-a", "antbuddy/tb/acct-b", "antbuddy/tc/acct-c"


def keys_of(client: Client, channel: str) -> list[tuple[str, str]]:
    return [(m["event"]["call_id"], m["event"]["upstream"]["msg_id"])
            for m in client.events if m["channel"] == channel]


def journal_keys(simulator: Simulator, account: str) -> set[tuple[str, str]]:
    return {(call_id, msg_id) for acc, _, call_id, msg_id in simulator.journal if acc == account}


def subscribed(bridge: Bridge, *names: str) -> bool:
    states = {s.name: s.status.state.value for s in bridge.service.streams}
    return all(states.get(name) == "subscribed" for name in names)


async def test_reload_starts_stops_and_restarts_streams_and_leaves_the_rest_alone(
        start_simulator, start_bridge_file, prefix):
    simulator, sim = await start_simulator(
        accounts=["acct-a", "acct-b", "acct-c"], extensions=EXTENSIONS, time_scale=0.05,
        seed=3, journal_size=100_000)
    block_a, block_b = antbuddy(sim, "ta", "acct-a"), antbuddy(sim, "tb", "acct-b")
    block_c = antbuddy(sim, "tc", "acct-c")
    bridge = await start_bridge_file(config_data([block_a, block_b], prefix=prefix))
    await eventually(lambda: subscribed(bridge, A, B), 10, "both streams")
    stream_a, stream_b = bridge.stream(A), bridge.stream(B)
    rest_a = bridge.service.providers[0]
    client = await Client.open(bridge.server.ws_url,
                               mint(JWT_SECRET, sub="crm", channels=["calls:ta"]), ["calls:ta"])
    try:
        simulator.start_traffic(20.0)
        await eventually(lambda: len(keys_of(client, "calls:ta")) >= 20, 20, "traffic on A")

        # B changes (fewer bindings), C is added, [server] changes (not applied)
        block_b2 = {**block_b, "bindings": ["call.CHANNEL_CREATE.*", "call.CHANNEL_DESTROY.*"]}
        bridge.write(config_data([block_a, block_b2, block_c], prefix=prefix,
                                 server={"send_timeout": 5.0}))
        answer = await bridge.call("POST", "/admin/reload")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["accounts"]["antbuddy"] == {
            "added": [C], "removed": [], "changed": [B], "unchanged": [A]}
        assert body["restart_needed"] == ["server"]
        assert bridge.service.config.server.send_timeout == 30.0, "[server] must not change"
        stream_b2 = bridge.stream(B)
        assert stream_b2 is not stream_b
        assert stream_b.status.state.value == "stopped"
        assert bridge.stream(B).settings.bindings == tuple(block_b2["bindings"])
        await eventually(lambda: subscribed(bridge, A, B, C), 10, "B restarted and C started")
        assert [s.name for s in bridge.service.streams] == [A, B, C]

        # B is removed: its stream stops and its lease is released at once
        bridge.write(config_data([block_a, block_c], prefix=prefix))
        body = (await bridge.call("POST", "/admin/reload")).json()
        assert body["accounts"]["antbuddy"] == {
            "added": [], "removed": [B], "changed": [], "unchanged": [A, C]}
        assert body["restart_needed"] == []
        assert [s.name for s in bridge.service.streams] == [A, C]
        redis = aioredis.Redis.from_url(SHARED_REDIS)
        try:
            assert await redis.get(f"{prefix}lease:{B}") is None, "B's lease was not released"
            assert await redis.get(f"{prefix}lease:{A}") is not None
        finally:
            await redis.aclose()
        assert stream_b2.status.state.value == "stopped"
        assert stream_b2.snapshot()["connections"] == 0
        await eventually(lambda: simulator.hub.stats()["connections"] == 2, 5,
                         "the upstream to see only A's and C's connections")
        await eventually(lambda: len(keys_of(client, "calls:ta")) >= 60, 20, "more traffic")
        await simulator.stop_traffic()

        # A was never touched: same stream and provider, no reconnect, every event delivered
        expected = journal_keys(simulator, "acct-a")
        await eventually(lambda: set(keys_of(client, "calls:ta")) >= expected, 10,
                         "every signal of A to reach the client")
        received = keys_of(client, "calls:ta")
        assert set(received) == expected
        assert [k for k, n in Counter(received).items() if n > 1] == []
        assert bridge.stream(A) is stream_a
        assert stream_a.status.reconnects == 0 and stream_a.status.rotations == 0
        assert bridge.service.providers[0] is rest_a
        assert [p.name for p in bridge.service.providers] == [
            "antbuddy-rest/ta/acct-a", "antbuddy-rest/tc/acct-c"]
    finally:
        await client.close()


async def test_a_file_that_does_not_validate_changes_nothing(
        start_simulator, start_bridge_file, caplog):
    _, sim = await start_simulator(accounts=["acct-a", "acct-b"])
    block_a = antbuddy(sim, "ta", "acct-a")
    data = config_data([block_a])
    bridge = await start_bridge_file(data)
    await eventually(lambda: subscribed(bridge, A), 10, "the stream")
    stream_a, config = bridge.stream(A), bridge.service.config

    short = "q7z"  # too short for an app secret: the error names the key, never the value
    bridge.write(config_data([block_a, antbuddy(sim, "tb", "acct-b", app_secret=short,
                                                dialect="smoke-signals")]))
    with caplog.at_level(logging.ERROR, logger="bridge.reload"):
        answer = await bridge.call("POST", "/admin/reload")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_config"
    assert "antbuddy[tb].app_secret" in error["message"]
    assert "antbuddy[tb].dialect" in error["message"]
    assert short not in error["message"]
    logged = [r.getMessage() for r in caplog.records if r.name == "bridge.reload"]
    assert any("antbuddy[tb].app_secret" in line for line in logged), logged
    assert all(short not in line for line in logged)

    bridge.write("[[antbuddy]\ntenant = 'x'\n")
    answer = await bridge.call("POST", "/admin/reload")
    assert answer.status_code == 400 and "invalid TOML" in answer.json()["error"]["message"]

    assert bridge.service.config is config
    assert [s.name for s in bridge.service.streams] == [A]
    assert bridge.stream(A) is stream_a and stream_a.status.reconnects == 0

    bridge.write(data)  # the same file again: nothing to do
    body = (await bridge.call("POST", "/admin/reload")).json()
    assert body["accounts"]["antbuddy"]["unchanged"] == [A]
    assert bridge.stream(A) is stream_a


async def test_reload_mounts_and_unmounts_other_providers_routes(
        start_simulator, start_bridge_file):
    _, sim = await start_simulator(accounts=["acct-a"])
    block_a = antbuddy(sim, "ta", "acct-a")
    bridge = await start_bridge_file(config_data([block_a]))
    hook = "/webhooks/kompaas/kx"

    async def webhook(secret: str) -> int:
        answer = await bridge.call("POST", hook, token=None, json={},
                                   headers={"x-callbridge-secret": secret})
        return answer.status_code

    async def documented() -> bool:
        paths = (await bridge.call("GET", "/openapi.json", token=None)).json()["paths"]
        return "/webhooks/kompaas/{tenant}" in paths

    assert await webhook("kompaas-hook-1") == 404 and not await documented()
    kompaas = {"tenant": "kx", "api_token": "kompaas-token-1", "webhook_secret": "kompaas-hook-1"}
    bridge.write({**config_data([block_a]), "kompaas": [kompaas]})
    body = (await bridge.call("POST", "/admin/reload")).json()
    assert body["accounts"]["kompaas"]["added"] == ["kompaas/kx"]
    assert body["accounts"]["antbuddy"]["unchanged"] == [A]
    assert await webhook("wrong-secret") == 401
    assert await webhook("kompaas-hook-1") not in (401, 404)  # past the secret check
    assert await documented()
    kompaas_provider = lambda: next(  # noqa: E731
        p for p in bridge.service.providers if p.name.startswith("kompaas"))
    first = kompaas_provider()

    bridge.write({**config_data([block_a]),
                  "kompaas": [{**kompaas, "webhook_secret": "kompaas-hook-2"}]})
    body = (await bridge.call("POST", "/admin/reload")).json()
    assert body["accounts"]["kompaas"]["changed"] == ["kompaas/kx"]
    assert kompaas_provider() is not first
    assert await webhook("kompaas-hook-1") == 401
    assert await webhook("kompaas-hook-2") not in (401, 404)

    bridge.write(config_data([block_a]))
    body = (await bridge.call("POST", "/admin/reload")).json()
    assert body["accounts"]["kompaas"]["removed"] == ["kompaas/kx"]
    assert await webhook("kompaas-hook-2") == 404 and not await documented()
    assert [p.name for p in bridge.service.providers] == ["antbuddy-rest/ta/acct-a"]


async def test_an_instance_started_without_a_file_refuses_to_reload(
        start_simulator, start_bridge):
    _, sim = await start_simulator()
    _, server = await start_bridge(bridge_config(sim))
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.post(f"{server.url}/admin/reload",
                                 headers={"authorization": f"Bearer {ADMIN}"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "unavailable")
