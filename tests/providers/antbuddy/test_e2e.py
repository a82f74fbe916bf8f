"""AntBuddy REST end to end: the real app, the simulator, an API token, a websocket watcher."""

from __future__ import annotations

import random
import time

import httpx

from bridge.auth.tokens import mint_api
from bridge.simulator.calls import Endpoint, Outcome, plan_call
from tests.scenarios.conftest import (
    ACCOUNT,
    JWT_SECRET,
    TENANT,
    bridge_config,
    eventually,
    start_bridge,
    start_simulator,
    wait_ready,
    watch,
)

__all__ = ["start_bridge", "start_simulator"]


def _play(emit, caller: str, callee: str, start: float, seed: int) -> str:
    flow = plan_call(random.Random(seed), start=start, account_id=ACCOUNT,
                     realm="sim.callbridge.local", caller=Endpoint(caller),
                     callee=Endpoint(callee, internal=False), outcome=Outcome.ANSWERED,
                     scale=0.05)
    for signal in flow:
        emit(ACCOUNT, signal.name, signal.payload)
    return flow[0].payload["Call-ID"]


async def test_api_and_gap_fill(start_simulator, start_bridge) -> None:
    sim, sim_server = await start_simulator()
    state = sim.rest
    state.online = {"phone1"}
    emit = sim.emit
    data = bridge_config(sim_server, sip_user="phone1", sip_password="pw-phone-1",
                         upstream={"reconnect_initial": 0.1, "reconnect_max": 0.5})
    service, server = await start_bridge(data)
    await wait_ready(server)
    token = mint_api(JWT_SECRET, sub="t", scopes=["calls:dial", "calls:read"],
                     tenants=[TENANT])
    auth = {"authorization": f"Bearer {token}"}
    base = f"{server.url}/api/v1/antbuddy/{TENANT}"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        r = await http.post(f"{base}/calls", json={"number": "0912345678"}, headers=auth)
        assert r.status_code == 200 and state.dials[-1][1:] == ("0912345678", "phone1")
        r = await http.post(f"{base}/calls", json={"number": "0912345678", "sip_user": "p2",
                                                   "sip_password": "pw-p2-x"}, headers=auth)
        assert r.status_code == 409 and r.json()["error"]["code"] == "device_offline"
        r = await http.post(f"{base}/calls", json={"number": "12; DROP"}, headers=auth)
        assert r.status_code == 422
        r = await http.post(f"{server.url}/api/v1/antbuddy/other/calls",
                            json={"number": "0912345678"}, headers=auth)
        assert r.status_code == 403
        spec = (await http.get(f"{server.url}/openapi.json")).json()
        assert "/api/v1/antbuddy/{tenant}/calls" in spec["paths"]

        async with watch(server, [f"calls:{TENANT}"]) as watcher:
            now = time.time()
            live = _play(emit, "1001", "+84911111111", now - 60, 1)
            await eventually(lambda: any(e["event"]["type"] == "call.ended" and
                                         e["event"].get("call_id") == live
                                         for e in watcher.events), 10, "the live call's end")
            await sim.hub.drop(ACCOUNT)
            # No await in between: the stream cannot be back before these calls are over.
            _play(emit, "1002", "+84922222222", now - 30, 2)
            _play(emit, "1003", "+84933333333", now - 20, 3)

            def completed() -> list[dict]:
                return [e["event"] for e in watcher.events
                        if e["event"]["type"] == "call.completed"]
            provider = service.providers[0]
            await eventually(lambda: len(completed()) >= 2, 20, "the missed calls' records")
            await eventually(lambda: provider.counts["fills"] >= 1 and not provider.pending,
                             10, "the fill to finish")
            got = sorted(e["caller"]["number"] for e in completed())
            assert got == ["1002", "1003"]  # the live call 1001 was matched and skipped
            assert provider.counts["matched_live"] >= 1
            media = next(e["detail"]["recording"] for e in completed())
        r = await http.get(f"{base}/recordings/{media}", headers=auth)
        assert r.status_code == 200
        assert (await http.get(r.json()["url"])).status_code == 200
        r = await http.get(f"{base}/recordings/none.mp3", headers=auth)
        assert r.status_code == 404
