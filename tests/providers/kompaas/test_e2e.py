"""Kompaas through the real app: API token, provider call, webhook, event on the channel."""

from __future__ import annotations

import secrets

import httpx

from bridge.auth.tokens import mint_api
from bridge.http.serving import AppServer
from bridge.simulator.kompaas import KompaasFake
from tests.scenarios.conftest import JWT_SECRET, eventually, start_bridge, watch  # noqa: F401

TOKEN = "kp-e2e-token-" + secrets.token_hex(8)
SECRET = "kp-e2e-hook-" + secrets.token_hex(8)


async def test_verification_end_to_end(start_bridge) -> None:  # noqa: F811
    fake = KompaasFake(TOKEN)
    async with AppServer(fake.build_app()) as fake_server:
        service, bridge = await start_bridge({
            "server": {"host": "127.0.0.1", "port": 0}, "broker": {"url": "memory://"},
            "auth": {"jwt_secret": JWT_SECRET},
            "kompaas": [{"tenant": "kpa", "api_url": fake_server.url, "api_token": TOKEN,
                         "webhook_secret": SECRET},
                        {"tenant": "kpb", "api_url": fake_server.url, "api_token": TOKEN,
                         "webhook_secret": SECRET + "b"}],
        })
        fake.webhook_url = f"{bridge.url}/webhooks/kompaas/kpb?secret={SECRET}b"
        fake.outcomes["421222202999"] = (17, "CANCEL")
        api = mint_api(JWT_SECRET, sub="e2e", scopes=["verifications:write"], tenants=["kpb"])
        async with watch(bridge, ["verifications:kpb"]) as watcher, \
                httpx.AsyncClient(trust_env=False, timeout=10) as http:
            response = await http.post(f"{bridge.url}/api/v1/kompaas/kpb/verifications",
                                       json={"phone_number": "421222202999"},
                                       headers={"authorization": f"Bearer {api}"})
            assert response.status_code == 201, response.text
            uuid = response.json()["verification_call_uuid"]
            await eventually(lambda: len(watcher.events) == 1, 10, "the verification event")
            event = watcher.events[0]["event"]
            assert event["call_id"] == uuid and event["tenant"] == "kpb"
            assert event["detail"]["outcome"] == "busy"
            # the other tenant's secret does not open this tenant's webhook
            wrong = await http.post(f"{bridge.url}/webhooks/kompaas/kpb",
                                    json={"verification_call_uuid": uuid, "q931_status": 16},
                                    headers={"x-callbridge-secret": SECRET})
            assert wrong.status_code == 401
            spec = (await http.get(f"{bridge.url}/openapi.json")).json()
            op = spec["paths"]["/api/v1/kompaas/{tenant}/verifications"]["post"]
            assert op["security"] == [{"apiToken": []}]
            assert "post" in spec["paths"]["/webhooks/kompaas/{tenant}"]
        ready = {p["name"]: p for p in (await service.readiness())[1]["providers"]}
        assert ready["kompaas/kpb"]["emitted"] == 1 and ready["kompaas/kpa"]["started"] == 0
