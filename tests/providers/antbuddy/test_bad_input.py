"""AntBuddy REST: malformed history records are skipped, malformed click-to-call bodies refused.

History pages come from the simulator's oapi over loopback; a record whose field breaks its
rule is skipped with one rate-limited warning naming the field, the others are emitted. The
click-to-call API (real HTTP) answers 422 naming the field, never echoing a password.
"""

from __future__ import annotations

import logging
import secrets
from types import SimpleNamespace
from typing import Any, AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.common.fields import FieldError
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.antbuddy import create, rest
from bridge.providers.antbuddy.provider import AntBuddyRest
from bridge.providers.base import ProviderContext
from bridge.simulator.app import Simulator, SimulatorSettings

APP, SECRET = "bad-app", "bad-secret-" + secrets.token_hex(6)
JWT = secrets.token_urlsafe(32)
TENANT = "abt"
T0 = 1_700_000_000


def _record(ts: int, n: int, **over: Any) -> dict[str, Any]:
    record = {"caller": {"number": f"{1000 + n % 10}", "type": "user"},
              "callee": {"number": f"+849{n:08d}", "type": "realnumber"}, "class": "trunking",
              "direction": "from_ab", "status_detail": "SUCCESS", "duration_seconds": 20,
              "unix_timestamp": ts, "billing_seconds": 15, "recording": f"rec{n}.mp3"}
    record.update(over)
    return record


BAD_RECORD_FIELDS: list[tuple[str, Any, str]] = [
    ("unix_timestamp", 1e40, "unix_timestamp"), ("unix_timestamp", 10**40, "unix_timestamp"),
    ("unix_timestamp", -1e308, "unix_timestamp"), ("unix_timestamp", "١٥١٩٦٣٩٩١٧",
                                                     "unix_timestamp"),
    ("unix_timestamp", "1519639917.5", "unix_timestamp"), ("unix_timestamp", True,
                                                           "unix_timestamp"),
    ("unix_timestamp", "", "unix_timestamp"), ("unix_timestamp", None, "unix_timestamp"),
    ("unix_timestamp", "inf", "unix_timestamp"), ("unix_timestamp", 0, "unix_timestamp"),
    ("duration_seconds", 1e40, "duration_seconds"), ("duration_seconds", "NaN",
                                                     "duration_seconds"),
    ("duration_seconds", -5, "duration_seconds"), ("duration_seconds", "٥٠", "duration_seconds"),
    ("billing_seconds", 10**40, "billing_seconds"), ("billing_seconds", True, "billing_seconds"),
    ("billing_seconds", "4\x003", "billing_seconds"),
    ("caller", {"number": "1001\x00"}, "caller.number"), ("callee", "0912", "callee"),
    ("callee", {"number": "1" * 300}, "callee.number"), ("recording", "r\x00.mp3", "recording"),
    ("status_detail", ["SUCCESS"], "status_detail"), ("did_number", True, "did_number"),
]


@pytest.mark.parametrize(("key", "value", "field"), BAD_RECORD_FIELDS)
def test_malformed_record_field_is_refused_naming_it(key: str, value: Any, field: str) -> None:
    with pytest.raises(FieldError) as info:
        rest.parse_record(_record(T0, 1, **{key: value}))
    assert info.value.field == field
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(info.value)


def test_documented_record_forms_are_still_read() -> None:
    record = rest.parse_record(_record(T0, 1, unix_timestamp=str(T0), duration_seconds="50",
                                       billing_seconds=None, did_number=None, recording=""))
    assert (record.start, record.duration, record.billing) == (T0, 50, 0)
    assert record.recording is None and record.did_number is None
    numeric = rest.parse_record(_record(T0, 2, caller={"number": 1001, "type": "user"}))
    assert numeric.caller == ("1001",)


