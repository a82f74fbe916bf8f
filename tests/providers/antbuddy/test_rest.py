"""AntBuddy oapi REST: hashes, windows and paging, against the simulator's oapi over loopback."""

from __future__ import annotations

import hashlib
import secrets
from typing import AsyncIterator

import httpx
import pytest

from bridge.http.serving import AppServer
from bridge.providers.antbuddy import rest
from bridge.providers.antbuddy.client import OapiClient, OapiError
from bridge.providers.antbuddy.gaps import LiveLedger, OutageTracker
from bridge.simulator.app import Simulator, SimulatorSettings

APP, SECRET = "rest-app", "rest-secret-" + secrets.token_hex(6)
DAY = 86_400


def test_history_hash_is_sha256_of_documented_concatenation() -> None:
    params = rest.history_params("app1", "s3cret", 1700000000, 1700086400, limit=100, page=2)
    text = "app1" + "1700000000" + "1700086400" + "100" + "2" + "s3cret"
    assert params["hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert params["created_from"] == "1700000000" and params["page"] == "2"


def test_datetime_format_is_hashed_as_sent() -> None:
    params = rest.history_params("a", "b", 0, 60, limit=5, page=1, date_format="datetime")
    assert params["created_to"] == "1970-01-01 00:01:00"
    text = "a1970-01-01 00:00:001970-01-01 00:01:0051b"
    assert params["hash"] == hashlib.sha256(text.encode()).hexdigest()


def test_recording_and_header_hashes() -> None:
    assert rest.recording_params("a", "b", "x.mp3")["hash"] == \
        hashlib.sha256(b"ax.mp3b").hexdigest()
    assert rest.app_headers("a", "b")["x-auth-app-hash"] == hashlib.sha256(b"ab").hexdigest()


@pytest.mark.parametrize("span, expected", [
    (31 * DAY, [(0, 31 * DAY)]),
    (31 * DAY + 1, [(0, 31 * DAY), (31 * DAY + 1, 31 * DAY + 1)]),
    (62 * DAY + 1, [(0, 31 * DAY), (31 * DAY + 1, 62 * DAY + 1)]),
    (0, [(0, 0)]),
])
def test_windows_split_at_31_days(span: int, expected: list[tuple[int, int]]) -> None:
    assert list(rest.windows(0, span)) == expected


def test_windows_cover_every_second_once() -> None:
    got = list(rest.windows(5, 100 * DAY))
    assert got[0][0] == 5 and got[-1][1] == 100 * DAY
    assert all(b[0] == a[1] + 1 for a, b in zip(got, got[1:]))
    assert all(hi - lo <= 31 * DAY for lo, hi in got)


def test_params_refuse_out_of_bounds() -> None:
    with pytest.raises(ValueError):
        rest.history_params("a", "b", 0, 32 * DAY, limit=10, page=1)
    with pytest.raises(ValueError):
        rest.history_params("a", "b", 0, 10, limit=101, page=1)


def test_outage_tracker_windows() -> None:
    t = OutageTracker(margin=10)
    assert t.observe(100, True, 0) is None  # first subscription: no gap
    assert t.observe(102, False, 0) is None
    window = t.observe(110, True, 1)
    assert window is not None and (window.start, window.end) == (90, 121)
    assert t.observe(112, True, 1) is None
    short = t.observe(114, True, 2)  # a drop between two looks
    assert short is not None and short.start == 102


def test_ledger_matches_parties_and_time() -> None:
    ledger = LiveLedger(tolerance=2)
    ledger.note("CHANNEL_DESTROY", {"Msg-ID": str(1_700_000_030 * 1_000_000),
                                    "Caller-ID-Number": "1001", "Callee-ID-Number": "+84912345678",
                                    "Duration-Seconds": 30})
    def rec(start: int, caller: str, callee: str) -> rest.HistoryRecord:
        r = rest.parse_record({"unix_timestamp": start, "duration_seconds": 30,
                               "caller": {"number": caller}, "callee": {"number": callee}})
        assert r is not None
        return r
    assert ledger.seen(rec(1_700_000_000, "1001", "0912345678"))
    assert not ledger.seen(rec(1_700_000_000, "1002", "0912345678"))
    assert not ledger.seen(rec(1_700_000_100, "1001", "0912345678"))


def _record(ts: int, n: int) -> dict:
    return {"caller": {"number": f"{1000 + n % 10}", "type": "user"},
            "callee": {"number": f"+849{n:08d}", "type": "realnumber"}, "class": "trunking",
            "direction": "from_ab", "status_detail": "SUCCESS", "duration_seconds": 20,
            "unix_timestamp": ts, "billing_seconds": 15, "recording": f"rec{n}.mp3"}


@pytest.fixture
async def oapi() -> AsyncIterator[tuple[Simulator, AppServer, OapiClient]]:
    sim = Simulator(SimulatorSettings(apps={APP: SECRET}, traffic=False))
    server = AppServer(sim.build_app())
    await server.start()
    async with httpx.AsyncClient(trust_env=False) as http:
        yield sim, server, OapiClient(http, base_url=server.url, app_id=APP, app_secret=SECRET)
    await server.close()


async def _all(client: OapiClient, start: int, end: int) -> list[dict]:
    return [r async for page in client.histories(start, end) for r in page]


@pytest.mark.parametrize("count, requests", [(0, 1), (99, 1), (100, 2), (200, 3), (250, 3)])
async def test_paging_until_short_page(oapi, count: int, requests: int) -> None:
    sim, _, client = oapi
    state = sim.rest
    for n in range(count):
        state.history.add("acct", _record(1_700_000_000 + n, n))
    got = await _all(client, 1_700_000_000, 1_700_000_000 + DAY)
    assert [r["unix_timestamp"] for r in got] == [1_700_000_000 + n for n in range(count)]
    assert len(state.history_queries) == requests
    assert [q[3] for q in state.history_queries] == [str(p) for p in range(1, requests + 1)]


async def test_long_range_split_into_31_day_queries(oapi) -> None:
    sim, _, client = oapi
    state = sim.rest
    base = 1_700_000_000
    for n, offset in enumerate([0, 31 * DAY, 31 * DAY + 1, 40 * DAY]):
        state.history.add("acct", _record(base + offset, n))
    got = await _all(client, base, base + 40 * DAY)
    assert len(got) == 4  # the fake answers 400 to any window over 31 days
    assert [(int(q[0]), int(q[1])) for q in state.history_queries] == [
        (base, base + 31 * DAY), (base + 31 * DAY + 1, base + 40 * DAY)]


async def test_fake_refuses_bad_hash_limit_and_window(oapi) -> None:
    _, server, client = oapi
    async with httpx.AsyncClient(trust_env=False) as http:
        params = rest.history_params(APP, "wrong-secret", 0, 10, limit=10, page=1)
        r = await http.get(f"{server.url}/oapi/v1/call/histories", params=params)
        assert r.status_code == 401 and "error" in r.json()
        for start, end, limit in [(0, 32 * DAY, "10"), (0, 10, "101"), (0, 10, "0")]:
            fields = [str(start), str(end), limit, "1"]
            q = {"appId": APP, "created_from": fields[0], "created_to": fields[1],
                 "limit": limit, "page": "1",
                 "hash": hashlib.sha256((APP + "".join(fields) + SECRET).encode()).hexdigest()}
            r = await http.get(f"{server.url}/oapi/v1/call/histories", params=q)
            assert r.status_code == 400, (start, end, limit)
    bad = OapiClient(client._http, base_url=server.url, app_id=APP, app_secret="nope-nope")
    with pytest.raises(OapiError) as info:
        await bad.history_page(0, 10, 1)
    assert info.value.kind == "unauthorized" and "nope-nope" not in str(info.value)


async def test_click_to_call_offline_and_online(oapi) -> None:
    sim, _, client = oapi
    state = sim.rest
    state.online = {"phone1"}
    with pytest.raises(OapiError) as info:
        await client.click_to_call("0912345678", "phone2", "pw-2222")
    assert info.value.kind == "device_offline"
    await client.click_to_call("0912345678", "phone1", "pw-1111")
    assert state.dials == [(APP, "0912345678", "phone1")]


async def test_recording_url_is_signed_and_served(oapi) -> None:
    sim, _, client = oapi
    sim.rest.history.add("acct", _record(1_700_000_000, 7))
    url = await client.recording_url("rec7.mp3")
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(url)).status_code == 200
        assert (await http.get(url.replace("Signature=", "Signature=0"))).status_code == 403
    with pytest.raises(OapiError) as info:
        await client.recording_url("missing.mp3")
    assert info.value.kind == "not_found"
