"""ePacific wire rules without sockets: dates and time zones, answers, CDR mapping, presence."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest

from bridge.events.event import EventType
from bridge.providers.epacific.cursor import CdrCursor
from bridge.providers.epacific.protocol import (
    EPacificError,
    cdr_event,
    cdr_key,
    check_answer,
    has_next,
    hms_seconds,
    online_set,
    parse_local,
    presence_events,
    request_start,
    window_bounds,
)

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
BTS = ZoneInfo("Europe/Bratislava")
FMT = "%Y-%m-%d %H:%M"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_bounds_ho_chi_minh_cross_midnight_and_floor_minutes() -> None:
    # 16:59:59 UTC is 23:59:59 in Ho Chi Minh (UTC+7, no DST): "to" rounds up into the next day.
    assert window_bounds(utc(2026, 3, 1, 16, 0, 30), utc(2026, 3, 1, 16, 59, 59), HCM, FMT) == (
        "2026-03-01 23:00", "2026-03-02 00:00")
    # an exact minute still gets the next minute as "to": that minute's seconds are covered
    assert window_bounds(utc(2026, 12, 31, 17, 0), utc(2026, 12, 31, 17, 0), HCM, FMT) == (
        "2027-01-01 00:00", "2027-01-01 00:01")


def test_bounds_use_the_configured_format() -> None:
    assert window_bounds(utc(2026, 5, 2, 1, 2), utc(2026, 5, 2, 1, 3), HCM,
                         "%d/%m/%Y %H:%M") == ("02/05/2026 08:02", "02/05/2026 08:04")


def test_bounds_bratislava_spring_forward_gap() -> None:
    # 2026-03-29 01:00 UTC: clocks jump 02:00 CET -> 03:00 CEST; no wall time is ambiguous
    assert window_bounds(utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), BTS, FMT) == (
        "2026-03-29 01:30", "2026-03-29 03:31")


def test_bounds_bratislava_fall_back_widen_outwards() -> None:
    # 2026-10-25 01:00 UTC: 03:00 CEST -> 02:00 CET; wall 02:00..02:59 happens twice.
    start, end = utc(2026, 10, 25, 0, 20), utc(2026, 10, 25, 1, 20)  # 02:20 CEST, 02:20 CET
    date_from, date_to = window_bounds(start, end, BTS, FMT)
    # moved back to the last minute before the repeated hour, forward to the first after it
    assert (date_from, date_to) == ("2026-10-25 01:59", "2026-10-25 03:00")
    # the same minute for every moment of the repeated hour: "from" never goes backwards
    assert {window_bounds(start + timedelta(minutes=m), end, BTS, FMT)[0]
            for m in range(0, 100, 7)} == {date_from}
    for text, bound in ((date_from, start), (date_to, end)):
        naive = datetime.strptime(text, FMT)
        first = naive.replace(tzinfo=BTS, fold=0).astimezone(timezone.utc)
        second = naive.replace(tzinfo=BTS, fold=1).astimezone(timezone.utc)
        assert first == second  # unambiguous: the provider cannot misread it
        assert (first <= bound) if bound is start else (first > bound)
    assert request_start(start, BTS) == datetime.strptime(date_from, FMT).replace(
        tzinfo=BTS).astimezone(timezone.utc)


def test_parse_local_time_zones() -> None:
    assert parse_local("2026-01-01 00:00:00", HCM) == utc(2025, 12, 31, 17)
    assert parse_local("2026-07-01 12:00", BTS) == utc(2026, 7, 1, 10)  # CEST
    assert parse_local("2026-12-01 12:00:05", BTS) == utc(2026, 12, 1, 11, 0, 5)  # CET
    assert parse_local("2026-10-25 02:30:00", BTS) == utc(2026, 10, 25, 0, 30)  # first one
    with pytest.raises(ValueError):
        parse_local("yesterday", HCM)


@pytest.mark.parametrize("text,seconds", [("00:00:00", 0), ("00:01:05", 65),
                                          ("01:00:00", 3600), ("26:00:01", 93601),
                                          (42, 42), ("17", 17), ("", None), ("x:y", None)])
def test_hms(text: object, seconds: int | None) -> None:
    assert hms_seconds(text) == seconds


CDR = {"direction": "inbound", "cid_name": "Thanh Nguyen", "source": "0901234567",
       "destination": "1005", "recording": "https://rec.example/1.mp3",
       "start": "2026-03-01 23:59:30", "tta": "7", "duration": "00:02:03", "pdd": "1.5",
       "mos": 4.1, "status": "NORMAL_CLEARING", "call_id": "abc-1"}


def test_cdr_event_fields() -> None:
    event, start = cdr_event("acme", CDR, HCM)
    assert start == utc(2026, 3, 1, 16, 59, 30)
    data = event.to_dict()
    assert data["type"] == EventType.COMPLETED and data["provider"] == "epacific"
    assert data["occurred_at"] == "2026-03-01T16:59:30.000Z"
    assert data["call_id"] == "abc-1" and data["extension"] == "1005"
    assert data["direction"] == "incoming"
    assert data["caller"] == {"number": "0901234567", "name": "Thanh Nguyen"}
    assert data["callee"] == {"number": "1005", "name": None}
    assert data["durations"] == {"duration": 130, "billing": 123, "ringing": 7}
    assert data["hangup"]["cause"] == "NORMAL_CLEARING"
    assert data["detail"]["recording"] == "https://rec.example/1.mp3"
    assert data["detail"]["pdd"] == 1.5 and data["detail"]["mos"] == 4.1
    expected = "ep-" + hashlib.sha256(b"cdr|acme|abc-1").hexdigest()[:32]
    assert event.id == expected
    outbound = cdr_event("acme", {**CDR, "direction": "outbound", "source": "1001"}, HCM)[0]
    assert outbound.extension == "1001" and outbound.direction == "outgoing"


def test_cdr_without_call_id_hashes_stable_fields_independent_of_time_zone() -> None:
    bare = {k: v for k, v in CDR.items() if k != "call_id"}
    key = cdr_key(bare)
    fields = "|".join(str(bare[k]) for k in ("direction", "source", "destination", "start",
                                              "duration", "status"))
    assert key == "h" + hashlib.sha256(fields.encode()).hexdigest()[:24]
    assert cdr_event("t", bare, HCM)[0].id == cdr_event("t", bare, BTS)[0].id
    assert cdr_key({**bare, "mos": 1.0}) == key  # quality figures are not identity
    assert cdr_key({**bare, "start": "2026-03-01 23:59:31"}) != key


def test_cdr_without_start_is_refused() -> None:
    with pytest.raises(ValueError):
        cdr_event("t", {**CDR, "start": ""}, HCM)


@pytest.mark.parametrize("status,body,kind", [
    (401, b'{"status":"error","message":"bad key"}', "auth"),
    (200, b'{"status":"error","message":"api_key is invalid"}', "auth"),
    (400, b'{"status":"error","message":"date_range.from must be formatted"}', "request"),
    (200, b'{"status":"error","message":"date_range wrong"}', "request"),
    (503, b"<html>down</html>", "unavailable"),
    (200, b"<html>maintenance</html>", "garbage"),
    (200, b"[1,2]", "garbage"),
])
def test_error_answers(status: int, body: bytes, kind: str) -> None:
    with pytest.raises(EPacificError) as caught:
        check_answer(status, body)
    assert caught.value.kind == kind
    assert "ePacific" in str(caught.value)


def test_paging_flags() -> None:
    answer = {"paging": {"page_current": 1, "page_count": 2, "next_page": True}}
    assert has_next(answer, 1, 10)
    assert not has_next({"paging": {"next_page": False, "page_count": 9}}, 1, 10)
    assert has_next({"paging": {"page_count": 3}}, 2, 10)  # no next_page: use page_count
    assert not has_next({"paging": {"page_count": 3}}, 3, 10)
    assert not has_next(answer, 1, 0)  # an empty page ends the walk whatever paging says
    assert not has_next({}, 1, 10)  # unpaged answer


def test_online_set_shapes() -> None:
    assert online_set({"data": ["100", 101]}) == {"100", "101"}
    assert online_set({"data": [{"extension": "102"}, {"ext": 103}]}) == {"102", "103"}
    for bad in ({"data": "100"}, {"data": [None]}, {"data": [{"x": 1}]}):
        with pytest.raises(EPacificError):
            online_set(bad)


def test_presence_events_diff() -> None:
    at = utc(2026, 1, 1, 0, 0, 5)
    first = presence_events("t", None, {"101", "100"}, at)
    assert [(e.extension, e.detail["online"], e.detail["initial"]) for e in first] == [
        ("100", True, True), ("101", True, True)]
    changed = presence_events("t", {"100", "101"}, {"101", "102"}, at)
    assert [(e.extension, e.detail["online"]) for e in changed] == [("102", True),
                                                                   ("100", False)]
    assert all(e.type == EventType.PRESENCE and e.occurred_at == "2026-01-01T00:00:05.000Z"
               for e in changed)
    assert presence_events("t", {"1"}, {"1"}, at) == []
    again = presence_events("t", {"100", "101"}, {"101", "102"}, at)
    assert [e.id for e in again] == [e.id for e in changed]  # deterministic
    later = presence_events("t", {"100", "101"}, {"101", "102"}, at + timedelta(seconds=1))
    assert not {e.id for e in later} & {e.id for e in changed}


def test_cursor_roundtrip_and_pruning() -> None:
    cursor = CdrCursor(utc(2026, 1, 1))
    cursor.remember("a", utc(2026, 1, 1, 0, 1))
    cursor.remember("b", utc(2026, 1, 1, 0, 9))
    again = CdrCursor.decode(cursor.encode())
    assert again.start == cursor.start and again.seen == cursor.seen
    again.advance(utc(2026, 1, 1, 0, 10), keep_from=utc(2026, 1, 1, 0, 5))
    assert set(again.seen) == {"b"} and again.start == utc(2026, 1, 1, 0, 10)
    again.advance(utc(2025, 1, 1), keep_from=utc(2025, 1, 1))  # never backwards
    assert again.start == utc(2026, 1, 1, 0, 10)
    with pytest.raises(ValueError):
        CdrCursor.decode("{not json")
    assert orjson.loads(again.encode())["from"] == "2026-01-01T00:10:00.000Z"
