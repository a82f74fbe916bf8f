"""The chaos run's invariant checker, on small hand-written runs: one per promise kept or broken."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from bridge.bench.chaos.check import check
from bridge.bench.chaos.records import Client, Close, Frame, Run

CH = "calls:chaos"


def ev(conn: int, eid: str, offset: str, t: float, *, provisional: int = 0, epoch: str = "E1",
       channel: str = CH) -> Frame:
    """An event frame; a provisional one carries the last confirmed position it is given."""
    return (conn, "e", channel, epoch, offset, eid, provisional, t)


def gap(conn: int, reason: str, t: float, *, epoch: str | None = None, channel: str = CH) -> Frame:
    return (conn, "g", channel, epoch, None, reason, 0, t)


def client(name: str, frames: Sequence[Frame], *, channels: Sequence[str] = (CH,),
           start: float | None = 0.0, upstream: dict[str, tuple[str, str]] | None = None,
           closes: Sequence[Close] = ()) -> Client:
    return {"client": name, "channels": list(channels), "start": start, "frames": frames,
            "upstream": dict(upstream or {}), "closes": closes}


def run(*clients: Client, journal: Sequence[tuple[float, str, str]] = (),
        loss_windows: Sequence[tuple[float, float]] = (), traffic_end: float = 100.0) -> Run:
    return {"clients": list(clients), "journal": journal, "loss_windows": loss_windows,
            "traffic_end": traffic_end}


# Client "a" sees both events, in order, on one connection: the reference the others lack or break.
A = client("a", [ev(0, "e1", "10-0", 1.0), ev(0, "e2", "11-0", 2.0)],
           upstream={"e1": ("call-1", "m1"), "e2": ("call-1", "m2")})

CASES: list[tuple[str, Run, dict[str, int], dict[str, int]]] = [
    # (id, run, expected non-zero violation counts, expected stats)
    ("clean", run(A, client("b", [ev(0, "e1", "10-0", 1.1), ev(1, "e2", "11-0", 2.5)]),
                  journal=[(0.9, "call-1", "m1"), (1.9, "call-1", "m2")]),
     {}, {"deliveries_expected": 4, "frames_checked": 4, "connections": 3}),
    ("silent loss", run(A, client("b", [ev(0, "e1", "10-0", 1.1)])),
     {"silent_loss": 1}, {}),
    ("loss excused by a later gap", run(A, client("b", [ev(0, "e1", "10-0", 1.1),
                                                       gap(1, "trimmed", 3.0)])),
     {}, {"excused_by_gap": 1}),
    ("loss not excused by an earlier gap", run(A, client("b", [gap(1, "trimmed", 1.5),
                                                              ev(1, "e1", "10-0", 1.6)])),
     {"silent_loss": 1}, {"excused_by_gap": 0}),
    ("confirmed twice, on another connection",
     run(client("a", [ev(0, "e1", "10-0", 1.0), ev(1, "e1", "10-0", 2.0)])),
     {"duplicate": 1}, {}),
    ("provisional then confirmed on the same connection",
     run(client("a", [ev(0, "e1", "10-0", 1.0), ev(0, "e2", "10-0", 2.0, provisional=1),
                      ev(0, "e2", "11-0", 3.0)])),
     {"duplicate": 1}, {"provisional_redelivered": 0}),
    ("provisional then confirmed on a later connection (a resume replays it)",
     run(client("a", [ev(0, "e1", "10-0", 1.0), ev(0, "e2", "10-0", 2.0, provisional=1),
                      ev(1, "e2", "11-0", 3.0)])),
     {}, {"provisional_redelivered": 1}),
    ("confirmed then provisional on a later connection",
     run(client("a", [ev(0, "e1", "10-0", 1.0), ev(1, "e1", "10-0", 2.0, provisional=1)])),
     {"duplicate": 1}, {}),
    ("published anew in a new epoch after Redis lost its data",
     run(client("a", [ev(0, "e1", "10-0", 1.0), gap(0, "epoch_changed", 2.0, epoch="E2"),
                      ev(0, "e1", "20-0", 3.0, epoch="E2")])),
     {}, {"republished_after_data_loss": 1}),
    ("shown provisionally again after Redis lost its data",
     {**run(client("a", [ev(0, "e1", "10-0", 1.0), ev(1, "e1", "10-0", 3.0, provisional=1)])),
      "data_losses": [(2.0, 2.5)]},
     {}, {"republished_after_data_loss": 1}),
    ("a copy in a new epoch without the gap",
     run(client("a", [ev(0, "e1", "10-0", 1.0), ev(1, "e1", "20-0", 3.0, epoch="E2")])),
     {"duplicate": 1}, {}),
    ("a copy in the same epoch after an epoch_changed gap",
     run(client("a", [ev(0, "e1", "10-0", 1.0), gap(0, "epoch_changed", 2.0, epoch="E2"),
                      ev(1, "e1", "10-0", 3.0)])),
     {"duplicate": 1}, {}),
    ("provisional twice", run(client("a", [ev(0, "e1", "0-0", 1.0, provisional=1),
                                           ev(1, "e1", "0-0", 2.0, provisional=1)])),
     {"duplicate": 1}, {}),
    ("out of order within an epoch",
     run(client("a", [ev(0, "e1", "11-0", 1.0), ev(0, "e2", "10-5", 2.0)])),
     {"out_of_order": 1}, {}),
    ("out of order across connections",
     run(client("a", [ev(0, "e1", "10-2", 1.0), ev(1, "e2", "10-1", 2.0)])),
     {"out_of_order": 1}, {}),
    ("offsets compare as numbers, not strings",
     run(client("a", [ev(0, "e1", "9-0", 1.0), ev(0, "e2", "10-0", 2.0)])),
     {}, {}),
    ("a new epoch after epoch_changed starts afresh",
     run(client("a", [ev(0, "e1", "50-0", 1.0), gap(0, "epoch_changed", 2.0, epoch="E2"),
                      ev(0, "e2", "1-0", 3.0, epoch="E2")])),
     {}, {}),
    ("provisional frames keep the last confirmed position and are exempt from order",
     run(client("a", [ev(0, "e1", "10-0", 1.0), ev(0, "e2", "10-0", 2.0, provisional=1),
                      ev(0, "e3", "10-0", 2.5, provisional=1), ev(0, "e4", "13-0", 3.0)])),
     {}, {}),
    ("upstream signal seen by no client", run(A, journal=[(1.5, "call-9", "m9")]),
     {"upstream_lost": 1}, {"events_emitted": 1}),
    ("upstream signal lost inside a loss window",
     run(A, journal=[(1.5, "call-9", "m9")], loss_windows=[(1.0, 2.0)]),
     {}, {"upstream_excused": 1}),
    ("an event seen only on another channel is not expected here",
     run(client("a", [ev(0, "x1", "10-0", 1.0, channel="calls:other")], channels=["calls:other"]),
         client("b", [])),
     {}, {"deliveries_expected": 1}),
    ("a client that started after an event is not expected to have it",
     run(A, client("b", [ev(0, "e2", "11-0", 2.1)], start=1.5)),
     {}, {"deliveries_expected": 3}),
    ("a client whose last connection ended before an event is not expected to have it",
     run(A, client("b", [ev(0, "e1", "10-0", 1.1)], closes=[(0, None, 1.5)])),
     {}, {"deliveries_expected": 3}),
    ("a client that never subscribed is not expected to have anything",
     run(A, client("b", [], start=None)),
     {}, {"deliveries_expected": 2}),
    ("a client whose connection dropped still owes what it missed meanwhile",
     run(A, client("b", [ev(0, "e1", "10-0", 1.1)], closes=[(0, 1006, 1.5), (1, None, 9.0)])),
     {"silent_loss": 1}, {"connections": 3}),
    ("an event on a channel the client does not hold",
     run(client("a", [ev(0, "x1", "10-0", 1.0, channel="calls:other")])),
     {"unexpected_channel": 1}, {}),
    ("a record the checker cannot trust",
     run(client("a", [ev(0, "e1", "ten", 1.0)]), journal=[(150.0, "call-1", "m1")]),
     {"bad_input": 2}, {}),
]


@pytest.mark.parametrize(("run_", "violations", "stats"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invariants(run_: Run, violations: dict[str, int], stats: dict[str, int]) -> None:
    report = check(run_)
    assert {kind: n for kind, n in report.counts.items() if n} == violations
    assert report.ok == (not violations)
    assert len(report.violations) == sum(violations.values())
    for name, value in stats.items():
        assert getattr(report.stats, name) == value, name


def test_a_violation_names_where_and_what() -> None:
    (loss,) = check(run(A, client("b", [ev(0, "e1", "10-0", 1.1)]))).violations
    assert (loss.kind, loss.client, loss.channel, loss.event, loss.t) == (
        "silent_loss", "b", CH, "e2", 2.0)
    (lost,) = check(run(journal=[(1.5, "call-9", "m9")])).violations
    assert "call_id=call-9" in lost.detail and "msg_id=m9" in lost.detail


def test_stats_count_gaps_closes_and_events() -> None:
    b = client("b", [ev(0, "e1", "10-0", 1.1), gap(1, "trimmed", 3.0), gap(2, "epoch_changed", 4.0)],
               closes=[(0, 1006, 1.2), (1, 4008, 3.5), (2, None, 9.0)])
    stats = check(run(A, b, journal=[(0.9, "call-1", "m1")])).stats
    assert stats.gaps_by_reason == {"trimmed": 1, "epoch_changed": 1}
    assert stats.gaps_by_client == {"b": {CH: 2}}
    assert stats.closes_by_code == {"1006": 1, "4008": 1, "client": 1}
    assert (stats.clients, stats.connections, stats.events_observed) == (2, 4, 2)


def test_violations_kept_are_capped_but_counted_exactly() -> None:
    many = client("a", [ev(0, "e1", "10-0", float(i)) for i in range(10)])
    report = check(run(many), keep=3)
    assert len(report.violations) == 3
    assert report.counts["duplicate"] == 9


def test_report_is_json_ready_and_summarized() -> None:
    report = check(run(A, client("b", [ev(0, "e1", "10-0", 1.1)])))
    assert json.loads(json.dumps(report.as_dict()))["counts"]["silent_loss"] == 1
    assert report.summary().startswith("chaos check: FAILED (violations: silent_loss=1)")
    assert check(run(A)).summary().startswith("chaos check: OK")


def test_a_long_run_is_checked_in_one_linear_pass() -> None:
    """1,000 clients x 2,000 frames over 10 channels: fast by design (dicts, sets, bisection)."""
    channels, events = 10, 2000
    clients = [
        client(f"c{i}", [ev(j // 1000, f"{i % channels}-{j}", f"{1000 + j}-0", 1.0 + j / 100,
                            channel=f"calls:t{i % channels}") for j in range(events)],
               channels=[f"calls:t{i % channels}"], closes=[(0, 1006, 10.9), (1, None, 30.0)])
        for i in range(1000)
    ]
    report = check(run(*clients, journal=[(1.0, "call-1", "m1")], loss_windows=[(0.5, 1.5)]))
    assert report.ok, report.summary()
    assert report.stats.frames_checked == report.stats.deliveries_expected == 2_000_000
    assert report.stats.events_observed == channels * events


def test_a_run_as_loaded_from_json_checks_the_same_and_twice_alike() -> None:
    """JSON gives lists, true/false and string keys; one check leaves nothing for the next."""
    b = client("b", [ev(0, "e1", "10-0", 1.1), ev(0, "e2", "10-0", 1.5, provisional=1),
                     ev(1, "e2", "11-0", 2.5), ev(1, "e2", "11-0", 2.6)], closes=[(0, 1006, 2.0)])
    record = run(A, b, journal=[(0.9, "call-1", "m1"), (1.9, "call-2", "m2")])
    loaded: Run = json.loads(json.dumps(record))
    assert list(loaded["clients"][1]["frames"][1]) == [0, "e", CH, "E1", "10-0", "e2", 1, 1.5]
    loaded["clients"][1]["frames"][1][6] = True  # type: ignore[index]  # a JSON array
    first, again = check(loaded).as_dict(), check(record).as_dict()
    assert first == again
    assert first["counts"] == {"silent_loss": 0, "duplicate": 1, "out_of_order": 0,
                               "upstream_lost": 1, "unexpected_channel": 0, "bad_input": 0}


def test_a_loss_of_an_event_nobody_got_confirmed_says_so() -> None:
    a = client("a", [ev(0, "e1", "10-0", 1.0), ev(0, "p1", "10-0", 2.0, provisional=1)])
    report = check(run(a, client("b", [ev(0, "e1", "10-0", 1.1)])))
    (loss,) = report.violations
    assert (loss.event, report.stats.events_provisional_only) == ("p1", 1)
    assert loss.detail.endswith("only ever seen provisionally")
