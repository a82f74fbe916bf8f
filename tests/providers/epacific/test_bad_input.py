"""ePacific: polled CDRs and ext_reg entries with malformed fields are skipped, the rest kept.

Against the fake over loopback: a CDR whose field breaks its rule is skipped with one
rate-limited warning naming the field (never its value) and counted in ``skipped``; the other
CDRs of the page are emitted and the cursor moves on. The lookup API refuses malformed ids.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.common.fields import FieldError
from bridge.http.serving import AppServer
from bridge.providers.epacific.protocol import cdr_event, cdr_key, online_entries
from tests.providers.epacific.fixtures import KEY, SECRET, Rig, memory_cursors, rig

__all__ = ["memory_cursors", "rig"]

T0 = datetime(2026, 6, 1, 3, 0, tzinfo=timezone.utc)
HCM = ZoneInfo("Asia/Ho_Chi_Minh")
CDR = {"direction": "inbound", "cid_name": "Thanh Nguyen", "source": "0901234567",
       "destination": "1005", "recording": "https://rec.example/1.mp3",
       "start": "2026-03-01 23:59:30", "tta": "7", "duration": "00:02:03", "pdd": "1.5",
       "mos": 4.1, "status": "NORMAL_CLEARING", "call_id": "abc-1"}

#: (field, malformed value)
BAD_CDR_FIELDS: list[tuple[str, Any]] = [
    ("tta", 1e40), ("tta", 10**40), ("tta", -1e308), ("tta", -1), ("tta", "١٢٣"),
    ("tta", "NaN"), ("tta", "inf"), ("tta", True), ("tta", "7\x00"), ("tta", 31 * 86_400 + 1),
    ("duration", "١٢:٠٠:٠٠"), ("duration", "1e40"), ("duration", 1e40), ("duration", True),
    ("duration", "00:99:00"), ("duration", "00:01\x00:05"), ("duration", "99999:00:00"),
    ("pdd", "nan"), ("pdd", 1e40), ("pdd", -1.5), ("pdd", "١"), ("pdd", True),
    ("mos", 5.5), ("mos", "NaN"), ("mos", -1), ("mos", "4,1"),
    ("start", "٢٠٢٦-03-01 23:59:30"), ("start", 1772384370), ("start", "2026-03-01\x0023:59"),
    ("call_id", "abc\x00"), ("call_id", "a" * 129), ("call_id", True), ("call_id", 1.5),
    ("call_id", -5), ("call_id", "a b"),
    ("source", "1001\x00"), ("cid_name", "x" * 300), ("status", ["NORMAL"]),
    ("recording", "https://rec.example/\n1.mp3"),
]


@pytest.mark.parametrize(("field", "value"), BAD_CDR_FIELDS)
def test_cdr_with_malformed_field_is_refused_naming_it(field: str, value: Any) -> None:
    record = {**CDR, field: value}
    with pytest.raises(FieldError) as info:
        cdr_key(record)
        cdr_event("acme", record, HCM)
    assert info.value.field == field
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(info.value)


def test_documented_cdr_forms_are_still_read() -> None:
    for tta, duration, pdd, mos in [("7", "00:02:03", "1.5", 4.1), (7, 123, 1.5, "4.1"),
                                    (7.0, "0:2:3", None, ""), ("", "", "", None)]:
        event, _ = cdr_event("acme", {**CDR, "tta": tta, "duration": duration, "pdd": pdd,
                                      "mos": mos}, HCM)
        assert event.call_id == "abc-1"
    assert cdr_key({**CDR, "call_id": 12345}) == "12345"  # numeric ids are the provider's


async def test_poller_skips_malformed_cdrs_and_keeps_the_rest(
        rig: Rig, memory_cursors: MemoryCursors, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.providers.epacific")
    good = [rig.fake.add_cdr(T0 - timedelta(minutes=m)) for m in (1, 2, 3, 4)]
    bad = [rig.fake.add_cdr(T0 - timedelta(minutes=m)) for m in (5, 6, 7)]
    bad[0]["tta"] = 10**40
    bad[1]["duration"] = "١٢:٠٠:٠٠"
    bad[2]["call_id"] = "ep-\u0000bad"
    provider = rig.provider(memory_cursors, clock=lambda: T0)
    assert await provider.cdrs.poll() == 4
    assert sorted(e.call_id or "" for e in rig.events) == sorted(c["call_id"] for c in good)
    assert provider.cdrs.skipped == 3
    assert provider.snapshot()["cdr"]["skipped"] == 3
    assert provider.snapshot()["cdr"]["ok"] is True
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1, warnings  # rate limited: the other two are only counted
    assert any(name in warnings[0] for name in ("tta", "duration", "call_id"))
    assert "١٢" not in caplog.text and KEY not in caplog.text and SECRET not in caplog.text
    for event in rig.events:
        event.to_json()
    # Nothing repeated, nothing lost: a later poll emits only the new CDR.
    later = rig.fake.add_cdr(T0 + timedelta(seconds=30))
    provider.cdrs.clock = lambda: T0 + timedelta(minutes=1)
    assert await provider.cdrs.poll() == 1
    assert rig.events[-1].call_id == later["call_id"]


def test_ext_reg_entries_with_malformed_names_are_skipped() -> None:
    online, problems = online_entries({"data": [
        "100", 101, "10\x002", "x" * 65, True, 1e40, -5, {"extension": "1\n03"},
        {"ext": 104}, " "]})
    assert online == {"100", "101", "104"}
    assert len(problems) == 7
    assert "data[2]" in problems[0] and "data[7].extension" in problems[5]
    assert "data[9]" in problems[6]
    assert all("\x00" not in p and "x" * 65 not in p for p in problems)


async def test_presence_poller_skips_malformed_entries(
        rig: Rig, memory_cursors: MemoryCursors, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.providers.epacific")
    provider = rig.provider(memory_cursors, clock=lambda: T0)
    rig.fake.fail_next(200, orjson.dumps({"status": "success",
                                          "data": ["100", "1\u00000", "١٠١", 1e40]}))
    await provider.presence.poll()
    assert [(e.extension, e.detail["online"]) for e in rig.events if e.detail] == [
        ("100", True), ("١٠١", True)]  # a name, not a number: text without control chars
    assert provider.presence.skipped == 2
    assert provider.snapshot()["presence"]["skipped"] == 2
    assert any("ext_reg entries skipped" in r.getMessage() for r in caplog.records)
    rig.fake.online = {"100", "102"}
    await provider.presence.poll()  # the next answer is used as usual
    assert ("102", True) in [(e.extension, e.detail["online"]) for e in rig.events if e.detail]


@pytest.mark.parametrize("call_id", ["ep-1%00x", "ep-1%0Ax", "ep%201", "e" * 129])
async def test_lookup_refuses_malformed_call_ids(rig: Rig, call_id: str) -> None:
    record = rig.fake.add_cdr(T0)
    provider = rig.provider(MemoryCursors())
    secret = "jwt-" + "s" * 32
    app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=secret, leeway=5))
    token = mint_api(secret, sub="t", scopes=["calls:read"], tenants=["acme"])
    headers = {"authorization": f"Bearer {token}"}
    async with AppServer(app) as server, httpx.AsyncClient(trust_env=False) as http:
        base = f"{server.url}/api/v1/epacific/acme/cdrs/"
        answer = await http.get(base + call_id, headers=headers)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "bad_call_id" and "call_id" in error["message"]
        ok = await http.get(base + record["call_id"], headers=headers)
        assert ok.status_code == 200 and ok.json()["cdrs"][0]["event"] is not None
