"""The core pipeline end to end: simulator -> bridge -> websocket client, over real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import httpx
import pytest

from tests.scenarios.conftest import (
    ACCOUNT,
    APP_SECRET,
    TENANT,
    bridge_config,
    eventually,
    wait_ready,
    watch,
)

DIALECTS = ["socketio-0.9", "kazoo-json", "engineio-4"]


def keys_of(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["event"]["call_id"], e["event"]["upstream"]["msg_id"]) for e in events]


def journal_keys(simulator) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(call_id, msg_id) for account, _, call_id, msg_id in simulator.journal
            if account == ACCOUNT}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("dialect", DIALECTS)
async def test_two_second_tokens_lose_and_duplicate_nothing(
        dialect, start_simulator, start_bridge):
    """30 s of steady calls while tokens live 2 s and the upstream drops expired sockets."""
    simulator, sim = await start_simulator(
        dialects=(dialect,), token_lifetime=2.0, expire_format="unix_ms",
        expiry_policy="disconnect", calls_per_second=4.0, time_scale=0.1, seed=7,
        journal_size=100_000)
    service, bridge = await start_bridge(bridge_config(sim, dialect=dialect))
    await wait_ready(bridge)
    async with watch(bridge, [f"calls:{TENANT}"]) as watcher:
        simulator.start_traffic()
        await asyncio.sleep(30)
        await simulator.stop_traffic()
        expected = journal_keys(simulator)
        await eventually(lambda: set(keys_of(watcher.events)) >= expected, 10,
                         "every generated signal to reach the client")
        await asyncio.sleep(0.5)  # a late duplicate would show up here
        received = keys_of(watcher.events)
    stream = service.streams[0].snapshot()
    assert len(expected) > 200, "the run generated too little traffic to mean anything"
    assert stream["rotations"] >= 10, stream
    assert set(received) == expected
    duplicates = [k for k, n in Counter(received).items() if n > 1]
    assert duplicates == []
    assert service.pipeline.counts["duplicates"] > 0, "rotation overlap never exercised dedup"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_upstream_killed_mid_call_reconnects_and_resumes(
        dialect, start_simulator, start_bridge):
    simulator, sim = await start_simulator(
        dialects=(dialect,), calls_per_second=5.0, time_scale=0.2, seed=11)
    service, bridge = await start_bridge(bridge_config(
        sim, dialect=dialect, upstream={"reconnect_initial": 0.2, "reconnect_max": 1.0}))
    await wait_ready(bridge)
    bindings = len(service.config.antbuddy[0].bindings)
    async with watch(bridge, [f"calls:{TENANT}"]) as watcher:
        simulator.start_traffic()
        await eventually(lambda: len(watcher.events) >= 10, 10, "traffic before the drop")
        async with httpx.AsyncClient(trust_env=False) as http:
            dropped = (await http.post(f"{sim.url}/_sim/drop")).json()["dropped"]
        assert dropped >= 1
        before = len(watcher.events)
        await eventually(lambda: service.streams[0].status.reconnects >= 1, 10,
                         "the stream to notice the drop")
        await wait_ready(bridge)
        await eventually(lambda: simulator.hub.stats()["subscriptions"] == bindings, 10,
                         "every binding to be subscribed again")
        await eventually(lambda: len(watcher.events) >= before + 10, 10,
                         "traffic after the reconnect")
    assert service.streams[0].snapshot()["state"] == "subscribed"


async def test_wrong_app_secret_fails_clearly_without_a_hot_loop(
        start_simulator, start_bridge, caplog):
    caplog.set_level(logging.INFO)
    simulator, sim = await start_simulator()
    wrong = "not-the-secret-" + APP_SECRET[::-1]
    service, bridge = await start_bridge(bridge_config(
        sim, app_secret=wrong, upstream={"reconnect_initial": 0.05, "reconnect_max": 0.2}))
    async with httpx.AsyncClient(trust_env=False) as http:
        async def failed() -> bool:
            response = await http.get(f"{bridge.url}/readyz")
            return response.json()["streams"][0]["state"] == "auth_failed"

        await eventually(failed, 10, "the stream to report the auth failure")
        await asyncio.sleep(3)  # a hot loop would hammer the oapi meanwhile
        response = await http.get(f"{bridge.url}/readyz")
    assert response.status_code == 503
    body = response.json()
    stream = body["streams"][0]
    assert body["ready"] is False
    assert stream["state"] == "auth_failed"
    assert "401" in stream["last_error"] or "refused" in stream["last_error"].lower()
    assert simulator.tokens.requests <= 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith("bridge")]
    assert any("credentials refused by the oapi" in r.getMessage() for r in errors)
    assert wrong not in caplog.text
    assert wrong not in response.text


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_auto_picks_the_dialect_the_server_speaks(dialect, start_simulator, start_bridge):
    simulator, sim = await start_simulator(dialects=(dialect,))
    service, bridge = await start_bridge(bridge_config(sim, dialect="auto"))
    body = await wait_ready(bridge)
    assert body["streams"][0]["dialect"] == dialect


GARBAGE = {
    "socketio-0.9": ["5:::{not json", "\ufffd99\ufffd5:::{}", "9::", "5:::{\"name\":7}"],
    "kazoo-json": ["{not json", "[1,2]", '{"action":"event","data":"x"}', ""],
    "engineio-4": ["42[oops", "4", "42{\"a\":1}", "x"],
}


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_malformed_frames_are_skipped_and_the_stream_survives(
        dialect, start_simulator, start_bridge, caplog):
    caplog.set_level(logging.WARNING, logger="bridge.upstream")
    simulator, sim = await start_simulator(
        dialects=(dialect,), calls_per_second=5.0, time_scale=0.2, seed=13,
        journal_size=10_000)
    service, bridge = await start_bridge(bridge_config(sim, dialect=dialect))
    await wait_ready(bridge)
    async with watch(bridge, [f"calls:{TENANT}"]) as watcher:
        simulator.start_traffic()
        await eventually(lambda: len(watcher.events) >= 5, 10, "traffic before the garbage")
        async with httpx.AsyncClient(trust_env=False) as http:
            for frame in GARBAGE[dialect]:
                sent = (await http.post(f"{sim.url}/_sim/inject", content=frame)).json()["sent"]
                assert sent == 1
        before = len(watcher.events)
        await eventually(lambda: len(watcher.events) >= before + 10, 10,
                         "traffic after the garbage")
        await simulator.stop_traffic()
        expected = journal_keys(simulator)
        await eventually(lambda: set(keys_of(watcher.events)) >= expected, 10,
                         "every generated signal to arrive")
    assert service.streams[0].status.reconnects == 0
    assert service.streams[0].snapshot()["state"] == "subscribed"
    assert sum("malformed frame skipped" in r.getMessage() for r in caplog.records) >= 3
