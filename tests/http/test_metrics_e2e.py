"""/metrics end to end: the simulator and the bridge for real, a scripted call, real clients.

Every count checked here is one the test caused: the call's signals by type, the clients and
their subscriptions, a resume that is replayed and one that is told about a gap.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bridge import __version__
from bridge.auth.tokens import mint
from bridge.redisconn.clients import drop_prefix
from bridge.simulator.calls import Endpoint, Outcome, plan_call
from bridge.upstream.normalize import TYPES
from tests.http.scrape import scrape
from tests.scenarios.conftest import (
    ACCOUNT,
    APP_ID,
    APP_SECRET,
    JWT_SECRET,
    SCALE,
    TENANT,
    bridge_config,
    eventually,
    wait_ready,
    watch,
)

REDIS = "redis://127.0.0.1:6379/0"
STREAM = f"antbuddy/{TENANT}/{ACCOUNT}"
CHANNEL = f"calls:{TENANT}"


async def resume_from(ws_url: str, epoch: str, offset: str, expect: int) -> list[dict[str, Any]]:
    """Connect, subscribe ``CHANNEL`` resuming after ``(epoch, offset)``; return the frames
    (events and gaps) that follow, once ``expect`` of them arrived."""
    token = mint(JWT_SECRET, sub="it-resumer", channels=[CHANNEL], ttl=600)
    frames: list[dict[str, Any]] = []
    async with connect(f"{ws_url}/ws", proxy=None, compression=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await ws.send(orjson.dumps({
            "type": "subscribe", "id": 1, "channels": [CHANNEL],
            "resume": {CHANNEL: {"epoch": epoch, "offset": offset}}}).decode())
        async with asyncio.timeout(10 * SCALE):
            while len(frames) < expect:
                message = orjson.loads(await ws.recv())
                if message["type"] in ("event", "gap"):
                    frames.append(message)
    return frames


async def test_scripted_call_is_counted_by_type_with_clients_streams_and_resumes(
        start_simulator, start_bridge):
    prefix = f"cbtest-metrics-{secrets.token_hex(4)}:"
    simulator, sim = await start_simulator()
    service, bridge = await start_bridge(bridge_config(
        sim, dialect="kazoo-json", broker={"url": REDIS, "prefix": prefix}))
    try:
        await wait_ready(bridge)
        plan = plan_call(random.Random(5), start=time.time(), account_id=ACCOUNT,
                         realm="sim.callbridge.local", caller=Endpoint("1001"),
                         callee=Endpoint("1002"), outcome=Outcome.ANSWERED, hold=True)
        expected = Counter(str(TYPES[signal.name]) for signal in plan)
        call_ids = {signal.payload["Call-ID"] for signal in plan}
        async with watch(bridge, [CHANNEL]) as watcher:
            for signal in plan:
                assert simulator.emit(ACCOUNT, signal.name, signal.payload) == 1
            await eventually(lambda: len(watcher.events) == len(plan), 10,
                             "every signal of the call to reach the client")
            live = await scrape(bridge.url)

            first = watcher.events[0]
            replayed = await resume_from(bridge.ws_url, first["epoch"], first["offset"],
                                         expect=len(plan) - 1)
            gap = await resume_from(bridge.ws_url, "0badc0ffee00", "1-0", expect=1)
            after = await scrape(bridge.url)
    finally:
        await drop_prefix(REDIS, prefix)

    assert live.content_type.startswith("text/plain; version=")
    # Events in and out, by provider and type: exactly the call's signals.
    assert live.by_label("callbridge_events_received_total", "type") == expected
    assert live.by_label("callbridge_events_published_total", "type") == expected
    for kind, n in expected.items():
        assert live.value("callbridge_events_received_total", provider="antbuddy", type=kind) == n
    assert live.value("callbridge_publish_latency_seconds_count") == len(plan)
    assert live.value("callbridge_publish_latency_seconds_bucket", le="+Inf") == len(plan)
    assert live.value("callbridge_publish_latency_seconds_sum") > 0
    assert live.value("callbridge_events_duplicate_total") == 0
    assert live.value("callbridge_client_frames_total") == len(plan)
    # One client on one channel.
    assert live.value("callbridge_clients") == 1
    assert live.value("callbridge_subscriptions") == 1
    assert live.value("callbridge_subscribed_channels") == 1
    # The stream, its lease and its token.
    assert live.value("callbridge_upstream_stream_up", stream=STREAM) == 1
    assert live.value("callbridge_upstream_lease_held", stream=STREAM) == 1
    assert live.value("callbridge_upstream_streams", provider="antbuddy", state="subscribed") == 1
    assert live.value("callbridge_upstream_streams", provider="antbuddy", state="backoff") == 0
    assert live.value("callbridge_upstream_reconnects_total", stream=STREAM) == 0
    app = f"{APP_ID}@127.0.0.1"
    assert live.value("callbridge_upstream_token_refreshes_total", app=app) >= 1
    assert live.value("callbridge_upstream_token_failures_total", app=app) == 0
    assert live.value("callbridge_upstream_token_state", app=app, state="ok") == 1
    # The broker, and the process collectors on the app's own registry.
    assert live.value("callbridge_broker_up") == 1
    assert live.value("callbridge_broker_buffered_events") == 0
    assert live.value("callbridge_broker_errors_total") == 0
    assert live.value("process_resident_memory_bytes") > 0
    assert live.value("callbridge_build_info", version=__version__) == 1

    # Resumes: one replayed everything after the first event, one was told about a gap.
    assert [f["event"]["id"] for f in replayed] == [e["event"]["id"] for e in watcher.events[1:]]
    assert [(f["type"], f["reason"]) for f in gap] == [("gap", "epoch_changed")]
    assert after.value("callbridge_resumes_total", outcome="ok") == 1
    assert after.value("callbridge_resumes_total", outcome="epoch_changed") == 1
    assert after.value("callbridge_resumes_total", outcome="trimmed") == 0
    assert after.value("callbridge_resumes_total", outcome="too_old") == 0

    # No label holds a secret, a token, a call id or a channel; the text holds none either.
    token = service.streams[0].tokens.current
    assert token is not None
    forbidden = {APP_SECRET, JWT_SECRET, token.value, CHANNEL, *call_ids}
    for text in (live.text, after.text):
        for value in forbidden:
            assert value not in text
    for value in live.label_values() | after.label_values():
        assert not any(secret in value or value in secret for secret in forbidden
                       if len(value) >= 4), value


async def test_every_app_has_its_own_registry(start_simulator, start_bridge):
    """Two bridges in one process: their metrics do not mix (nor fail to register)."""
    simulator, sim = await start_simulator()
    _, one = await start_bridge(bridge_config(sim, dialect="kazoo-json"))
    _, two = await start_bridge(bridge_config(sim, dialect="kazoo-json", tenant="other"))
    await wait_ready(one)
    await wait_ready(two)
    first, second = await scrape(one.url), await scrape(two.url)
    assert set(first.by_label("callbridge_upstream_stream_up", "stream")) == {STREAM}
    assert set(second.by_label("callbridge_upstream_stream_up", "stream")) == {
        f"antbuddy/other/{ACCOUNT}"}
