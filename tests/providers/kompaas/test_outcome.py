"""Kompaas pure code: the outcome table of the provider document, numbers, fields, pending."""

from __future__ import annotations

import pytest

from bridge.providers.kompaas import outcome as oc
from bridge.providers.kompaas.pending import (
    FINISHED,
    PENDING,
    UNKNOWN,
    Held,
    Pending,
    PendingTable,
    TableFull,
)

# Written from kompaas-flash-call-sk.txt ("Callback - stav autorizačného hovoru"):
#   Prijatý hovor 16 + ANSWER; Obsadené 17 + CANCEL; Neprijatý 16 + CANCEL;
#   odmietnutý iným operátorom 31; problémy fakturácie 41; ostatné kódy: číslo nie je dostupné.
DOCUMENTED = [
    (16, "ANSWER", "answered"),
    (17, "CANCEL", "busy"),
    (16, "CANCEL", "not_answered"),
    (31, None, "rejected"),
    (31, "CANCEL", "rejected"),
    (31, "ANSWER", "rejected"),
    (41, None, "billing_problem"),
    (41, "CANCEL", "billing_problem"),
    (1, "CANCEL", "unreachable"),     # unallocated number
    (18, "CANCEL", "unreachable"),
    (19, None, "unreachable"),
    (21, "CANCEL", "unreachable"),
    (34, "CANCEL", "unreachable"),
    (127, None, "unreachable"),
    (0, None, "unreachable"),
    # 16/17 are excluded from "unreachable" by the document but only defined with these finals.
    (17, "ANSWER", "unknown"),
    (16, "BUSY", "unknown"),
    (16, None, "unknown"),
    (17, None, "unknown"),
    # statuses compare case-insensitively
    (16, "answer", "answered"),
    (17, " cancel ", "busy"),
]


@pytest.mark.parametrize(("q931", "final", "expected"), DOCUMENTED)
def test_outcome_table(q931: int, final: str | None, expected: str) -> None:
    assert oc.classify(q931, final) == expected


@pytest.mark.parametrize("number", ["421222202999", "12025550123", "49301234567",
                                    "12345678", "123456789012345"])
def test_valid_phone_numbers(number: str) -> None:
    assert oc.validate_phone(number) == number
    assert oc.validate_phone(f" {number} ") == number


@pytest.mark.parametrize(("value", "says"), [
    ("+421222202999", "'+'"),
    ("421 222 202 999", "digits only"),
    ("421-222-202-999", "digits only"),
    ("４２１２２２２０２９９９", "digits only"),  # full-width digits are not ASCII
    ("0905123456", "country code"),
    ("1234567", "8 to 15 digits"),
    ("1234567890123456", "8 to 15 digits"),
    ("", "empty"),
    (421222202999, "string"),
    (None, "string"),
])
def test_invalid_phone_numbers(value: object, says: str) -> None:
    with pytest.raises(ValueError) as info:
        oc.validate_phone(value)
    assert says in str(info.value)


def test_extract_dotted_paths() -> None:
    body = {"call": {"meta": {"uuid": "ab_1"}, "legs": [{"q": 16}, {"q": 17}]}, "flat": 1}
    assert oc.extract(body, "call.meta.uuid") == "ab_1"
    assert oc.extract(body, "call.legs.1.q") == 17
    assert oc.extract(body, "flat") == 1
    assert oc.extract(body, "call.legs.5.q") is None
    assert oc.extract(body, "flat.deeper") is None
    assert oc.extract(body, "missing") is None


def test_field_parsers() -> None:
    assert oc.parse_q931(16) == 16
    assert oc.parse_q931("17") == 17  # a template that quotes the placeholder
    for bad in (True, "ANSWER", None, 16.5, [16]):
        with pytest.raises(ValueError):
            oc.parse_q931(bad)
    assert oc.parse_final(" ANSWER ") == "ANSWER"
    assert oc.parse_final(None) is None
    with pytest.raises(ValueError):
        oc.parse_final(16)
    assert oc.parse_uuid(" fa278be48dc2_117793 ") == "fa278be48dc2_117793"
    for bad in ("", None, "has space_1", "x" * 200, {"a": 1}):
        with pytest.raises(ValueError):
            oc.parse_uuid(bad)


def test_event_shape() -> None:
    event = oc.verification_event(
        tenant="t1", uuid="fa278be48dc2_117793", outcome="busy", occurred_at=1_700_000_000.5,
        phone="421222202999", started_at=1_700_000_000.0,
        answer={"login_did": "7777777777", "code": "7777"}, q931=17, final="CANCEL")
    data = event.to_dict()
    assert data["type"] == "verification.completed"
    assert data["occurred_at"] == "2023-11-14T22:13:20.500Z"
    assert data["account"] == "117793"  # the part after "_" of the id
    assert data["callee"]["number"] == "421222202999"
    assert data["caller"]["number"] == "7777777777"
    assert data["detail"]["outcome"] == "busy" and data["detail"]["verified"] is False
    assert data["detail"]["q931_status"] == 17 and data["detail"]["final_status"] == "CANCEL"
    timed_out = oc.verification_event(tenant="t1", uuid="fa278be48dc2_117793",
                                      outcome="timed_out", occurred_at=1.0, phone=None,
                                      started_at=None, timeout=30.0)
    # One id per verification: an outcome and a timeout can never both be published.
    assert timed_out.id == event.id
    assert oc.event_id("t2", "fa278be48dc2_117793") != event.id


def _entry(uuid: str, deadline: float) -> Pending:
    return Pending(uuid=uuid, phone="421222202999", started_at=0.0, deadline=deadline)


def test_pending_table() -> None:
    table = PendingTable(capacity=2, finished_capacity=3)
    table.add(_entry("a", 10))
    table.add(_entry("b", 20))
    with pytest.raises(TableFull):
        table.add(_entry("c", 30))
    assert table.next_deadline() == 10
    assert table.expire(9.9, "timed_out") == []
    assert [e.uuid for e in table.expire(10, "timed_out")] == ["a"]
    assert table.complete("a", "answered") == (FINISHED, None, "timed_out")  # late
    state, entry, _ = table.complete("b", "busy")
    assert state == PENDING and entry is not None and entry.uuid == "b"
    assert table.complete("b", "busy") == (FINISHED, None, "busy")  # repeated
    assert table.complete("zzz", "busy") == (UNKNOWN, None, None)
    assert len(table) == 0 and table.next_deadline() is None


def test_pending_table_holds_an_outcome_that_overtakes_the_start() -> None:
    table = PendingTable(capacity=1, held_capacity=2)
    busy = Held(17, "CANCEL", "busy")
    assert table.complete("early", "busy", hold=busy) == (UNKNOWN, None, None)
    assert table.add(_entry("early", 10)) == busy  # finished at once, no room taken
    assert len(table) == 0 and table.complete("early", "busy") == (FINISHED, None, "busy")
    assert table.add(_entry("x", 10)) is None and len(table) == 1
    for uuid in ("h1", "h2", "h3"):  # the oldest held outcome is dropped past the bound
        table.complete(uuid, "busy", hold=busy)
    with pytest.raises(TableFull):
        table.add(_entry("h1", 20))  # no longer held: tracked normally, and the table is full
    assert table.add(_entry("h3", 20)) == busy
