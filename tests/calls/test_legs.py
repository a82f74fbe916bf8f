"""The live state of the Kazoo call sequences of docs/events.md, event by event: answered
calls, missed calls, ring groups, pickup, transfer, holds, out-of-order legs, presence."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from bridge.calls import view
from bridge.calls.change import TOMBSTONE_SECONDS, Change, Record, apply
from bridge.calls.legs import change_for
from bridge.events.event import Event, EventType, Party

_clock = itertools.count()


def leg(kind: EventType, call_id: str, extension: str | None, *, inbound: bool,
        other: str | None = None, bridge: str | None = None, at: int | None = None,
        caller: str = "1001", callee: str = "1002") -> Event:
    second = next(_clock) if at is None else at
    return Event(id=f"{kind}-{call_id}-{second}", type=kind, provider="antbuddy",
                 tenant="acme", occurred_at=f"2026-12-07T10:{second // 60:02d}:"
                 f"{second % 60:02d}.000Z", account="acct", call_id=call_id,
                 other_leg_id=other, bridge_id=bridge, extension=extension,
                 direction=None if extension is None else "outgoing" if inbound else "incoming",
                 leg_direction="inbound" if inbound else "outbound",
                 caller=Party(caller, None), callee=Party(callee, None))


class State:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.tombstones: dict[str, float] = {}

    def __call__(self, *events: Event) -> State:
        for event in events:
            change = change_for(event)
            if change is not None:
                apply(self.records, self.tombstones, change, now=1000.0)
        return self

    def calls(self) -> list[dict[str, Any]]:
        return view.calls(self.records)

    def statuses(self) -> dict[str, str]:
        return {e["extension"]: e["status"] for e in view.extensions(self.records)}

    def shape(self) -> list[tuple[str, str, list[str]]]:
        return [(c["call_id"], c["state"], [f"{leg['call_id']}:{leg['state']}"
                                           for leg in c["legs"]]) for c in self.calls()]


C, A_, B_ = EventType.CREATED, EventType.ANSWERED, EventType.BRIDGED


def test_an_answered_call_between_two_extensions() -> None:
    state = State()
    state(leg(C, "a", "1001", inbound=True, bridge="a"))
    assert state.shape() == [("a", "ringing", ["a:ringing"])]
    assert state.statuses() == {"1001": "ringing"}
    state(leg(C, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "ringing", "1002": "ringing"}
    state(leg(A_, "b", "1002", inbound=False, other="a", bridge="a"),
          leg(A_, "a", "1001", inbound=True, other="b", bridge="a"),
          leg(B_, "a", "1001", inbound=True, other="b", bridge="a"))
    [call] = state.calls()
    assert call["state"] == "bridged" and call["direction"] == "internal"
    assert call["extensions"] == ["1001", "1002"]
    assert call["caller"] == {"number": "1001", "name": None}
    assert call["started_at"] < call["answered_at"]
    assert state.statuses() == {"1001": "talking", "1002": "talking"}
    state(leg(EventType.HELD, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "talking", "1002": "held"}
    assert state.calls()[0]["state"] == "held"
    state(leg(EventType.UNHELD, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "talking", "1002": "talking"}
    state(leg(EventType.ENDED, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "talking"}
    state(leg(EventType.ENDED, "a", "1001", inbound=True, other="b", bridge="a"))
    assert state.calls() == [] and state.records == {}


def test_a_missed_call_rings_then_leaves_nothing() -> None:
    state = State()(leg(C, "a", "1001", inbound=True, bridge="a"),
                    leg(C, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.shape() == [("a", "ringing", ["a:ringing", "b:ringing"])]
    state(leg(EventType.ENDED, "a", "1001", inbound=True, bridge="a"),
          leg(EventType.ENDED, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.calls() == []


def test_a_ring_group_leg_that_never_answers_leaves_the_call() -> None:
    state = State()(leg(C, "a", "1001", inbound=True, bridge="a"),
                    leg(C, "b", "1002", inbound=False, other="a", bridge="a"),
                    leg(C, "c", "1003", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "ringing", "1002": "ringing", "1003": "ringing"}
    state(leg(A_, "b", "1002", inbound=False, other="a", bridge="a"),
          leg(EventType.ENDED, "c", "1003", inbound=False, other="a", bridge="a"),
          leg(B_, "a", "1001", inbound=True, other="b", bridge="a"))
    assert state.shape() == [("a", "bridged", ["a:bridged", "b:answered"])]
    assert state.statuses() == {"1001": "talking", "1002": "talking"}


def test_a_call_picked_up_by_another_extension() -> None:
    state = State()(leg(C, "a", "1001", inbound=True, bridge="a"),
                    leg(C, "b", "1002", inbound=False, other="a", bridge="a"))
    # 1003 picks the ringing call up: a new leg bridged to the caller; 1002's leg ends.
    state(leg(C, "p", "1003", inbound=False, other="a", bridge="a"),
          leg(A_, "p", "1003", inbound=False, other="a", bridge="a"),
          leg(EventType.ENDED, "b", "1002", inbound=False, other="a", bridge="a"),
          leg(B_, "a", "1001", inbound=True, other="p", bridge="a"))
    assert state.shape() == [("a", "bridged", ["a:bridged", "p:answered"])]
    assert state.statuses() == {"1001": "talking", "1003": "talking"}


def test_a_blind_transfer_moves_the_call_to_the_new_extension() -> None:
    state = State()(leg(C, "a", "1001", inbound=True, bridge="a"),
                    leg(C, "b", "1002", inbound=False, other="a", bridge="a"),
                    leg(A_, "b", "1002", inbound=False, other="a", bridge="a"),
                    leg(B_, "a", "1001", inbound=True, other="b", bridge="a"))
    state(leg(C, "t", "1004", inbound=False, other="a", bridge="a"),
          leg(EventType.ENDED, "b", "1002", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "talking", "1004": "ringing"}
    state(leg(A_, "t", "1004", inbound=False, other="a", bridge="a"))
    assert state.statuses() == {"1001": "talking", "1004": "talking"}
    assert [c["extensions"] for c in state.calls()] == [["1001", "1004"]]


def test_a_call_from_a_carrier_is_inbound_and_one_to_a_carrier_outbound() -> None:
    inbound = State()(leg(C, "x", None, inbound=True, bridge="x", caller="+84901234567"),
                      leg(C, "y", "1002", inbound=False, other="x", bridge="x"))
    assert inbound.calls()[0]["direction"] == "inbound"
    assert inbound.calls()[0]["caller"]["number"] == "+84901234567"
    outbound = State()(leg(C, "a", "1001", inbound=True, bridge="a"),
                       leg(C, "z", None, inbound=False, other="a", bridge="a"))
    assert outbound.calls()[0]["direction"] == "outbound"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_legs_out_of_order_give_the_same_state(order: tuple[int, ...]) -> None:
    events = [leg(C, "b", "1002", inbound=False, other="a", bridge="a", at=1),
              leg(A_, "b", "1002", inbound=False, other="a", bridge="a", at=5),
              leg(C, "a", "1001", inbound=True, bridge="a", at=0)]
    state = State()(*(events[i] for i in order))
    assert state.shape() == [("a", "answered", ["a:ringing", "b:answered"])]
    assert state.records["leg:b"]["started_at"] == "2026-12-07T10:00:01.000Z"
    assert state.records["leg:b"]["answered_at"] == "2026-12-07T10:00:05.000Z"


def test_an_event_arriving_after_its_legs_end_does_not_bring_it_back() -> None:
    state = State()(leg(EventType.ENDED, "b", "1002", inbound=False, other="a", at=9),
                    leg(C, "b", "1002", inbound=False, other="a", at=1),
                    leg(A_, "b", "1002", inbound=False, other="a", at=5))
    assert state.calls() == [] and "leg:b" in state.tombstones


def test_hold_and_unhold_out_of_order_keep_the_latest() -> None:
    state = State()(leg(C, "a", "1001", inbound=True, at=0),
                    leg(EventType.UNHELD, "a", "1001", inbound=True, at=20),
                    leg(EventType.HELD, "a", "1001", inbound=True, at=10))
    assert state.statuses() == {"1001": "talking"}


def test_parked_calls_and_abandoned_ones() -> None:
    state = State()(leg(C, "a", None, inbound=True, bridge="a", at=0),
                    leg(EventType.PARKED, "a", None, inbound=True, bridge="a", at=3))
    assert state.shape() == [("a", "parked", ["a:parked"])]
    state(leg(EventType.ABANDONED, "a", None, inbound=True, bridge="a", at=9))
    assert state.calls() == []


def test_presence_marks_extensions_online() -> None:
    event = Event(id="p1", type=EventType.PRESENCE, provider="epacific", tenant="acme",
                  occurred_at="2026-12-07T10:00:00.000Z",
                  detail={"extension": "2001", "online": True})
    presence = State()(event)
    calls = State()(leg(C, "a", "1001", inbound=True))
    assert view.extensions(calls.records, presence.records) == [
        {"extension": "1001", "status": "ringing", "calls": ["a"]},
        {"extension": "2001", "status": "idle", "calls": [], "online": True}]
    assert view.extensions(calls.records, presence.records, only="1009") == [
        {"extension": "1009", "status": "idle", "calls": []}]


@pytest.mark.parametrize("kind", [EventType.OTHER, EventType.COMPLETED, EventType.SYSTEM,
                                  EventType.VERIFICATION])
def test_events_that_change_nothing(kind: EventType) -> None:
    event = Event(id="x", type=kind, provider="antbuddy", tenant="acme",
                  occurred_at="2026-12-07T10:00:00.000Z", call_id="a")
    assert change_for(event) is None
    assert change_for(Event(id="y", type=EventType.CREATED, provider="antbuddy",
                            tenant="acme", occurred_at="2026-12-07T10:00:00.000Z")) is None


def test_a_change_reads_the_same_in_json() -> None:
    change = change_for(leg(C, "a", "1001", inbound=True, at=0))
    assert isinstance(change, Change)
    data = orjson.loads(change.to_json())
    assert data["key"] == "leg:a" and data["max"] == {"rank": 1}
    assert data["setnx"] == {"started_at": "2026-12-07T10:00:00.000Z"}
    assert data["end"] is False and data["latest"] == {}


def test_tombstones_older_than_their_lifetime_are_dropped_by_a_later_end() -> None:
    records: dict[str, Record] = {}
    tombstones: dict[str, float] = {}
    apply(records, tombstones, Change("leg:a", "2026-12-07T10:00:00.000Z", end=True), now=0.0)
    apply(records, tombstones, Change("leg:b", "2026-12-07T10:00:01.000Z", end=True), now=10.0)
    apply(records, tombstones, Change("leg:a", "2026-12-07T10:00:02.000Z", end=True), now=20.0)
    apply(records, tombstones, Change("leg:c", "2026-12-07T11:00:00.000Z", end=True),
          now=15.0 + TOMBSTONE_SECONDS)
    assert list(tombstones) == ["leg:a", "leg:c"], "b expired; a's end was renewed at 20"
    apply(records, tombstones, Change("leg:b", "2026-12-07T11:00:01.000Z", set={"x": 1}),
          now=16.0 + TOMBSTONE_SECONDS)
    assert records == {"leg:b": {"x": 1}}
