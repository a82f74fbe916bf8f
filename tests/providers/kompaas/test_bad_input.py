"""Kompaas: malformed webhook fields and provider answers are refused with a clear 4xx/502.

Real HTTP against the real provider app, on the in-process store and on the real Redis at
127.0.0.1:6379 (a number past 64 bits once reached Redis and answered 500). Every refusal names
the field without echoing its value, and a valid request right after still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any, AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.config.providers import KompaasAccount
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.base import ProviderContext
from bridge.providers.kompaas.provider import KompaasProvider
from bridge.redisconn.clients import drop_prefix
from bridge.simulator.kompaas import KompaasFake

REDIS = "redis://127.0.0.1:6379/0"
JWT = secrets.token_urlsafe(32)
TOKEN = "kp-bad-token-" + secrets.token_hex(8)
SECRET = "kp-bad-hook-" + secrets.token_hex(8)
TENANT = "kpbad"
PHONE = "421222202999"


class Bridge:
    def __init__(self, fake: KompaasFake, url: str, http: httpx.AsyncClient,
                 events: list[Event]) -> None:
        self.fake, self.url, self.http, self.events = fake, url, http, events

    async def start(self, body: Any = None) -> httpx.Response:
        token = mint_api(JWT, sub="t", scopes=["verifications:write"], tenants=[TENANT])
        return await self.http.post(f"{self.url}/api/v1/kompaas/{TENANT}/verifications",
                                    json={"phone_number": PHONE} if body is None else body,
                                    headers={"authorization": f"Bearer {token}"})

    async def hook(self, body: dict[str, Any]) -> httpx.Response:
        # json.dumps: orjson cannot write 10**40, which a sender can.
        return await self.http.post(f"{self.url}/webhooks/kompaas/{TENANT}",
                                    content=json.dumps(body).encode(),
                                    headers={"x-callbridge-secret": SECRET,
                                             "content-type": "application/json"})


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    if request.param == "memory":
        yield "memory://", "callbridge:"
        return
    prefix = f"cbtest-kpbad-{secrets.token_hex(4)}:"
    yield REDIS, prefix
    await drop_prefix(REDIS, prefix)


@contextlib.asynccontextmanager
async def bridge(broker_url: str, prefix: str) -> AsyncIterator[Bridge]:
    fake = KompaasFake(TOKEN)
    events: list[Event] = []
    async with AppServer(fake.build_app()) as fake_server, \
            httpx.AsyncClient(trust_env=False, timeout=10) as http:
        account = KompaasAccount(tenant=TENANT, api_url=fake_server.url, api_token=TOKEN,
                                 webhook_secret=SECRET, verification_timeout=60.0)
        context = ProviderContext(submit=lambda e: events.append(e) or True, http=http,
                                  cursors=MemoryCursors(), broker_url=broker_url, prefix=prefix)
        provider = KompaasProvider(account, context)
        app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT, leeway=5))
        task = asyncio.create_task(provider.run())
        try:
            async with AppServer(app) as server:
                yield Bridge(fake, server.url, http, events)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


BAD_WEBHOOK_FIELDS = [
    ("q931_status", 1e40), ("q931_status", 10**40), ("q931_status", -1e308),
    ("q931_status", 2**63), ("q931_status", -1), ("q931_status", 128), ("q931_status", 16.5),
    ("q931_status", "NaN"), ("q931_status", "Infinity"), ("q931_status", "1e1"),
    ("q931_status", "١٦"), ("q931_status", "１６"), ("q931_status", True), ("q931_status", ""),
    ("q931_status", "16\x00"), ("q931_status", None), ("q931_status", [16]),
    ("verification_call_uuid", 12345), ("verification_call_uuid", 1.5),
    ("verification_call_uuid", "fa278be48dc2\x00_117793"), ("verification_call_uuid", "x" * 129),
    ("verification_call_uuid", ""), ("verification_call_uuid", True),
    ("verification_call_uuid", "fa278be48dc2_١١٧"),
    ("final_status", "ANS\x00WER"), ("final_status", "A" * 65), ("final_status", True),
    ("final_status", 16),
]


async def test_malformed_webhook_fields_get_422_naming_the_field(
        broker: tuple[str, str]) -> None:
    async with bridge(*broker) as b:
        b.fake.outcomes[PHONE] = None  # delivered by the test
        started = await b.start()
        assert started.status_code == 201, started.text
        uuid = started.json()["verification_call_uuid"]
        good = {"verification_call_uuid": uuid, "q931_status": 16, "final_status": "ANSWER"}
        for field, value in BAD_WEBHOOK_FIELDS:
            answer = await b.hook({**good, field: value})
            assert answer.status_code == 422, (field, value, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "invalid_field", (field, value)
            assert repr(field) in error["message"], (field, value, error)
            if isinstance(value, str) and len(value) > 3:
                assert value not in answer.text  # never echoed
            assert SECRET not in answer.text
        assert b.events == []
        # Nothing was lost: the verification still completes with the valid webhook.
        ok = await b.hook(good)
        assert ok.status_code == 200 and ok.json() == {"result": "emitted",
                                                        "outcome": "answered"}
        assert len(b.events) == 1 and b.events[0].detail is not None
        assert b.events[0].detail["q931_status"] == 16
        b.events[0].to_json()  # the event serializes


@pytest.mark.parametrize(("value", "expected"), [
    (16, 16), (16.0, 16), ("16", 16), (" 17 ", 17), (0, 0), (127, 127),
])
async def test_valid_q931_forms_are_still_read(value: Any, expected: int) -> None:
    async with bridge("memory://", "callbridge:") as b:
        b.fake.outcomes[PHONE] = None
        uuid = (await b.start()).json()["verification_call_uuid"]
        ok = await b.hook({"verification_call_uuid": uuid, "q931_status": value,
                           "final_status": "CANCEL"})
        assert ok.status_code == 200 and ok.json()["result"] == "emitted", ok.text
        assert b.events[0].detail is not None and b.events[0].detail["q931_status"] == expected


@pytest.mark.parametrize("phone", [True, 421222202999, 4.21222202999e11, None,
                                   "４２１２２２２０２９９９", "421222202999\x00",
                                   "421222202999" * 20])
async def test_start_refuses_non_string_or_non_ascii_numbers(phone: Any) -> None:
    async with bridge("memory://", "callbridge:") as b:
        answer = await b.start({"phone_number": phone})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_phone_number"
        assert "phone_number" in answer.json()["error"]["message"]
        assert b.fake.calls == []
        assert (await b.start()).status_code == 201  # the next valid request works


@pytest.mark.parametrize("uuid", ["fa278be48dc2\x00_117793", "fa278be48dc2 _117793", "x" * 129,
                                  "fa278be48dc2_١١٧٧٩٣", 12345, True, ""])
async def test_malformed_verification_id_from_kompaas_is_a_502(uuid: Any) -> None:
    async with bridge("memory://", "callbridge:") as b:
        b.fake.fail_next(200, {"status": "success", "code": 200, "object": {
            "login_did": "7777777777", "code": "2463", "account_id": "117793",
            "verification_call_uuid": uuid}})
        answer = await b.start()
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "provider_bad_answer"
        assert "verification_call_uuid" in error["message"]
        assert TOKEN not in answer.text
        assert (await b.start()).status_code == 201


async def test_malformed_extra_answer_fields_are_dropped_not_fatal() -> None:
    async with bridge("memory://", "callbridge:") as b:
        b.fake.fail_next(200, {"status": "success", "code": 200, "object": {
            "login_did": 1e40, "code": "24\x0063", "account_id": 117793,
            "verification_call_uuid": "119214e015ed_117793"}})
        answer = await b.start()
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["verification_call_uuid"] == "119214e015ed_117793"
        assert body["login_did"] is None and body["code"] is None
        assert body["account_id"] == "117793"