class Rig:
    def __init__(self, sim: Simulator, provider: AntBuddyRest, url: str,
                 http: httpx.AsyncClient, events: list[Event]) -> None:
        self.sim, self.provider, self.url, self.http, self.events = sim, provider, url, http, events

    async def dial(self, body: dict[str, Any]) -> httpx.Response:
        token = mint_api(JWT, sub="t", scopes=["calls:dial"], tenants=[TENANT])
        return await self.http.post(f"{self.url}/api/v1/antbuddy/{TENANT}/calls", json=body,
                                    headers={"authorization": f"Bearer {token}"})


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sim = Simulator(SimulatorSettings(apps={APP: SECRET}, traffic=False))
    events: list[Event] = []
    async with AppServer(sim.build_app()) as oapi, \
            httpx.AsyncClient(trust_env=False, timeout=10) as http:
        account = SimpleNamespace(tenant=TENANT, account_id="acct", oapi_url=oapi.url,
                                  app_id=APP, app_secret=SecretStr(SECRET), sip_user=None,
                                  sip_password=None)
        context = ProviderContext(submit=lambda e: events.append(e) or True, http=http,
                                  cursors=MemoryCursors())
        provider = create(account, context)
        app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT, leeway=5))
        async with AppServer(app) as server:
            yield Rig(sim, provider, server.url, http, events)


async def test_fill_skips_malformed_records_and_keeps_the_rest(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.providers.antbuddy")
    history = rig.sim.rest.history
    for n in range(3):
        history.add("acct", _record(T0 + n, n))
    history.add("acct", _record(T0 + 10, 10, duration_seconds=1e40))
    history.add("acct", _record(T0 + 11, 11, billing_seconds="١٥"))
    history.add("acct", _record(T0 + 12, 12, caller={"number": "10\x0001", "type": "user"}))
    assert await rig.provider.fill(T0, T0 + 100) == 3
    assert len(rig.events) == 3
    for event in rig.events:
        event.to_json()
    assert rig.provider.counts["skipped"] == 3
    assert rig.provider.snapshot()["skipped"] == 3
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "duration_seconds" in warnings[0], warnings
    assert SECRET not in caplog.text and "١٥" not in caplog.text


BAD_DIAL_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"sip_user": "ph\x00one1", "sip_password": "pw-1111"}, "sip_user"),
    ({"sip_user": 1001, "sip_password": "pw-1111"}, "sip_user"),
    ({"sip_user": True, "sip_password": "pw-1111"}, "sip_user"),
    ({"sip_user": "", "sip_password": "pw-1111"}, "sip_user"),
    ({"sip_user": "p" * 129, "sip_password": "pw-1111"}, "sip_user"),
    ({"sip_user": "phone1", "sip_password": "pw-\x00secret-1111"}, "sip_password"),
    ({"sip_user": "phone1", "sip_password": "pw-\nsecret-1111"}, "sip_password"),
    ({"sip_user": "phone1", "sip_password": "s" * 129}, "sip_password"),
    ({"sip_user": "phone1", "sip_password": 1111}, "sip_password"),
    ({"sip_user": "phone1", "sip_password": "pw-1111", "account_id": "ac\x00ct"}, "account_id"),
    ({"sip_user": "phone1", "sip_password": "pw-1111", "account_id": 5}, "account_id"),
]


async def test_click_to_call_refuses_malformed_fields_naming_them(rig: Rig) -> None:
    rig.sim.rest.online = {"phone1"}
    for extra, field in BAD_DIAL_BODIES:
        answer = await rig.dial({"number": "0912345678", **extra})
        assert answer.status_code == 422, (extra, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_body" and field in error["message"], (extra, error)
        password = extra.get("sip_password")
        if isinstance(password, str):
            assert password not in answer.text  # never echoed
    for number in ("０９１２３４５６７８", "0912\x00345678", "٠٩١٢٣٤٥٦٧٨"):
        answer = await rig.dial({"number": number, "sip_user": "phone1",
                                 "sip_password": "pw-1111"})
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_number"
    assert rig.sim.rest.dials == []
    ok = await rig.dial({"number": "0912345678", "sip_user": "phone1",
                         "sip_password": "pw with space"})
    assert ok.status_code == 200, ok.text
    assert rig.sim.rest.dials == [(APP, "0912345678", "phone1")]
