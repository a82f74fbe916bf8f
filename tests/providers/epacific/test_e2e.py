"""ePacific through the real app: polled CDRs and presence on channels, CDR lookup API."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import httpx

from bridge.auth.tokens import mint_api
from bridge.http.serving import AppServer
from bridge.providers.epacific.protocol import cdr_event_id
from bridge.simulator.epacific import EPacificFake
from tests.scenarios.conftest import JWT_SECRET, eventually, start_bridge, watch  # noqa: F401

KEY = "ep-e2e-key-" + secrets.token_hex(6)
SECRET = "ep-e2e-secret-" + secrets.token_hex(8)


async def test_cdrs_presence_and_lookup(start_bridge) -> None:  # noqa: F811
    fake = EPacificFake(KEY, SECRET)
    block = {"api_url": "", "api_key": KEY, "api_secret": SECRET, "poll_interval": 0.2,
             "presence_interval": 0.2, "page_limit": 2}
    async with AppServer(fake.build_app()) as fake_server:
        block["api_url"] = fake_server.url
        service, bridge = await start_bridge({
            "server": {"host": "127.0.0.1", "port": 0}, "broker": {"url": "memory://"},
            "auth": {"jwt_secret": JWT_SECRET},
            # epb: same fake, a wrong secret
            "epacific": [{"tenant": "epa", **block},
                         {"tenant": "epb", **block, "api_secret": "not-the-secret"}],
        })
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            async with watch(bridge, ["calls:epa", "calls:epa:1001", "presence:epa"]) as w:
                # made once subscribed: the channels carry live events only
                now = datetime.now(timezone.utc)
                records = [fake.add_cdr(now - timedelta(minutes=20 - i), direction="outbound",
                                        source="1001") for i in range(5)]
                fake.online = {"1001"}
                await eventually(lambda: len(w.events) >= 11, 10, "CDRs and presence")
                fake.online = {"1002"}
                await eventually(lambda: len(w.events) >= 13, 10, "the presence change")
            by_channel: dict[str, list[dict]] = {}
            for frame in w.events:
                by_channel.setdefault(frame["channel"], []).append(frame["event"])
            expected = {cdr_event_id("epa", r["call_id"]) for r in records}
            assert sorted(e["id"] for e in by_channel["calls:epa"]) == sorted(expected)
            assert len(by_channel["calls:epa:1001"]) == 5
            assert [(e["extension"], e["detail"]["online"]) for e in by_channel["presence:epa"]
                    ] == [("1001", True), ("1002", True), ("1001", False)]

            read = mint_api(JWT_SECRET, sub="e2e", scopes=["calls:read"], tenants=["epa"])
            auth = {"authorization": f"Bearer {read}"}
            url = f"{bridge.url}/api/v1/epacific/epa/cdrs/{records[2]['call_id']}"
            response = await http.get(url, headers=auth)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["cdrs"][0]["record"] == records[2]
            assert body["cdrs"][0]["event"]["id"] == cdr_event_id("epa", records[2]["call_id"])
            missing = await http.get(f"{bridge.url}/api/v1/epacific/epa/cdrs/nope", headers=auth)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
            other = await http.get(f"{bridge.url}/api/v1/epacific/epb/cdrs/x", headers=auth)
            assert other.status_code == 403  # the token does not cover tenant epb
            assert (await http.get(url)).status_code == 401
            fake.call_faults[records[2]["call_id"]] = (
                503, b'{"status":"error","message":"maintenance"}')
            failed = await http.get(url, headers=auth)
            assert failed.status_code == 502
            assert failed.json()["error"]["code"] == "upstream_unavailable"
            assert SECRET not in failed.text and KEY not in failed.text
            spec = (await http.get(f"{bridge.url}/openapi.json")).json()
            op = spec["paths"]["/api/v1/epacific/{tenant}/cdrs/{call_id}"]["get"]
            assert op["security"] == [{"apiToken": []}] and "200" in op["responses"]
            # tenant epb (same fake, wrong secret) answers its lookups and shows its error
            everything = mint_api(JWT_SECRET, sub="e2e", scopes=["calls:read"], tenants=["*"])
            wrong = await http.get(f"{bridge.url}/api/v1/epacific/epb/cdrs/x",
                                   headers={"authorization": f"Bearer {everything}"})
            assert wrong.status_code == 502 and wrong.json()["error"]["code"] == "upstream_auth"
        providers = {p["name"]: p for p in (await service.readiness())[1]["providers"]}
        assert providers["epacific/epa"]["cdr"]["emitted"] == 5
        assert providers["epacific/epb"]["ok"] is False
        assert "credentials" in providers["epacific/epb"]["cdr"]["last_error"]

