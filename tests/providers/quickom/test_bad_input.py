"""Quickom: malformed fields in webhooks, backfilled calls and API requests are refused.

Webhooks (real HTTP, correctly signed) answer 400 naming the field; a backfilled record with a
malformed field is skipped with a rate-limited warning while the others are emitted; the API
refuses malformed call ids and record selectors before asking Quickom.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any, AsyncIterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.config.providers import QuickomAccount
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.base import ProviderContext
from bridge.providers.quickom import create, signature
from bridge.providers.quickom.provider import QuickomProvider
from bridge.simulator.quickom import QuickomSimulator

API_KEY = "qk-" + secrets.token_hex(8)
SIGNING = "qs-" + secrets.token_hex(8)
JWT = secrets.token_urlsafe(32)
TENANT = "acme"


class Rig:
    def __init__(self, sim: QuickomSimulator, provider: QuickomProvider, url: str,
                 http: httpx.AsyncClient, events: list[Event]) -> None:
        self.sim, self.provider, self.url, self.http, self.events = sim, provider, url, http, events

    async def hook(self, body: dict[str, Any]) -> httpx.Response:
        """POST ``body`` correctly signed. json.dumps writes 10**40 (orjson cannot); the
        signature covers the values as JSON numbers read them (10**40 is 1e+40, as a
        JavaScript sender would write it)."""
        content = json.dumps(body).encode()
        return await self.http.post(f"{self.url}/webhooks/quickom/{TENANT}", content=content,
                                    headers={"Signature": signature.sign(SIGNING,
                                                                         orjson.loads(content)),
                                             "content-type": "application/json"})


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sim = QuickomSimulator(api_key=API_KEY, signing_secret=SIGNING)
    events: list[Event] = []
    async with AppServer(sim.build_app()) as fake, \
            httpx.AsyncClient(trust_env=False, timeout=10) as http:
        account = QuickomAccount.model_validate(
            {"tenant": TENANT, "api_url": fake.url, "api_key": API_KEY,
             "signing_secret": SIGNING, "backfill_interval": 0.0})
        context = ProviderContext(submit=lambda e: events.append(e) or True, http=http,
                                  cursors=MemoryCursors())
        provider = create(account, context)
        app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT, leeway=5))
        async with AppServer(app) as server:
            yield Rig(sim, provider, server.url, http, events)


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the dotted ``path`` (list items by index) set."""
    copy: Any = json.loads(json.dumps(body))
    node = copy
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value
    return dict(copy)


#: (path in the body, value, the field's name in the error)
BAD_WEBHOOK_FIELDS = [
    ("start_time", 1e40, "start_time"), ("start_time", 10**40, "start_time"),
    ("end_time", -1e308, "end_time"), ("start_time", -1, "start_time"),
    ("start_time", 0, "start_time"), ("start_time", "١٢٣", "start_time"),
    ("end_time", "１７００００００４２", "end_time"), ("start_time", "NaN", "start_time"),
    ("start_time", "inf", "start_time"), ("start_time", "1e9", "start_time"),
    ("start_time", "1_700_000_000", "start_time"), ("start_time", "", "start_time"),
    ("start_time", "17\x0000", "start_time"), ("end_time", 1e15, "end_time"),
    ("call_id", 12345, "call_id"), ("call_id", 1.5, "call_id"), ("call_id", "", "call_id"),
    ("call_id", "c-1\x00x", "call_id"), ("call_id", "c-1\nx", "call_id"),
    ("call_id", "c" * 257, "call_id"), ("call_id", "   ", "call_id"),
    ("record_number", True, "record_number"), ("record_number", 1e40, "record_number"),
    ("record_number", 10**40, "record_number"), ("record_number", -1, "record_number"),
    ("record_number", "1", "record_number"), ("record_number", 1.0, "record_number"),
    ("has_record", "yes", "has_record"), ("has_record", 1, "has_record"),
    ("customer_info.name", "An\x00", "customer_info.name"),
    ("customer_info.email", "a" * 300, "customer_info.email"),
    ("callee_info.phone_number", True, "callee_info.phone_number"),
    ("callee_info.phone_number", 10**40, "callee_info.phone_number"),
    ("callee_info", "m-1", "callee_info"),
    ("record_files", {"record_id": "r"}, "record_files"),
    ("record_files.0", "r-1", "record_files[0]"),
    ("record_files.0.start_time", "١٢٣", "record_files[0].start_time"),
    ("record_files.0.end_time", 1e40, "record_files[0].end_time"),
    ("record_files.0.record_id", "r\x00", "record_files[0].record_id"),
    ("request_id", "rq\x00", "request_id"), ("request_id", True, "request_id"),
    ("request_id", 10**40, "request_id"), ("request_id", "r" * 300, "request_id"),
]


