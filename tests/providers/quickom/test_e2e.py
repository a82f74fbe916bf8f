"""Quickom through the real app: signed webhook and backfill reach a websocket subscriber once."""

from __future__ import annotations

import secrets

import httpx

from bridge.auth.tokens import mint_api
from bridge.config.model import Config
from bridge.core.service import Service
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server
from bridge.simulator.quickom import QuickomSimulator
from tests.scenarios.conftest import JWT_SECRET, eventually, watch

API_KEY = "qk-" + secrets.token_hex(8)
SIGNING = "qs-" + secrets.token_hex(8)


async def test_webhook_and_backfill_end_to_end() -> None:
    sim = QuickomSimulator(api_key=API_KEY, signing_secret=SIGNING, recording_bytes=50_000)
    async with AppServer(sim.build_app()) as fake:
        config = Config.model_validate({
            "server": {"host": "127.0.0.1", "port": 0}, "broker": {"url": "memory://"},
            "auth": {"jwt_secret": JWT_SECRET},
            "quickom": [{"tenant": "qe2e", "api_url": fake.url, "api_key": API_KEY,
                         "signing_secret": SIGNING, "backfill_interval": 0.2}],
        })
        service = Service(config)
        async with bridge_server(build_app(config, service), config) as server, \
                watch(server, ["calls:qe2e"]) as watcher, \
                httpx.AsyncClient(trust_env=False, timeout=10) as http:
            missed = sim.add_call()  # a call whose webhook never came: the poller finds it
            await eventually(lambda: len(watcher.events) >= 1, 10, "the backfilled call")
            live = sim.add_call(member_id="m-200")
            answer = await sim.deliver(f"{server.url}/webhooks/quickom/qe2e", live)
            assert answer.status_code == 200
            await eventually(lambda: len(watcher.events) >= 2, 10, "the webhook call")
            sim.delivered.clear()  # both now listed by call/new again: must not repeat
            polls = len(sim.requests)
            await eventually(lambda: len(sim.requests) >= polls + 2, 10, "two more polls")
            events = [frame["event"] for frame in watcher.events]
            assert [e["call_id"] for e in events] == [missed["call_id"], live["call_id"]]
            assert all(e["type"] == "call.completed" and e["provider"] == "quickom"
                       for e in events)

            api = mint_api(JWT_SECRET, sub="e2e", scopes=["calls:read"], tenants=["qe2e"])
            detail = await http.get(
                f"{server.url}/api/v1/quickom/qe2e/calls/{live['call_id']}",
                headers={"authorization": f"Bearer {api}"})
            assert detail.status_code == 200 and detail.json()["call_id"] == live["call_id"]
            document = (await http.get(f"{server.url}/openapi.json")).json()
            assert "/webhooks/quickom/{tenant}" in document["paths"]
            recording = document["paths"]["/api/v1/quickom/{tenant}/calls/{call_id}/recording"]
            assert recording["get"]["security"] == [{"apiToken": []}]
            ready = (await http.get(f"{server.url}/readyz")).json()
            assert any(p["name"] == "quickom/qe2e" for p in ready["providers"])
