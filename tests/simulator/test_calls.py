"""Simulated Kazoo call flows and the traffic loop that plays them."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest

from bridge.simulator.calls import Endpoint, Outcome, plan_call
from bridge.simulator.traffic import Traffic
from bridge.upstream.normalize import normalize_kazoo

UTC = timezone.utc
# Seconds from 0000-01-01 to 1970-01-01, computed here rather than imported: year 0 is a leap
# year (366 days) before datetime's 0001-01-01.
GREGORIAN_TO_UNIX = int((datetime(1970, 1, 1, tzinfo=UTC) - datetime(1, 1, 1, tzinfo=UTC))
                        .total_seconds()) + 366 * 86400
START = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC).timestamp()
REALM = "acme.sim"

ALICE = Endpoint("1001", "Alice")
BOB = Endpoint("1002", "Bob")
CARRIER = Endpoint("+84901234567", internal=False)
KINDS = {"internal": (ALICE, BOB), "from_carrier": (CARRIER, BOB), "to_carrier": (ALICE, CARRIER)}

CASES = [
    (kind, outcome, hold, seed)
    for kind in KINDS
    for outcome, hold in [
        (Outcome.ANSWERED, False),
        (Outcome.ANSWERED, True),
        (Outcome.BUSY, None),
        (Outcome.NO_ANSWER, None),
        (Outcome.CANCELLED, None),
    ]
    for seed in (1, 2, 3)
]


def plan(kind="internal", outcome=None, hold=None, seed=1, scale=1.0):
    caller, callee = KINDS[kind]
    return plan_call(random.Random(seed), start=START, account_id="acc1", realm=REALM,
                     caller=caller, callee=callee, outcome=outcome, hold=hold, scale=scale)


def micros(signal) -> int:
    return int(signal.payload["Msg-ID"])


def legs(flow):
    by_leg = defaultdict(list)
    for signal in flow:
        by_leg[signal.payload["Call-ID"]].append(signal)
    a = [s for s in flow if s.payload["Call-Direction"] == "inbound"]
    b = [s for s in flow if s.payload["Call-Direction"] == "outbound"]
    assert len(by_leg) == 2 and by_leg[a[0].payload["Call-ID"]] == a
    return a, b


@pytest.mark.parametrize("kind, outcome, hold, seed", CASES)
def test_flows_are_well_formed(kind, outcome, hold, seed):
    flow = plan(kind, outcome, hold, seed)
    times = [s.at for s in flow]
    assert times == sorted(times) and flow[0].at == START
    assert len({s.payload["Msg-ID"] for s in flow}) == len(flow)
    for s in flow:
        assert s.payload["Event-Name"] == s.name
        assert s.at == micros(s) / 1e6
        assert s.payload["Timestamp"] == micros(s) // 1_000_000 + GREGORIAN_TO_UNIX
        assert isinstance(s.payload["Timestamp"], int)
        assert s.payload["Custom-Channel-Vars"]["Account-ID"] == "acc1"

    a, b = legs(flow)
    # Both legs exist before anything else happens; each leg ends with its own destroy.
    assert [s.name for s in flow[:2]] == ["CHANNEL_CREATE", "CHANNEL_CREATE"]
    assert flow[0] is a[0]
    for leg in (a, b):
        names = [s.name for s in leg]
        assert names[-1] == "CHANNEL_DESTROY" and names.count("CHANNEL_DESTROY") == 1
        assert names.count("CHANNEL_CREATE") == 1
    assert {flow[-1].name, flow[-2].name} == {"CHANNEL_DESTROY"}

    # Linked: B always points at A, A at B once B exists; one Bridge-ID for the whole call.
    a_id, b_id = a[0].payload["Call-ID"], b[0].payload["Call-ID"]
    assert all(s.payload["Other-Leg-Call-ID"] == a_id for s in b)
    assert all(s.payload["Other-Leg-Call-ID"] == b_id for s in a[1:])
    assert len({s.payload["Custom-Channel-Vars"]["Bridge-ID"] for s in flow}) == 1


@pytest.mark.parametrize("kind, outcome, hold, seed", CASES)
def test_destroy_durations_match_the_planned_times(kind, outcome, hold, seed):
    for leg in legs(plan(kind, outcome, hold, seed)):
        created, end = micros(leg[0]), micros(leg[-1])
        answers = [micros(s) for s in leg if s.name == "CHANNEL_ANSWER"]
        answered = answers[0] if answers else end
        p = leg[-1].payload
        assert p["Duration-Seconds"] == math.floor((end - created) / 1e6)
        assert p["Billing-Seconds"] == math.floor((end - answered) / 1e6)
        assert p["Ringing-Seconds"] == math.floor((answered - created) / 1e6)
        assert p["Duration-Seconds"] >= p["Billing-Seconds"]


@pytest.mark.parametrize(
    "outcome, cause, code, first_down",
    [
        (Outcome.BUSY, "USER_BUSY", "sip:486", "outbound"),
        (Outcome.NO_ANSWER, "NO_ANSWER", "sip:480", "outbound"),
        (Outcome.CANCELLED, "ORIGINATOR_CANCEL", "sip:487", "inbound"),
        (Outcome.ANSWERED, "NORMAL_CLEARING", None, None),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_hangup_cause_and_code_per_outcome(outcome, cause, code, first_down, seed):
    flow = plan(outcome=outcome, seed=seed)
    destroys = [s for s in flow if s.name == "CHANNEL_DESTROY"]
    assert [d.payload["Hangup-Cause"] for d in destroys] == [cause, cause]
    if code is not None:
        assert [d.payload["Hangup-Code"] for d in destroys] == [code, code]
    if first_down is not None:
        assert destroys[0].payload["Call-Direction"] == first_down
    answered = any(s.name == "CHANNEL_ANSWER" for s in flow)
    assert answered == (outcome is Outcome.ANSWERED)
    assert all(d.payload["Billing-Seconds"] == 0 for d in destroys) != answered


def expected_types(outcome, hold):
    if outcome is not Outcome.ANSWERED:
        return ["call.created", "call.created", "call.ended", "call.ended"]
    middle = ["call.held", "call.unheld"] if hold else []
    return ["call.created", "call.created", "call.answered", "call.answered", "call.bridged",
            *middle, "call.ended", "call.ended"]


@pytest.mark.parametrize("kind, outcome, hold, seed", CASES)
def test_flows_normalize_to_the_expected_events(kind, outcome, hold, seed):
    caller, callee = KINDS[kind]
    flow = plan(kind, outcome, hold, seed)
    events = [normalize_kazoo(s.name, s.payload, tenant="acme", account=None) for s in flow]
    assert [e.type for e in events] == expected_types(outcome, hold)
    assert len({e.id for e in events}) == len(events)
    a_id = flow[0].payload["Call-ID"]
    for e in events:
        assert e.account == "acc1"
        assert e.occurred_at.startswith("2024-05-06T")
        owner = caller if e.call_id == a_id else callee
        if owner.internal:
            assert e.extension == owner.number
            assert e.direction == ("outgoing" if owner is caller else "incoming")
        else:
            assert e.extension is None and e.direction is None
        assert (e.detail is not None and e.detail.get("external")) == (kind != "internal")
        assert e.caller is not None and e.caller.number == caller.number
        assert e.callee is not None and e.callee.number == callee.number


def test_random_outcomes_are_all_reachable_and_mostly_answered():
    counts = Counter()
    for seed in range(400):
        flow = plan(seed=seed)
        counts[flow[-1].payload["Hangup-Cause"]] += 1
    assert set(counts) == {"NORMAL_CLEARING", "USER_BUSY", "NO_ANSWER", "ORIGINATOR_CANCEL"}
    assert counts.most_common(1)[0][0] == "NORMAL_CLEARING"


def test_scale_shortens_the_same_flow():
    full, fast = plan(seed=5, outcome=Outcome.ANSWERED), plan(seed=5, outcome=Outcome.ANSWERED,
                                                              scale=0.1)
    assert [s.name for s in full] == [s.name for s in fast]
    assert [s.payload["Call-ID"] for s in full] == [s.payload["Call-ID"] for s in fast]
    span_full, span_fast = micros(full[-1]) - micros(full[0]), micros(fast[-1]) - micros(fast[0])
    assert span_fast == pytest.approx(span_full * 0.1, rel=1e-3)


def test_a_call_needs_an_internal_endpoint():
    with pytest.raises(ValueError):
        plan_call(random.Random(1), start=START, account_id="a", realm=REALM,
                  caller=CARRIER, callee=Endpoint("+84281234567", internal=False))


# --- Traffic -----------------------------------------------------------------------------


def check_traffic_output(got, traffic, accounts, extensions, calls):
    stats = traffic.stats()
    assert stats["calls_started"] == stats["calls_finished"] == calls
    assert stats["calls_active"] == 0
    assert sum(stats["signals"].values()) == len(got)
    assert Counter(name for _, name, _ in got) == Counter(stats["signals"])
    assert stats["signals"]["CHANNEL_CREATE"] == stats["signals"]["CHANNEL_DESTROY"] == 2 * calls
    # Emitted in planned order across interleaved calls.
    stamps = [int(p["Msg-ID"]) for _, _, p in got]
    assert stamps == sorted(stamps)
    per_leg = defaultdict(list)
    for account, name, payload in got:
        assert account in accounts
        assert payload["Custom-Channel-Vars"]["Account-ID"] == account
        if "Presence-ID" in payload:
            assert payload["Presence-ID"].split("@")[0] in extensions
        per_leg[payload["Call-ID"]].append(name)
    assert len(per_leg) == 2 * calls
    assert all(n[0] == "CHANNEL_CREATE" and n[-1] == "CHANNEL_DESTROY" for n in per_leg.values())
    events = [normalize_kazoo(n, p, tenant="t", account=a) for a, n, p in got]
    assert len({e.id for e in events}) == len(events)


async def test_traffic_plays_calls_through_a_plain_emit():
    got = []
    accounts, extensions = ["acc1", "acc2"], ["1001", "1002", "1003"]
    traffic = Traffic(lambda *signal: got.append(signal), accounts=accounts,
                      extensions=extensions, calls_per_second=50, time_scale=0.002, seed=7,
                      max_calls=8)
    async with asyncio.timeout(30):
        await traffic.run()
    check_traffic_output(got, traffic, accounts, extensions, calls=8)


async def test_traffic_awaits_an_async_emit_and_drops_on_timeout():
    got = []

    async def emit(account, name, payload):
        await asyncio.sleep(0)
        got.append((account, name, payload))

    traffic = Traffic(emit, accounts=["acc1"], extensions=["1001", "1002"],
                      calls_per_second=50, time_scale=0.002, seed=3, max_calls=4)
    async with asyncio.timeout(30):
        await traffic.run()
    check_traffic_output(got, traffic, ["acc1"], ["1001", "1002"], calls=4)

    stuck = asyncio.Event()
    blocked = Traffic(lambda *_: stuck.wait(), accounts=["acc1"], extensions=["1001", "1002"],
                      calls_per_second=50, time_scale=0.002, seed=3, max_calls=1,
                      emit_timeout=0.01)
    async with asyncio.timeout(30):
        await blocked.run()
    stats = blocked.stats()
    assert stats["signals"] == {} and stats["signals_dropped"] >= 4
    assert stats["calls_finished"] == 1


async def test_traffic_runs_until_cancelled_and_follows_rate_changes():
    got = []
    first_call_done = asyncio.Event()

    def emit(account, name, payload):
        got.append((account, name, payload))
        if sum(n == "CHANNEL_DESTROY" for _, n, _ in got) == 2:
            first_call_done.set()

    # At this rate a second call would take hours: only the rate change can start one soon.
    traffic = Traffic(emit, accounts=["acc1"], extensions=["1001", "1002", "1003"],
                      calls_per_second=0.0001, time_scale=0.001, seed=11)
    task = asyncio.create_task(traffic.run())
    try:
        async with asyncio.timeout(30):
            await first_call_done.wait()
            assert traffic.stats()["calls_started"] == 1
            traffic.calls_per_second = 100
            while traffic.stats()["calls_started"] < 3:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert traffic.calls_per_second == 100
    assert len({p["Call-ID"] for _, _, p in got}) >= 2


def most_calls_per_extension(got):
    """The most calls any (account, extension) was in at once, replaying the signals in order:
    a call lasts from its first signal to the destroy of its last open leg."""
    open_legs = Counter()  # Bridge-ID -> legs created and not destroyed
    members = defaultdict(set)  # Bridge-ID -> (account, extension) in it
    calls_of = defaultdict(set)  # (account, extension) -> Bridge-IDs in progress
    most = 0
    for account, name, payload in got:
        call = payload["Custom-Channel-Vars"]["Bridge-ID"]
        if name == "CHANNEL_CREATE":
            open_legs[call] += 1
        if "Presence-ID" in payload:
            member = (account, payload["Presence-ID"].split("@")[0])
            members[call].add(member)
            calls_of[member].add(call)
            most = max(most, len(calls_of[member]))
        if name == "CHANNEL_DESTROY":
            open_legs[call] -= 1
            if open_legs[call] == 0:
                for member in members.pop(call):
                    calls_of[member].discard(call)
    assert not any(calls_of.values()) and not members
    return most


async def test_an_extension_is_in_one_call_at_a_time():
    got = []
    accounts, extensions = ["acc1", "acc2"], ["1001", "1002", "1003"]
    # Far more calls than three phones per account can take: most arrivals find them busy.
    traffic = Traffic(lambda *signal: got.append(signal), accounts=accounts,
                      extensions=extensions, calls_per_second=400, time_scale=0.002, seed=5,
                      max_calls=60)
    async with asyncio.timeout(60):
        await traffic.run()
    check_traffic_output(got, traffic, accounts, extensions, calls=60)
    assert traffic.stats()["calls_busy"] > 0
    assert most_calls_per_extension(got) == 1
    # Every kind of call still happens: internal, from outside and to outside.
    inceptions = Counter(p["Custom-Channel-Vars"].get("Inception") for _, n, p in got
                         if n == "CHANNEL_CREATE" and p["Call-Direction"] == "inbound")
    assert set(inceptions) == {None, "offnet", "onnet"}


async def test_call_waiting_is_only_on_request():
    got = []
    traffic = Traffic(lambda *signal: got.append(signal), accounts=["acc1"],
                      extensions=["1001", "1002", "1003"], calls_per_second=400,
                      time_scale=0.002, seed=5, max_calls=40, calls_per_extension=2)
    async with asyncio.timeout(60):
        await traffic.run()
    check_traffic_output(got, traffic, ["acc1"], ["1001", "1002", "1003"], calls=40)
    assert most_calls_per_extension(got) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"accounts": []},
        {"extensions": ["1001", "1001"]},
        {"calls_per_second": 0},
        {"time_scale": -1},
        {"calls_per_extension": 0},
    ],
)
def test_traffic_rejects_bad_settings(kwargs):
    settings = {"accounts": ["a"], "extensions": ["1", "2"], "calls_per_second": 1.0} | kwargs
    with pytest.raises(ValueError):
        Traffic(lambda *_: None, **settings)
    traffic = Traffic(lambda *_: None, accounts=["a"], extensions=["1", "2"], calls_per_second=1)
    with pytest.raises(ValueError):
        traffic.calls_per_second = 0

