"""Kompaas provider against the fake over real HTTP: start, webhook, timeout, errors."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any, AsyncIterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.config.providers import KompaasAccount
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.base import ProviderContext
from bridge.providers.kompaas import create
from bridge.simulator.kompaas import KompaasFake
from tests.scenarios.conftest import eventually

JWT = secrets.token_urlsafe(32)
TOKEN = "kp-token-" + secrets.token_hex(8)
SECRET = "kp-hook-" + secrets.token_hex(8)
TENANT = "kp1"


class Rig:
    def __init__(self, fake: KompaasFake, bridge: AppServer, events: list[Event]) -> None:
        self.fake, self.bridge, self.events = fake, bridge, events
        self.http = httpx.AsyncClient(trust_env=False, timeout=10)

    @property
    def hook(self) -> str:
        return f"{self.bridge.url}/webhooks/kompaas/{TENANT}"

    async def start(self, phone: str, scopes: tuple[str, ...] = ("verifications:write",),
                    tenants: tuple[str, ...] = (TENANT,), tenant: str = TENANT,
                    body: Any = None) -> httpx.Response:
        token = mint_api(JWT, sub="test", scopes=scopes, tenants=tenants)
        return await self.http.post(
            f"{self.bridge.url}/api/v1/kompaas/{tenant}/verifications",
            json={"phone_number": phone} if body is None else body,
            headers={"authorization": f"Bearer {token}"})

    async def hook_post(self, body: Any, **headers: str) -> httpx.Response:
        return await self.http.post(self.hook, content=orjson.dumps(body),
                                    headers={"x-callbridge-secret": SECRET, **headers})


@contextlib.asynccontextmanager
async def rig(*, timeout: float = 60.0, api_token: str = TOKEN, fake_url: str | None = None,
              **fake_options: Any) -> AsyncIterator[Rig]:
    fake = KompaasFake(TOKEN, **fake_options)
    events: list[Event] = []
    async with AppServer(fake.build_app()) as fake_server, \
            httpx.AsyncClient(trust_env=False, timeout=5) as http:
        account = KompaasAccount(
            tenant=TENANT, api_url=fake_url or fake_server.url, api_token=api_token,
            webhook_secret=SECRET, verification_timeout=timeout)
        context = ProviderContext(submit=lambda e: events.append(e) or True, http=http,
                                  cursors=MemoryCursors())
        provider = create(account, context, streams=[])
        app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT, leeway=5))
        async with AppServer(app) as bridge:
            fake.webhook_url = f"{bridge.url}/webhooks/kompaas/{TENANT}?secret={SECRET}"
            task = asyncio.create_task(provider.run())
            r = Rig(fake, bridge, events)
            try:
                yield r
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await r.http.aclose()


@pytest.mark.parametrize(("q931", "final", "expected"), [
    (16, "ANSWER", "answered"), (17, "CANCEL", "busy"), (16, "CANCEL", "not_answered"),
    (31, "CANCEL", "rejected"), (41, None, "billing_problem"), (1, "CANCEL", "unreachable"),
])
async def test_start_then_outcome_webhook(q931: int, final: str | None, expected: str) -> None:
    async with rig() as r:
        r.fake.outcomes["421222202999"] = (q931, final)
        response = await r.start("421222202999")
        assert response.status_code == 201, response.text
        body = response.json()
        call = r.fake.calls[0]
        assert body["verification_call_uuid"] == call.uuid
        assert body["channel"] == f"verifications:{TENANT}"
        await eventually(lambda: len(r.events) == 1, 5, "the outcome event")
        event = r.events[0].to_dict()
        assert event["type"] == "verification.completed" and event["call_id"] == call.uuid
        assert event["detail"]["outcome"] == expected
        assert event["detail"]["q931_status"] == q931
        assert event["detail"].get("final_status") == final
        assert event["detail"]["phone_number"] == "421222202999"
        assert call.delivered == [200]


async def test_custom_body_template_and_field_paths() -> None:
    template = {"event": "flash", "data": {"id": "{{verification_call_uuid}}",
                                           "cause": "{{q931_status}}", "st": "{{final_status}}"}}
    fake = KompaasFake(TOKEN, body_template=template)
    events: list[Event] = []
    async with AppServer(fake.build_app()) as fs, httpx.AsyncClient(trust_env=False) as http:
        account = KompaasAccount(tenant=TENANT, api_url=fs.url, api_token=TOKEN,
                                 webhook_secret=SECRET, field_uuid="data.id",
                                 field_q931="data.cause", field_final="data.st")
        provider = create(account, ProviderContext(lambda e: events.append(e) or True, http,
                                                   MemoryCursors()))
        app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT, leeway=5))
        async with AppServer(app) as bridge:
            fake.webhook_url = f"{bridge.url}/webhooks/kompaas/{TENANT}"
            fake.webhook_headers = {"X-Callbridge-Secret": SECRET}
            fake.outcomes["421222202999"] = (17, "CANCEL")
            token = mint_api(JWT, sub="t", scopes=["verifications:write"])
            response = await http.post(f"{bridge.url}/api/v1/kompaas/{TENANT}/verifications",
                                       json={"phone_number": "421222202999"},
                                       headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 201
            await eventually(lambda: len(events) == 1, 5, "the outcome event")
            assert events[0].detail is not None and events[0].detail["outcome"] == "busy"
            # the default paths do not exist in this template: a clear 422
            bad = await http.post(f"{bridge.url}/webhooks/kompaas/{TENANT}",
                                  json={"verification_call_uuid": "x_1", "q931_status": 16},
                                  headers={"x-callbridge-secret": SECRET})
            assert bad.status_code == 422 and "data.id" in bad.json()["error"]["message"]


async def test_webhook_secret_missing_wrong_and_oversized() -> None:
    async with rig() as r:
        r.fake.outcomes["421222202999"] = None  # never delivered by itself
        uuid = (await r.start("421222202999")).json()["verification_call_uuid"]
        body = {"verification_call_uuid": uuid, "q931_status": 16, "final_status": "ANSWER"}
        missing = await r.http.post(r.hook, json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_secret"
        wrong = await r.hook_post(body, **{"x-callbridge-secret": SECRET + "x"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_secret"
        wrong_query = await r.http.post(r.hook + "?secret=nope-nope", json=body)
        assert wrong_query.status_code == 401
        big = {**body, "padding": "x" * 70_000}
        oversized = await r.hook_post(big)
        assert oversized.status_code == 413
        not_json = await r.http.post(r.hook, content=b"{nope",
                                     headers={"x-callbridge-secret": SECRET})
        assert not_json.status_code == 400
        assert r.events == []
        ok = await r.http.post(r.hook + f"?secret={SECRET}", json=body)
        assert ok.json() == {"result": "emitted", "outcome": "answered"}
        again = await r.hook_post(body)  # a replayed webhook
        assert again.status_code == 200 and again.json()["result"] == "duplicate"
        assert len(r.events) == 1


async def test_unknown_uuid_is_acknowledged_not_emitted() -> None:
    async with rig() as r:
        response = await r.hook_post({"verification_call_uuid": "deadbeef0000_117793",
                                      "q931_status": 16, "final_status": "ANSWER"})
        assert response.status_code == 200 and response.json()["result"] == "unknown"
        await asyncio.sleep(0.1)
        assert r.events == []
        other = await r.http.post(f"{r.bridge.url}/webhooks/kompaas/nobody",
                                  json={}, headers={"x-callbridge-secret": SECRET})
        assert other.status_code == 404


async def test_timeout_then_late_webhook() -> None:
    async with rig(timeout=0.3) as r:
        r.fake.outcomes["421222202999"] = None
        uuid = (await r.start("421222202999")).json()["verification_call_uuid"]
        await eventually(lambda: len(r.events) == 1, 5, "the timed-out event")
        detail = r.events[0].detail
        assert detail is not None and detail["outcome"] == "timed_out"
        assert detail["timeout_seconds"] == 0.3 and "q931_status" not in detail
        late = await r.fake.deliver(r.fake.calls[0], 16, "ANSWER")
        assert late.status_code == 200 and late.json()["result"] == "late"
        await asyncio.sleep(0.1)
        assert len(r.events) == 1 and r.events[0].call_id == uuid


@pytest.mark.parametrize(("phone", "says"), [
    ("+421222202999", "'+'"), ("421 222 202 999", "digits only"), ("0905123456", "country"),
    ("1234567", "8 to 15"), ("1234567890123456", "8 to 15"), ("", "empty"),
])
async def test_invalid_phone_numbers_rejected_before_the_provider(phone: str, says: str) -> None:
    async with rig() as r:
        response = await r.start(phone)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_phone_number" and says in error["message"]
        assert r.fake.calls == []
        for body in ({}, {"phone_number": "421222202999", "x": 1}, [1]):
            assert (await r.start("", body=body)).status_code == 400


async def test_api_token_scope_and_tenant() -> None:
    async with rig() as r:
        assert (await r.start("421222202999", scopes=("calls:read",))).status_code == 403
        assert (await r.start("421222202999", tenants=("other",))).status_code == 403
        missing = await r.start("421222202999", tenant="other", tenants=("*",))
        assert missing.status_code == 404
        assert r.fake.calls == []


@pytest.mark.parametrize(("status", "body", "ours", "code"), [
    (500, None, 502, "provider_error"),
    (503, b"maintenance", 502, "provider_error"),
    (422, {"status": "error", "code": 422, "message": "bad number"}, 400, "invalid_phone_number"),
    (402, {"status": "error", "message": "no credit"}, 402, "insufficient_credit"),
    (429, None, 503, "provider_rate_limited"),
    (200, {"status": "success", "code": 200, "object": {}}, 502, "provider_bad_answer"),
    (200, b"<html>", 502, "provider_bad_answer"),
])
async def test_provider_errors(status: int, body: Any, ours: int, code: str) -> None:
    async with rig() as r:
        r.fake.fail_next(status, body)
        response = await r.start("421222202999")
        assert response.status_code == ours
        assert response.json()["error"]["code"] == code
        assert r.events == []


async def test_bad_api_token_and_unreachable_provider() -> None:
    wrong = "wrong-token-" + secrets.token_hex(8)
    async with rig(api_token=wrong) as r:
        response = await r.start("421222202999")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "provider_auth_failed"
        assert wrong not in response.text and r.fake.calls == []
    with socket_closed() as url:
        async with rig(fake_url=url) as r:
            response = await r.start("421222202999")
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "provider_unavailable"


async def test_billing_problem_when_credit_is_spent() -> None:
    async with rig(balance=0.0) as r:
        assert (await r.start("421222202999")).status_code == 201
        await eventually(lambda: len(r.events) == 1, 5, "the outcome event")
        assert r.events[0].detail is not None
        assert r.events[0].detail["outcome"] == "billing_problem"


@contextlib.contextmanager
def socket_closed() -> Any:
    """A loopback URL on which nothing listens: the port stays bound (never listening) for the
    block, so no other server of the test run can be given it meanwhile."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
