"""Quickom pure code: signature vectors, record -> event, the request_id window."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bridge.common.recent import RecentWindow as RecentIds
from bridge.providers.quickom import signature
from bridge.providers.quickom.calls import InvalidCall, call_event, event_id

SECRET = "whsec-test-0123"


def body(**over):
    b = {"call_id": "abc-1", "start_time": 1700000000, "end_time": 1700000042,
         "customer_info": {"customer_id": "cu-9"}, "callee_info": {"member_id": "m-7"}}
    b.update(over)
    return b


def hexmac(text: str) -> str:
    return hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("over", "text"), [
    ({}, "abc-117000000001700000042cu-9m-7"),
    # A float with an integral value is written as the integer (JavaScript's String(n)).
    ({"start_time": 1700000000.0}, "abc-117000000001700000042cu-9m-7"),
    ({"end_time": 1700000042.5}, "abc-117000000001700000042.5cu-9m-7"),
    # Milliseconds, and times sent as strings, are used as they are.
    ({"start_time": 1700000000123, "end_time": "1700000042999"},
     "abc-117000000001231700000042999cu-9m-7"),
    ({"customer_info": {"customer_id": 12345}}, "abc-11700000000170000004212345m-7"),
    ({"callee_info": {}}, "abc-117000000001700000042cu-9"),
    ({"customer_info": None}, "abc-117000000001700000042m-7"),
])
def test_signature_vectors(over, text):
    b = body(**over)
    expected = hexmac(text)
    assert signature.signing_text(b) == text
    assert signature.verify(SECRET, b, expected)
    assert signature.verify(SECRET, b, expected.upper())
    assert signature.verify(SECRET, b, f"  {expected}\n")


def test_fixed_vector():
    # Computed with `printf %s abc-117000000001700000042cu-9m-7 |
    # openssl dgst -sha256 -hmac whsec-test-0123`.
    vector = "7a73f23c88a922ac83ed03f5e6d17c6efaad74a6c9f1b8ce887b399234d4194b"
    assert signature.sign(SECRET, body()) == vector
    assert signature.verify(SECRET, body(), vector)


@pytest.mark.parametrize("header", [None, "", "00" * 32, "not-hex", hexmac("other")])
def test_wrong_signatures(header):
    assert not signature.verify(SECRET, body(), header)


def test_tampered_field_and_wrong_secret_fail():
    good = hexmac(signature.signing_text(body()))
    assert not signature.verify(SECRET, body(end_time=1700000043), good)
    assert not signature.verify("another-secret", body(), good)


@pytest.mark.parametrize("value", [True, {"a": 1}, [1], float("nan")])
def test_unsignable_values_never_verify(value):
    assert not signature.verify(SECRET, body(start_time=value), hexmac("abc-1"))


def test_call_event_fields():
    record = {**body(), "customer_info": {"customer_id": "cu-9", "name": "An",
                                          "phone_number": "+8490", "email": "a@x"},
              "callee_info": {"member_id": "m-7", "name": "Binh", "phone_number": "+8428"},
              "has_record": True, "record_number": 2,
              "record_files": [{"record_id": "r1", "start_time": 1700000001,
                                "end_time": 1700000020}, {"record_id": "r2"}]}
    event = call_event(record, "acme")
    assert event.type == "call.completed" and event.provider == "quickom"
    assert event.call_id == "abc-1" and event.tenant == "acme"
    assert event.occurred_at == "2023-11-14T22:14:02.000Z"  # 1700000042 UTC
    assert event.durations is not None and event.durations.duration == 42
    assert event.caller.number == "+8490" and event.callee.name == "Binh"
    assert event.extension == "m-7" and event.direction == "incoming"
    assert [r["record_id"] for r in event.detail["recordings"]] == ["r1", "r2"]
    assert event.detail["recordings"][0]["index"] == 0
    assert event.detail["has_record"] is True


def test_milliseconds_and_ids():
    seconds = call_event(body(), "acme")
    millis = call_event(body(start_time=1700000000000, end_time=1700000042000), "acme")
    assert millis.occurred_at == seconds.occurred_at
    assert millis.durations == seconds.durations
    # The id depends on tenant and call_id only: webhook and backfill renderings agree.
    assert seconds.id == millis.id == event_id("acme", "abc-1")
    assert call_event(body(), "other").id != seconds.id
    assert call_event(body(call_id="abc-2"), "acme").id != seconds.id
    with pytest.raises(InvalidCall):
        call_event(body(call_id=""), "acme")


def test_recent_ids_window():
    now = [0.0]
    ids = RecentIds(10.0, size=3, clock=lambda: now[0])
    assert ids.add("a") and not ids.add("a")
    now[0] = 9.9
    assert not ids.add("a")
    now[0] = 10.5
    assert ids.add("a")  # the window has passed
    for key in "bcd":
        assert ids.add(key)
    assert len(ids) == 3