async def test_malformed_webhook_fields_get_400_naming_the_field(rig: Rig) -> None:
    call = rig.sim.add_call(records=1)
    good = rig.sim.webhook_body(call)
    for path, value, field in BAD_WEBHOOK_FIELDS:
        answer = await rig.hook(_set(good, path, value))
        assert answer.status_code == 400, (path, value, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_call", (path, value, error)
        assert field in error["message"], (path, value, error)
        if isinstance(value, str) and len(value) > 3:
            assert value not in answer.text  # never echoed
        assert SIGNING not in answer.text and API_KEY not in answer.text
    assert rig.events == []
    # Nothing else is lost: the valid delivery right after is accepted and emitted.
    ok = await rig.hook(good)
    assert ok.status_code == 200 and ok.json() == {"status": "accepted"}
    assert [e.call_id for e in rig.events] == [call["call_id"]]
    rig.events[0].to_json()


@pytest.mark.parametrize(("start", "end", "duration"), [
    (1700000000, 1700000042, 42), (1700000000.0, 1700000042.5, 42),
    ("1700000000", "1700000042", 42), (1700000000000, 1700000042000, 42),
])
async def test_documented_time_forms_are_still_read(rig: Rig, start: Any, end: Any,
                                                    duration: int) -> None:
    call = rig.sim.add_call()
    body = {**rig.sim.webhook_body(call), "start_time": start, "end_time": end}
    answer = await rig.hook(body)
    assert answer.status_code == 200, answer.text
    assert rig.events[0].durations is not None
    assert rig.events[0].durations.duration == duration


async def test_backfill_skips_malformed_records_and_keeps_the_rest(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.providers.quickom")
    good = [rig.sim.add_call() for _ in range(2)]
    bad_time = rig.sim.add_call()
    bad_time["start_time"] = "١٢٣"
    bad_id = rig.sim.add_call()
    bad_id["record_files"][0]["end_time"] = 1e40
    assert await rig.provider.backfill.poll() == 2
    assert sorted(e.call_id for e in rig.events) == sorted(c["call_id"] for c in good)
    assert rig.provider.backfill.skipped == 2
    assert rig.provider.snapshot()["counts"]["backfill_skipped"] == 2
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    # One warning per interval (the second skip is counted, not logged), naming the field.
    assert len(warnings) == 1, warnings
    assert "start_time" in warnings[0] or "record_files[0].end_time" in warnings[0]
    assert "١٢٣" not in caplog.text and API_KEY not in caplog.text
    # The cursor was saved: the good calls are not emitted again; a new call still is.
    later = rig.sim.add_call()
    assert await rig.provider.backfill.poll() == 1
    assert rig.events[-1].call_id == later["call_id"]


def _token() -> dict[str, str]:
    return {"authorization": "Bearer " + mint_api(JWT, sub="t", scopes=["calls:read"],
                                                  tenants=[TENANT])}


@pytest.mark.parametrize(("path", "code", "field"), [
    ("/calls/c-1%00x", "invalid_call_id", "call_id"),
    ("/calls/c-1%0Ax", "invalid_call_id", "call_id"),
    ("/calls/" + "c" * 257, "invalid_call_id", "call_id"),
    ("/calls/c-1/recording?record_index=%D9%A1", "invalid_record_index", "record_index"),
    ("/calls/c-1/recording?record_index=%EF%BC%91", "invalid_record_index", "record_index"),
    ("/calls/c-1/recording?record_index=-1", "invalid_record_index", "record_index"),
    ("/calls/c-1/recording?record_index=1e3", "invalid_record_index", "record_index"),
    ("/calls/c-1/recording?record_id=r%00", "invalid_record_id", "record_id"),
    ("/calls/c-1/recording?record_id=", "invalid_record_id", "record_id"),
    ("/calls/c-1/recording?record_id=" + "r" * 257, "invalid_record_id", "record_id"),
])
async def test_api_refuses_malformed_ids_and_selectors(rig: Rig, path: str, code: str,
                                                      field: str) -> None:
    call = rig.sim.add_call(records=2)
    base = f"{rig.url}/api/v1/quickom/{TENANT}"
    answer = await rig.http.get(base + path.replace("c-1", call["call_id"]), headers=_token())
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and field in error["message"]
    asked = [p for p, _ in rig.sim.requests]
    assert asked == []  # refused before Quickom was asked
    ok = await rig.http.get(f"{base}/calls/{call['call_id']}/recording?record_index=1",
                            headers=_token())
    assert ok.status_code == 200
