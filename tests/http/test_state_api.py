"""The live state over HTTP, for real (uvicorn, httpx, a websocket client): tokens, scopes and
tenants, the calls and extensions answers, 503 when the broker cannot answer, and legs whose
end never came closed by age and by a completed record."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bridge.auth.tokens import mint_api
from bridge.brokers.base import BrokerError, Snapshot
from bridge.brokers.memory import MemoryBroker
from bridge.config.model import Config
from bridge.core.closing import iso
from bridge.core.service import Service
from bridge.events.event import Durations, Event, EventType, Party
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server
from tests.scenarios.conftest import JWT_SECRET, eventually, watch

TENANT = "acme"


def config(**state: Any) -> Config:
    return Config.model_validate({
        "server": {"host": "127.0.0.1", "port": 0}, "auth": {"jwt_secret": JWT_SECRET},
        "state": state or {"max_call_age": 0},
        "kompaas": [{"tenant": TENANT, "api_url": "http://127.0.0.1:9",
                     "api_token": "kompaas-token", "webhook_secret": "kompaas-hook"}]})


class Bridge:
    def __init__(self, service: Service, server: AppServer, http: httpx.AsyncClient) -> None:
        self.service, self.server, self.http = service, server, http

    async def get(self, path: str, token: str | None = None) -> httpx.Response:
        token = token or mint_api(JWT_SECRET, sub="crm", scopes=["calls:read"],
                                  tenants=[TENANT])
        return await self.http.get(path, headers={"authorization": f"Bearer {token}"})

    async def publish(self, *events: Event) -> None:
        for event in events:
            assert self.service.pipeline.submit(event)
        assert await self.service.pipeline.drain(5)

    async def legs(self) -> set[str]:
        snapshot = await self.service.broker.snapshot(f"calls:{TENANT}")
        return {r["call_id"] for k, r in snapshot.records.items() if k.startswith("leg:")}


async def _bridge(cfg: Config, broker: MemoryBroker | None = None) -> AsyncIterator[Bridge]:
    service = Service(cfg, broker=broker)
    server = bridge_server(build_app(cfg, service), cfg)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            yield Bridge(service, server, http)
    finally:
        await server.close()


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async for b in _bridge(config()):
        yield b


def leg(call_id: str, kind: EventType = EventType.CREATED, *, at: float | None = None,
        extension: str | None = "1001", **fields: Any) -> Event:
    fields.setdefault("caller", Party("1001", "Alice"))
    fields.setdefault("callee", Party("0912345678", None))
    return Event(id=f"{call_id}-{kind}", type=kind, provider="antbuddy", tenant=TENANT,
                 occurred_at=iso(at if at is not None else time.time()), call_id=call_id,
                 extension=extension, account="acct-1", **fields)


async def test_calls_extensions_and_one_extension(bridge: Bridge) -> None:
    await bridge.publish(
        leg("a-1", bridge_id="b-1", direction="outgoing", leg_direction="inbound"),
        leg("a-2", bridge_id="b-1", other_leg_id="a-1", extension="1002",
            direction="incoming", leg_direction="outbound"),
        leg("a-2", EventType.ANSWERED, bridge_id="b-1", extension="1002"),
        Event(id="p-1", type=EventType.PRESENCE, provider="epacific", tenant=TENANT,
              occurred_at=iso(time.time()), detail={"extension": "1003", "online": True}))

    answer = await bridge.get(f"/api/v1/state/{TENANT}/calls")
    assert answer.status_code == 200
    body = answer.json()
    assert body["tenant"] == TENANT and body["epoch"] and body["offset"] != "0-0"
    (call,) = body["calls"]
    assert call["call_id"] == "b-1" and call["state"] == "answered"
    assert call["extensions"] == ["1001", "1002"] and call["direction"] == "internal"
    assert [leg["call_id"] for leg in call["legs"]] == ["a-1", "a-2"]

    body = (await bridge.get(f"/api/v1/state/{TENANT}/extensions")).json()
    assert body["tenant"] == TENANT and body["offset"] != "0-0"
    assert body["extensions"] == [
        {"extension": "1001", "status": "ringing", "calls": ["b-1"]},
        {"extension": "1002", "status": "talking", "calls": ["b-1"]},
        {"extension": "1003", "status": "idle", "calls": [], "online": True}]

    body = (await bridge.get(f"/api/v1/state/{TENANT}/extensions/1002")).json()
    assert body["tenant"] == TENANT and body["offset"] != "0-0"
    assert body["extension"] == {"extension": "1002", "status": "talking", "calls": ["b-1"]}
    body = (await bridge.get(f"/api/v1/state/{TENANT}/extensions/1003")).json()
    assert body["extension"] == {"extension": "1003", "status": "idle", "calls": [],
                                 "online": True}
    body = (await bridge.get(f"/api/v1/state/{TENANT}/extensions/2000")).json()
    assert body["offset"] == "0-0"
    assert body["extension"] == {"extension": "2000", "status": "idle", "calls": []}


async def test_tokens_scopes_and_tenants_are_checked(bridge: Bridge) -> None:
    path = f"/api/v1/state/{TENANT}/calls"
    assert (await bridge.http.get(path)).status_code == 401
    dial = mint_api(JWT_SECRET, sub="crm", scopes=["calls:dial"], tenants=[TENANT])
    answer = await bridge.get(path, dial)
    assert answer.status_code == 403 and "calls:read" in answer.json()["error"]["message"]
    other = mint_api(JWT_SECRET, sub="crm", scopes=["calls:read"], tenants=["globex"])
    for suffix in ("calls", "extensions", "extensions/1001"):
        answer = await bridge.get(f"/api/v1/state/{TENANT}/{suffix}", other)
        assert answer.status_code == 403, suffix
        assert answer.json()["error"]["code"] == "forbidden"
    admin = mint_api(JWT_SECRET, sub="ops", scopes=["admin"], tenants=["*"])
    assert (await bridge.get(path, admin)).status_code == 200
    answer = await bridge.get("/api/v1/state/globex/calls", admin)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_tenant"
    answer = await bridge.get(f"/api/v1/state/{TENANT}/extensions/{'9' * 65}")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_extension"


async def test_the_endpoints_are_in_openapi(bridge: Bridge) -> None:
    paths = (await bridge.http.get("/openapi.json")).json()["paths"]
    for path in ("/api/v1/state/{tenant}/calls", "/api/v1/state/{tenant}/extensions",
                 "/api/v1/state/{tenant}/extensions/{extension}"):
        operation = paths[path]["get"]
        assert operation["security"] == [{"apiToken": []}]
        assert "`calls:read`" in operation["description"] and "503" in operation["responses"]


class DownBroker(MemoryBroker):
    """A memory broker whose snapshots fail while ``down``."""

    down = False

    async def snapshot(self, channel: str) -> Snapshot:
        if self.down:
            raise BrokerError("redis at 127.0.0.1:1: connect failed")
        return await super().snapshot(channel)


async def test_a_broker_that_cannot_answer_is_a_503_to_retry() -> None:
    broker = DownBroker()
    async for bridge in _bridge(config(), broker):
        broker.down = True
        for suffix in ("calls", "extensions", "extensions/1001"):
            answer = await bridge.get(f"/api/v1/state/{TENANT}/{suffix}")
            assert answer.status_code == 503, suffix
            assert answer.json()["error"]["code"] == "retry_later"
            assert answer.headers["retry-after"] == "1"
            assert "connect failed" not in answer.text
        broker.down = False
        assert (await bridge.get(f"/api/v1/state/{TENANT}/calls")).status_code == 200


async def test_a_missed_hangup_is_closed_by_age() -> None:
    async for bridge in _bridge(config(max_call_age=2, sweep_interval=0.2)):
        async with watch(bridge.server, [f"calls:{TENANT}"]) as watcher:
            await bridge.publish(leg("old-1", at=time.time() - 60),
                                 leg("new-1", extension="1002"))

            def closed() -> list[dict[str, Any]]:
                return [m["event"] for m in watcher.events
                        if m["event"]["type"] == "call.ended"]

            await eventually(lambda: bool(closed()), 5, "the old leg to be closed")
            (ended,) = closed()
            assert ended["call_id"] == "old-1" and ended["extension"] == "1001"
            assert ended["detail"] == {"closed_by": "max_age"}
            assert ended["provider"] == "antbuddy" and ended["account"] == "acct-1"
            assert ended["caller"] == {"number": "1001", "name": "Alice"}
            assert "hangup" not in ended and len(ended["id"]) == 26
            assert await bridge.legs() == {"new-1"}
            calls = (await bridge.get(f"/api/v1/state/{TENANT}/calls")).json()["calls"]
            assert [c["call_id"] for c in calls] == ["new-1"]


async def test_a_missed_hangup_is_closed_by_a_completed_record(bridge: Bridge) -> None:
    start = time.time() - 30
    async with watch(bridge.server, [f"calls:{TENANT}"]) as watcher:
        await bridge.publish(
            leg("x-1", at=start, bridge_id="b-9", leg_direction="inbound"),
            leg("x-2", at=start + 0.2, bridge_id="b-9", other_leg_id="x-1",
                extension="1002", leg_direction="outbound"),
            leg("y-1", at=start, extension="1005", callee=Party("0900000000")),
            # AntBuddy's call history: no live id; the parties and the time say which call.
            Event(id="abh-1", type=EventType.COMPLETED, provider="antbuddy", tenant=TENANT,
                  occurred_at=iso(int(start)), call_id="history-1", extension="1001",
                  caller=Party("1001"), callee=Party("+84912345678"),
                  durations=Durations(duration=20, billing=15, ringing=5)))

        def closed() -> dict[str, dict[str, Any]]:
            return {m["event"]["call_id"]: m["event"] for m in watcher.events
                    if m["event"]["type"] == "call.ended"}

        await eventually(lambda: len(closed()) == 2, 5, "both legs of the call to be closed")
        assert {e["detail"]["closed_by"] for e in closed().values()} == {"reconciled"}
        assert closed()["x-1"]["detail"]["completed_id"] == "abh-1"
        assert await bridge.legs() == {"y-1"}
        # A record that carries the live leg's id closes it whatever its parties.
        await bridge.publish(Event(id="q-1", type=EventType.COMPLETED, provider="quickom",
                                   tenant=TENANT, occurred_at=iso(time.time()),
                                   call_id="y-1"))
        await eventually(lambda: "y-1" in closed(), 5, "the leg named by id to be closed")
        assert await bridge.legs() == set()
