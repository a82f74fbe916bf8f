"""Kazoo event normalization: both key cases, time rules, type map, ids, direction, odd input."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from bridge.events.event import Durations, EventType, Hangup, Party
from bridge.upstream.normalize import normalize_kazoo

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def gregorian(moment: datetime) -> int:
    """Seconds since 0000-01-01: year 0 is a leap year of 366 days before 0001-01-01."""
    return int((moment - datetime(1, 1, 1, tzinfo=UTC)).total_seconds()) + 366 * 86400


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


MOMENT = datetime(2024, 5, 6, 7, 8, 9, 654321, tzinfo=UTC)

# The same CHANNEL_DESTROY as Kazoo 3.x (Title-Case, strings) and 4.x (lower_snake, integers,
# nulls dropped) would send it.
TITLE_3X = {
    "Event-Name": "CHANNEL_DESTROY",
    "Call-ID": "a1b2c3-leg-b",
    "Other-Leg-Call-ID": "a1b2c3-leg-a",
    "Call-Direction": "outbound",
    "Presence-ID": "1002@acme.sip.example",
    "Caller-ID-Number": "1001",
    "Caller-ID-Name": "Alice",
    "Callee-ID-Number": "1002",
    "Callee-ID-Name": "Bob",
    "Timestamp": str(gregorian(MOMENT)),
    "Msg-ID": str(micros(MOMENT)),
    "Hangup-Cause": "NORMAL_CLEARING",
    "Hangup-Code": "sip:200",
    "Duration-Seconds": "65",
    "Billing-Seconds": "60",
    "Ringing-Seconds": "5",
    "Custom-Channel-Vars": {
        "Account-ID": "acc0001",
        "Username": "bob_phone",
        "Bridge-ID": "a1b2c3-leg-a",
    },
}
SNAKE_4X = {
    "event_name": "CHANNEL_DESTROY",
    "call_id": "a1b2c3-leg-b",
    "other_leg_call_id": "a1b2c3-leg-a",
    "call_direction": "outbound",
    "presence_id": "1002@acme.sip.example",
    "caller_id_number": "1001",
    "caller_id_name": "Alice",
    "callee_id_number": "1002",
    "callee_id_name": "Bob",
    "timestamp": gregorian(MOMENT),
    "msg_id": str(micros(MOMENT)),
    "hangup_cause": "NORMAL_CLEARING",
    "hangup_code": "sip:200",
    "duration_seconds": 65,
    "billing_seconds": 60,
    "ringing_seconds": 5,
    "custom_channel_vars": {
        "account_id": "acc0001",
        "username": "bob_phone",
        "bridge_id": "a1b2c3-leg-a",
    },
}


def norm(name, payload, **kw):
    kw.setdefault("tenant", "acme")
    kw.setdefault("account", None)
    return normalize_kazoo(name, payload, **kw)


def test_both_key_cases_give_the_same_event():
    old = norm("CHANNEL_DESTROY", TITLE_3X)
    new = norm("CHANNEL_DESTROY", SNAKE_4X)
    assert old == new
    assert old.to_json() == new.to_json()
    assert new.type == EventType.ENDED
    assert new.account == "acc0001"
    assert (new.call_id, new.other_leg_id, new.bridge_id) == (
        "a1b2c3-leg-b", "a1b2c3-leg-a", "a1b2c3-leg-a"
    )
    assert new.caller == Party("1001", "Alice") and new.callee == Party("1002", "Bob")
    assert new.hangup == Hangup("NORMAL_CLEARING", "sip:200")
    assert new.durations == Durations(duration=65, billing=60, ringing=5)
    assert new.upstream == {"name": "CHANNEL_DESTROY", "msg_id": str(micros(MOMENT))}
    assert new.raw is None and "raw" not in new.to_dict()


def test_flattened_dotted_keys_are_read_too():
    flat = {k: v for k, v in SNAKE_4X.items() if k != "custom_channel_vars"}
    flat |= {"custom_channel_vars.account_id": "acc0001", "custom_channel_vars.bridge_id": "x1"}
    event = norm("CHANNEL_CREATE", flat)
    assert (event.account, event.bridge_id) == ("acc0001", "x1")


def test_configured_account_wins_over_the_payload():
    assert norm("CHANNEL_CREATE", TITLE_3X, account="configured").account == "configured"


@pytest.mark.parametrize("as_type", [int, str])
def test_gregorian_timestamp(as_type):
    moment = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)
    event = norm("CHANNEL_CREATE", {"Timestamp": as_type(gregorian(moment))})
    assert event.occurred_at == moment.strftime("%Y-%m-%dT%H:%M:%S") + ".000Z"
    assert event.detail is None  # the event's own time: no time_source note


def test_msg_id_is_preferred_and_keeps_milliseconds():
    stamp = datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)
    event = norm("CHANNEL_ANSWER", {"Timestamp": gregorian(stamp), "Msg-ID": str(micros(MOMENT))})
    assert event.occurred_at == "2024-05-06T07:08:09.654Z"


@pytest.mark.parametrize("msg_id", ["0f3c2a9e-77aa-4b1e", str(micros(MOMENT) // 1000), "", "12x"])
def test_msg_id_that_is_not_microseconds_falls_back_to_timestamp(msg_id):
    stamp = datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)
    event = norm("CHANNEL_ANSWER", {"Timestamp": gregorian(stamp), "Msg-ID": msg_id})
    assert event.occurred_at == "2023-12-31T23:59:59.000Z"


def test_no_time_at_all_is_recorded_not_invented():
    event = norm("CHANNEL_CREATE", {"Call-ID": "c1", "Timestamp": "yesterday"})
    assert event.occurred_at == "1970-01-01T00:00:00.000Z"
    assert event.detail == {"time_source": "none"}
    received = micros(MOMENT) / 1e6
    event = norm("CHANNEL_CREATE", {"Call-ID": "c1"}, received_at=received)
    assert event.occurred_at == "2024-05-06T07:08:09.654Z"
    assert event.detail == {"time_source": "received"}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("CHANNEL_CREATE", "call.created"),
        ("CHANNEL_ANSWER", "call.answered"),
        ("CHANNEL_BRIDGE", "call.bridged"),
        ("CHANNEL_HOLD", "call.held"),
        ("CHANNEL_UNHOLD", "call.unheld"),
        ("CHANNEL_DESTROY", "call.ended"),
        ("PARK_PARKED", "call.parked"),
        ("PARK_RETRIEVED", "call.retrieved"),
        ("PARK_ABANDONED", "call.abandoned"),
    ],
)
def test_every_mapped_name(name, expected):
    event = norm(name, TITLE_3X)
    assert event.type == expected
    assert event.upstream["name"] == name
    # Hang-up details belong to the end of a leg only.
    assert (event.hangup is not None) == (expected == "call.ended")
    assert (event.durations is not None) == (expected == "call.ended")


@pytest.mark.parametrize("name", ["CHANNEL_EXECUTE_COMPLETE", "DTMF", "call.whatever", ""])
def test_unknown_names_pass_through(name):
    event = norm(name, TITLE_3X)
    assert event.type == "call.other"
    assert event.upstream["name"] == name
    assert event.call_id == "a1b2c3-leg-b"
    assert orjson.loads(event.to_json())["upstream"]["name"] == name


@pytest.mark.parametrize(
    "leg, expected", [("inbound", "outgoing"), ("outbound", "incoming"), ("INBOUND", "outgoing")]
)
def test_direction_is_seen_from_the_extension(leg, expected):
    event = norm("CHANNEL_CREATE", {"Call-Direction": leg, "Presence-ID": "1001@r"})
    assert event.leg_direction == leg
    assert event.direction == expected


def test_direction_without_a_call_direction_or_an_extension():
    assert norm("CHANNEL_CREATE", {"Presence-ID": "1001@r"}).direction is None
    carrier_leg = norm(
        "CHANNEL_CREATE",
        {"Call-Direction": "inbound", "Custom-Channel-Vars": {"Inception": "offnet"}},
    )
    assert carrier_leg.extension is None and carrier_leg.direction is None
    assert carrier_leg.leg_direction == "inbound"
    assert carrier_leg.detail is not None
    assert (carrier_leg.detail["external"], carrier_leg.detail["inception"]) == (True, "offnet")
    assert norm("CHANNEL_CREATE", TITLE_3X).detail is None


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"Presence-ID": "1001@acme.sip", "Custom-Channel-Vars": {"Username": "u1"}}, "1001"),
        ({"presence_id": "sip:2002@acme.sip"}, "2002"),
        ({"Presence-ID": "", "Custom-Channel-Vars": {"Username": "u1"}}, "u1"),
        ({"Custom-Channel-Vars": {"Username": "u1"}}, "u1"),
        ({"Caller-ID-Number": "1001"}, None),
    ],
)
def test_extension_rule(payload, expected):
    assert norm("CHANNEL_CREATE", payload).extension == expected


def test_party_numbers_fall_back_to_sip_uris():
    event = norm(
        "CHANNEL_CREATE",
        {"From": "sip:+84901234567@carrier", "Request": "1002@acme", "Callee-ID-Name": "Bob"},
    )
    assert event.caller == Party(number="+84901234567", name=None)
    assert event.callee == Party(number="1002", name="Bob")
    to_first = norm("CHANNEL_CREATE", {"To": "<sip:1003@acme>;tag=9", "Request": "1002@acme"})
    assert to_first.callee == Party(number="1003")
    assert norm("CHANNEL_CREATE", {}).caller is None


def test_ids_are_stable_short_and_url_safe():
    first = norm("CHANNEL_DESTROY", TITLE_3X)
    assert first.id == norm("CHANNEL_DESTROY", dict(TITLE_3X)).id
    assert re.fullmatch(r"[a-z2-7]{26}", first.id)
    assert first.id == norm("CHANNEL_DESTROY", TITLE_3X, include_raw=True).id


def test_ids_differ_across_events_legs_accounts_and_providers():
    base = dict(TITLE_3X)
    variants = [
        norm("CHANNEL_DESTROY", base),
        norm("CHANNEL_ANSWER", base),
        norm("CHANNEL_DESTROY", base | {"Call-ID": "a1b2c3-leg-a"}),
        norm("CHANNEL_DESTROY", base | {"Msg-ID": str(micros(MOMENT) + 1)}),
        norm("CHANNEL_DESTROY", base, account="other-account"),
        norm("CHANNEL_DESTROY", base, provider="other-provider"),
    ]
    assert len({e.id for e in variants}) == len(variants)
    # The tenant is where an event is published, not part of what happened upstream.
    assert norm("CHANNEL_DESTROY", base, tenant="t2").id == variants[0].id


def test_ids_without_msg_id_hash_the_whole_payload():
    old = {k: v for k, v in TITLE_3X.items() if k != "Msg-ID"}
    new = {k: v for k, v in SNAKE_4X.items() if k != "msg_id"}
    assert norm("CHANNEL_DESTROY", old).id == norm("CHANNEL_DESTROY", new).id
    changed = old | {"Billing-Seconds": "61"}
    assert norm("CHANNEL_DESTROY", changed).id != norm("CHANNEL_DESTROY", old).id
    assert "msg_id" not in norm("CHANNEL_DESTROY", old).upstream


def test_raw_payload_only_on_request():
    event = norm("CHANNEL_DESTROY", SNAKE_4X, include_raw=True)
    assert event.raw == SNAKE_4X
    assert orjson.loads(event.to_json())["raw"] == SNAKE_4X


def _deep(depth):
    node: dict = {"Leaf": 1}
    for _ in range(depth):
        node = {"Next": node}
    return node


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"Custom-Channel-Vars": "not-a-dict", "Call-ID": 12345},
        {"custom_channel_vars": [1, {"account_id": "x"}], "Presence-ID": 1001},
        {"Duration-Seconds": "abc", "Billing-Seconds": None, "Ringing-Seconds": [],
         "Timestamp": {}},
        {"Msg-ID": {"x": 1}, "Timestamp": math.nan, "Hangup-Cause": 16},
        {"Timestamp": 10**40, "Msg-ID": "9" * 400, "Call-Direction": ["inbound"]},
        {1: "int key", None: "none key", "Caller-ID-Number": True},
        {"Custom-Channel-Vars": {"Inception": {"odd": 1}}, "Presence-ID": "@"},
        {"Custom-Channel-Vars": _deep(200)},
    ],
)
def test_odd_payloads_never_raise(payload):
    event = norm("CHANNEL_DESTROY", payload)
    assert event.type == "call.ended"
    assert re.fullmatch(r"[a-z2-7]{26}", event.id)
    encoded = orjson.loads(event.to_json())
    assert encoded["upstream"]["name"] == "CHANNEL_DESTROY"
    assert event.id == norm("CHANNEL_DESTROY", payload).id


def test_odd_values_read_as_missing_or_converted():
    event = norm(
        "CHANNEL_DESTROY",
        {"Call-ID": 12345, "Duration-Seconds": "12.0", "Billing-Seconds": "", "Hangup-Code": 486},
    )
    assert event.call_id == "12345"
    assert event.durations == Durations(duration=12)
    assert event.hangup == Hangup(cause=None, code="486")


@pytest.mark.parametrize("name, payload", [(None, {}), (b"CHANNEL_CREATE", {}), ("X", [1]),
                                           ("X", '{"Call-ID": "x"}')])
def test_name_and_payload_types_are_required(name, payload):
    with pytest.raises(ValueError, match="must be a"):
        normalize_kazoo(name, payload, tenant="acme", account=None)


# -- strict numbers and ids ---------------------------------------------------------------------

BAD_SECONDS = [1e40, 10**40, -1e308, -1, 31 * 86_400 + 1, "1e40", "١٢٣", "１２", "NaN", "inf",
               "1_000", "12\x00", True, [12]]


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_durations_outside_the_rules_read_as_missing(value):
    event = norm("CHANNEL_DESTROY", {"Call-ID": "c-1", "Duration-Seconds": value,
                                     "Billing-Seconds": "60", "Ringing-Seconds": 5})
    assert event.durations == Durations(billing=60, ringing=5)
    orjson.loads(event.to_json())  # nothing past 64 bits reaches the encoder


@pytest.mark.parametrize("msg_id", ["²" * 16, "١" * 16, "1" * 15 + "٢", " 1e15 "])
def test_msg_id_digits_are_ascii_only(msg_id):
    event = norm("CHANNEL_CREATE", {"Call-ID": "c-1", "Msg-ID": msg_id})
    assert event.detail is not None and event.detail["time_source"] == "none"


@pytest.mark.parametrize("timestamp", ["٦٣٨٧٩٠٠٠٠٠٠", "63879000000.5e3", 1e40, "inf"])
def test_gregorian_timestamp_digits_are_ascii_only(timestamp):
    event = norm("CHANNEL_CREATE", {"Call-ID": "c-1", "Timestamp": timestamp})
    assert event.occurred_at == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("key", "value"), [
    ("Call-ID", "c-1\x00x"), ("Call-ID", "c 1"), ("Call-ID", "c" * 257), ("Call-ID", "c-1\nx"),
    ("Other-Leg-Call-ID", "o\x00"), ("Presence-ID", "10\x0001@realm"),
])
def test_ids_with_control_characters_or_blanks_read_as_missing(key, value):
    event = norm("CHANNEL_CREATE", {"Call-ID": "ok-1", "Presence-ID": "1001@realm", key: value})
    fields = {"Call-ID": event.call_id, "Other-Leg-Call-ID": event.other_leg_id,
              "Presence-ID": event.extension}
    assert fields[key] is None
    assert b"\\u0000" not in event.to_json()


def test_valid_numbers_and_ids_are_still_read():
    event = norm("CHANNEL_DESTROY", {"Call-ID": " c-1 ", "Duration-Seconds": "12.7",
                                     "Billing-Seconds": 10.0, "Ringing-Seconds": " 2 ",
                                     "Msg-ID": str(1_700_000_000 * 1_000_000)})
    assert event.call_id == "c-1"
    assert event.durations == Durations(duration=12, billing=10, ringing=2)
    assert event.occurred_at.startswith("2023-11-14T22:13:20")
