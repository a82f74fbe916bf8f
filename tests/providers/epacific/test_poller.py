"""The CDR poller against the fake over loopback: paging, restarts, time zones, error answers."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Callable

import pytest

from bridge.cluster.cursors import CursorStore, MemoryCursors, RedisCursors
from bridge.providers.epacific.poller import guarded
from bridge.providers.epacific.protocol import EPacificError, cdr_event_id
from bridge.redisconn.clients import drop_prefix
from tests.providers.epacific.fixtures import (
    KEY,
    SECRET,
    Rig,
    make_rig,
    memory_cursors,
    rig,
)

__all__ = ["memory_cursors", "rig"]

REDIS_URL = "redis://127.0.0.1:6379/0"
T0 = datetime(2026, 6, 1, 3, 0, tzinfo=timezone.utc)


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def expected_ids(rig: Rig) -> set[str]:
    return {cdr_event_id("acme", c.record["call_id"]) for c in rig.fake.cdrs}


@pytest.fixture(params=["memory", "redis"])
async def cursors(request: pytest.FixtureRequest) -> AsyncIterator[CursorStore]:
    if request.param == "memory":
        yield MemoryCursors()
        return
    prefix = f"test-epacific-{secrets.token_hex(6)}:"
    store = RedisCursors(REDIS_URL, prefix=prefix)
    try:
        yield store
    finally:
        await store.close()
        await drop_prefix(REDIS_URL, prefix)


def cdr_pages(rig: Rig) -> list[int]:
    return [r["page"] for r in rig.fake.requests if "date_range" in r]


async def test_empty_window_reads_one_page(rig: Rig, memory_cursors: MemoryCursors) -> None:
    provider = rig.provider(memory_cursors, clock=at(T0))
    assert await provider.cdrs.poll() == 0
    assert cdr_pages(rig) == [1] and rig.events == []
    request = rig.fake.requests[0]
    # 1 h lookback from 03:00 UTC, written in Ho Chi Minh time (UTC+7)
    assert request["date_range"] == {"from": "2026-06-01 09:00", "to": "2026-06-01 10:01"}
    assert request["limit"] == 3


@pytest.mark.parametrize("count,pages", [(2, [1]), (3, [1]), (6, [1, 2]), (7, [1, 2, 3])])
async def test_pages_to_the_end(rig: Rig, memory_cursors: MemoryCursors, count: int,
                                pages: list[int]) -> None:
    for i in range(count):
        rig.fake.add_cdr(T0 - timedelta(minutes=50 - i))
    provider = rig.provider(memory_cursors, clock=at(T0))
    assert await provider.cdrs.poll() == count
    assert cdr_pages(rig) == pages  # an exact multiple of the limit stops without an empty page
    assert set(rig.ids()) == expected_ids(rig) and len(rig.ids()) == count


async def test_restart_neither_loses_nor_repeats(rig: Rig, cursors: CursorStore) -> None:
    for i in range(5):
        rig.fake.add_cdr(T0 - timedelta(minutes=30 - i))
    first = rig.provider(cursors, clock=at(T0))
    assert await first.cdrs.poll() == 5
    assert await first.cdrs.poll() == 0  # the overlap re-read emits nothing again
    # while "down": new calls, and a late CDR of a call that started before the last poll
    rig.fake.add_cdr(T0 - timedelta(minutes=2))
    for i in range(4):
        rig.fake.add_cdr(T0 + timedelta(minutes=1 + i))
    second = rig.provider(cursors, clock=at(T0 + timedelta(minutes=10)))
    assert await second.cdrs.poll() == 5
    third = rig.provider(cursors, clock=at(T0 + timedelta(minutes=11)))
    assert await third.cdrs.poll() == 0
    assert sorted(rig.ids()) == sorted(expected_ids(rig))  # each CDR exactly once


async def test_restart_after_a_failure_mid_paging(rig: Rig, cursors: CursorStore) -> None:
    for i in range(7):
        rig.fake.add_cdr(T0 - timedelta(minutes=40 - i))
    first = rig.provider(cursors, clock=at(T0))
    rig.fake.page_faults[2] = (502, b"bad gateway")  # page 1 answers, page 2 fails
    with pytest.raises(EPacificError, match="unavailable"):
        await first.cdrs.poll()
    assert len(rig.events) == 3  # page 1's CDRs are out, and remembered in the cursor
    second = rig.provider(cursors, clock=at(T0 + timedelta(minutes=1)))
    assert await second.cdrs.poll() == 4
    assert sorted(rig.ids()) == sorted(expected_ids(rig))


async def test_midnight_and_minute_edges_ho_chi_minh(rig: Rig,
                                                     memory_cursors: MemoryCursors) -> None:
    midnight = datetime(2026, 6, 1, 17, 0, tzinfo=timezone.utc)  # 00:00 on 2 June, local
    for offset in (-61, -1, 0, 59, 60):
        rig.fake.add_cdr(midnight + timedelta(seconds=offset))
    provider = rig.provider(memory_cursors, clock=at(midnight + timedelta(seconds=60)),
                            initial_lookback=180.0)
    assert await provider.cdrs.poll() == 5
    starts = sorted(e.occurred_at for e in rig.events)
    assert starts[0] == "2026-06-01T16:58:59.000Z" and starts[-1] == "2026-06-01T17:01:00.000Z"
    request = rig.fake.requests[0]["date_range"]
    assert request == {"from": "2026-06-01 23:58", "to": "2026-06-02 00:02"}


async def test_polls_across_a_dst_fall_back() -> None:
    """Bratislava repeats 02:00-02:59 on 2026-10-25; polls every 5 min see each CDR once."""
    async for bts in make_rig("Europe/Bratislava"):
        cursors = MemoryCursors()
        start = datetime(2026, 10, 24, 23, 30, tzinfo=timezone.utc)
        provider = bts.provider(cursors, initial_lookback=300.0, settle=420.0)
        for step in range(1, 37):  # three hours, both sides of the change
            now = start + timedelta(minutes=5 * step)
            bts.fake.add_cdr(now - timedelta(minutes=2, seconds=30))
            bts.fake.add_cdr(now - timedelta(seconds=10))
            if step % 4 == 0:  # a long call reported late, still inside the settle window
                bts.fake.add_cdr(now - timedelta(minutes=6))
            provider.cdrs.clock = at(now)
            await provider.cdrs.poll()
        assert sorted(bts.ids()) == sorted(expected_ids(bts))
        repeated = [c for c in bts.fake.cdrs if datetime(2026, 10, 25, 1, tzinfo=timezone.utc)
                    <= c.start < datetime(2026, 10, 25, 2, tzinfo=timezone.utc)]
        assert repeated  # CDRs in the second 02:xx hour were produced and counted above
        # the widened bounds never name an ambiguous wall time
        for request in bts.fake.requests:
            for text in request["date_range"].values():
                assert not "2026-10-25 02:00" <= text <= "2026-10-25 02:59"


async def test_dst_spring_forward_start_times() -> None:
    async for bts in make_rig("Europe/Bratislava"):
        change = datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)  # 02:00 CET -> 03:00 CEST
        bts.fake.add_cdr(change - timedelta(seconds=30))  # 01:59:30 CET
        bts.fake.add_cdr(change + timedelta(seconds=30))  # 03:00:30 CEST
        provider = bts.provider(MemoryCursors(), clock=at(change + timedelta(minutes=5)))
        assert await provider.cdrs.poll() == 2
        assert sorted(e.occurred_at for e in bts.events) == [
            "2026-03-29T00:59:30.000Z", "2026-03-29T01:00:30.000Z"]
        assert sorted(e.detail["start_local"] for e in bts.events) == [
            "2026-03-29 01:59:30", "2026-03-29 03:00:30"]


@pytest.mark.parametrize("fault,match", [
    ((500, b'{"status":"error","message":"database down"}'), "unavailable.*database down"),
    ((200, b"<html>maintenance</html>"), "not a JSON object"),
    ((200, b'{"status":"success","data":"nope"}'), "malformed records"),
    ((400, b'{"status":"error","message":"bad api_secret=' + SECRET.encode() + b'"}'),
     "refused the request"),
])
async def test_error_answers_are_clear_and_redacted(
        rig: Rig, memory_cursors: MemoryCursors, caplog: pytest.LogCaptureFixture,
        fault: tuple[int, bytes], match: str) -> None:
    provider = rig.provider(memory_cursors, clock=at(T0))
    rig.fake.fail_next(*fault)
    with caplog.at_level(logging.WARNING):
        await guarded("CDR poll", provider.cdrs.status, provider.cdrs.poll)
    snap = provider.snapshot()
    assert snap["ok"] is False and snap["cdr"]["failures"] == 1
    assert re.search(match, snap["cdr"]["last_error"])
    for text in (snap["cdr"]["last_error"], caplog.text):
        assert SECRET not in text and KEY not in text
    assert caplog.text  # the failure was logged
    await guarded("CDR poll", provider.cdrs.status, provider.cdrs.poll)
    assert provider.snapshot()["ok"] is True  # recovers on the next good poll


async def test_bad_credentials(rig: Rig, memory_cursors: MemoryCursors) -> None:
    provider = rig.provider(memory_cursors, clock=at(T0), api_secret="wrong-secret-x")
    with pytest.raises(EPacificError) as caught:
        await provider.cdrs.poll()
    assert caught.value.kind == "auth" and "credentials" in str(caught.value)
    assert "wrong-secret-x" not in str(caught.value)


async def test_bad_date_format_is_refused(rig: Rig, memory_cursors: MemoryCursors) -> None:
    provider = rig.provider(memory_cursors, clock=at(T0), date_format="%d/%m/%Y %H:%M")
    with pytest.raises(EPacificError, match="date_range.from must be formatted"):
        await provider.cdrs.poll()
    assert await memory_cursors.get(provider.cdrs.cursor_name) is None  # nothing advanced


async def test_fake_enforces_limits_and_ranges(rig: Rig) -> None:
    base = {"api_key": KEY, "api_secret": SECRET}
    good = {"from": "2026-06-01 09:00", "to": "2026-06-01 10:00"}
    cases = [({"date_range": good, "limit": 0}, "limit"),
             ({"date_range": good, "limit": 1001}, "limit"),
             ({"date_range": good, "page": 0}, "page"),
             ({"date_range": {"from": "2026-06-01 10:00", "to": "2026-06-01 09:00"}}, "after"),
             ({"date_range": {"from": "2026-02-30 10:00", "to": "2026-06-01 09:00"}}, "real"),
             ({"date_range": {"from": "2026-06-01T10:00", "to": "2026-06-01 11:00"}}, "format"),
             ({}, "date_range")]
    for data, word in cases:
        response = await rig.http.post(f"{rig.server.url}/cdrs/json", json={**base, **data})
        assert response.status_code == 400 and word in response.json()["message"]
    response = await rig.http.post(f"{rig.server.url}/cdrs/json",
                                   data={**base, "date_range[from]": good["from"],
                                         "date_range[to]": good["to"], "limit": "1000"})
    assert response.status_code == 200 and response.json()["paging"]["page_count"] == 0
