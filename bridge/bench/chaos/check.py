"""The invariants of a chaos run, checked from what the clients received and the simulator sent.

Pure: :func:`check` takes the run's record (plain data, as loaded from JSON) and returns a
:class:`Report`. Per logical client (one client resumes across many connections) and channel:

- ``silent_loss``: an event of the channel (one any client observed on it) that arrived after the
  client subscribed and before its last connection ended, received neither provisionally nor
  for real, and with no ``gap`` on that channel after the event was first seen anywhere
  (docs/protocol.md "What an open connection is promised": once, or a gap, never a silent hole);
- ``duplicate``: an event received twice, except the documented cases: seen provisionally,
  then for real on a later connection (a resume replays it with its real offset); and a copy in
  a new epoch after an ``epoch_changed`` gap (Redis lost its data and with it the event's
  de-duplication mark; a provider reading its source again published it anew);
- ``out_of_order``: a confirmed (non-provisional) frame whose offset does not follow the previous
  confirmed frame's within the same epoch, across all the client's connections;
- ``upstream_lost``: a signal the simulator sent that no client ever saw, outside the documented
  loss windows (an instance holding an upstream stream was killed);
- ``unexpected_channel``: a frame on a channel the client never held;
- ``bad_input``: a record the checker cannot trust (malformed frame, signal after traffic end).

Linear in frames plus expected deliveries (dicts, sets, bisection; no scan over all clients per
event): a run of 1,000 clients and 2 million frames takes seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate

from bridge.bench.chaos.records import Client, Report, Run, Stats, Violation

__all__ = ["KINDS", "Report", "Stats", "Violation", "check"]

SILENT_LOSS, DUPLICATE, OUT_OF_ORDER = "silent_loss", "duplicate", "out_of_order"
UPSTREAM_LOST, UNEXPECTED_CHANNEL, BAD_INPUT = "upstream_lost", "unexpected_channel", "bad_input"
KINDS = (SILENT_LOSS, DUPLICATE, OUT_OF_ORDER, UPSTREAM_LOST, UNEXPECTED_CHANNEL, BAD_INPUT)

KEEP_VIOLATIONS = 200  # kept in full; the counts stay exact beyond it


class _Sink:
    """Collects violations: the first ones in full, every one counted."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.kept: list[Violation] = []
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})

    def add(self, kind: str, client: str | None, channel: str | None, event: str | None,
            detail: str, t: float | None) -> None:
        self.counts[kind] += 1
        if len(self.kept) < self.keep:
            self.kept.append(Violation(kind, client, channel, event, detail, t))


@dataclass
class _Lane:
    """What one logical client received on one channel."""

    # event id -> (connection of its provisional copy or None, confirmed copy received, the
    # epoch of the latest copy, epoch_changed gaps received before it, when it came)
    copies: dict[str, tuple[int | None, bool, str | None, int, float]] = field(
        default_factory=dict)
    position: tuple[str, tuple[int, int]] | None = None  # last confirmed (epoch, offset)
    gaps: int = 0
    epoch_gaps: int = 0
    last_gap_t: float = -math.inf


@dataclass
class _Truth:
    """Per channel, the events any client observed: when first, and which ever confirmed."""

    first: defaultdict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    confirmed: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


@lru_cache(maxsize=1 << 16)  # the same offsets recur in every client of a channel
def _parse_offset(offset: str | None) -> tuple[int, int] | None:
    """``"<ms>-<seq>"`` as a pair of ints (compared as such), None when malformed."""
    ms, sep, seq = offset.partition("-") if isinstance(offset, str) else ("", "", "")
    return (int(ms), int(seq)) if sep and ms.isdigit() and seq.isdigit() else None


def check(run: Run, keep: int = KEEP_VIOLATIONS) -> Report:
    """Check every invariant of the module docstring on ``run``; never raises on bad data."""
    sink, stats = _Sink(keep), Stats()
    truth = _Truth()
    gaps: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    lanes_of: list[tuple[Client, dict[str, _Lane]]] = []
    losses = _Windows(run.get("data_losses", ()))
    for client in run["clients"]:
        lanes_of.append((client, _scan(client, truth, losses, sink, stats, gaps)))
        for _, code, _ in client["closes"]:
            closes["client" if code is None else str(code)] += 1
    ordered = {ch: _by_time(events) for ch, events in truth.first.items()}
    buffer_loss = _Windows(run.get("buffer_loss_windows", ()))
    for client, lanes in lanes_of:
        _check_completeness(client, lanes, ordered, truth.confirmed, buffer_loss, sink, stats)
    _check_upstream(run, sink, stats)
    stats.clients = len(run["clients"])
    stats.events_observed = len(set().union(*truth.first.values()))
    stats.events_provisional_only = sum(
        len(events.keys() - truth.confirmed[ch]) for ch, events in truth.first.items())
    stats.gaps_by_reason, stats.closes_by_code = dict(gaps), dict(closes)
    return Report(sink.kept, dict(sink.counts), stats)


def _scan(client: Client, truth: _Truth, losses: _Windows, sink: _Sink, stats: Stats,
          gaps: Counter[str]) -> dict[str, _Lane]:
    """One pass over a client's frames: duplicates, order, gaps; adds its events to ``truth``."""
    name = client["client"]
    lanes = {channel: _Lane() for channel in client["channels"]}
    conns = {conn for conn, _, _ in client["closes"]}
    for conn, kind, channel, epoch, offset, value, provisional, t in client["frames"]:
        conns.add(conn)
        lane = lanes.get(channel)
        if lane is None:
            sink.add(UNEXPECTED_CHANNEL, name, channel, value if kind == "e" else None,
                     f"{kind!r} frame on conn {conn}, a channel the client never held", t)
        elif kind == "g":
            lane.gaps += 1
            lane.epoch_gaps += value == "epoch_changed"
            lane.last_gap_t = max(lane.last_gap_t, t)
            gaps[str(value)] += 1
        elif kind != "e":
            sink.add(BAD_INPUT, name, channel, None, f"frame of unknown kind {kind!r}", t)
        else:
            stats.frames_checked += 1
            seen = truth.first[channel]
            if value not in seen or t < seen[value]:
                seen[value] = t
            if not provisional:
                truth.confirmed[channel].add(value)
            if _once(lane, conn, value, epoch, bool(provisional), name, channel, t, losses, sink,
                     stats):
                if not provisional:
                    _check_order(lane, epoch, offset, name, channel, value, t, sink)
            elif not provisional:
                # A duplicate is reported once, as such; it still moves the position.
                pos = _parse_offset(offset)
                if epoch is not None and pos is not None:
                    lane.position = (epoch, pos)
    stats.connections += len(conns)
    for channel, lane in lanes.items():
        if lane.gaps:
            stats.gaps_by_client.setdefault(name, {})[channel] = lane.gaps
    return lanes


def _once(lane: _Lane, conn: int, event: str, epoch: str | None, provisional: bool, name: str,
          channel: str, t: float, losses: _Windows, sink: _Sink, stats: Stats) -> bool:
    """Record one copy of ``event``; False (and a ``duplicate``) when it must not have come.

    Two copies are allowed, the documented cases (docs/protocol.md):

    - a confirmed copy after a provisional one on a later connection: a resume from a position
      before the provisional event replays it; on the same connection the published copy must
      not be sent again;
    - a copy after Redis lost its data (between the two copies: a data loss of the run, or an
      ``epoch_changed`` gap and another epoch): the event's de-duplication mark was lost with
      the data, and a provider that reads its source again published it anew.
    """
    prov_conn, confirmed, last_epoch, gaps_before, last_t = lane.copies.get(
        event, (None, False, None, lane.epoch_gaps, t))
    seen_before = prov_conn is not None or confirmed
    if seen_before and ((lane.epoch_gaps > gaps_before and epoch != last_epoch)
                        or losses.overlaps(last_t, t)):
        stats.republished_after_data_loss += 1
        lane.copies[event] = (conn if provisional else None, not provisional, epoch,
                              lane.epoch_gaps, t)
        return True
    if provisional:
        duplicate = seen_before
        if not duplicate:
            lane.copies[event] = (conn, confirmed, epoch, lane.epoch_gaps, t)
    else:
        duplicate = confirmed or (prov_conn is not None and conn <= prov_conn)
        if not duplicate:
            stats.provisional_redelivered += prov_conn is not None
            lane.copies[event] = (prov_conn, True, epoch, lane.epoch_gaps, t)
    if duplicate:
        before = [f"provisional on conn {prov_conn}"] if prov_conn is not None else []
        before += ["confirmed"] if confirmed else []
        what = "provisional" if provisional else "confirmed"
        sink.add(DUPLICATE, name, channel, event,
                 f"{what} copy on conn {conn} after: {', '.join(before)}", t)
    return not duplicate


def _check_order(lane: _Lane, epoch: str | None, offset: str | None, name: str, channel: str,
                 event: str, t: float, sink: _Sink) -> None:
    """A confirmed frame must follow the previous confirmed frame when they share an epoch.

    Compared with the previous frame only (not the highest seen), so one misplaced frame is one
    violation; a new epoch (after ``epoch_changed``) starts afresh.
    """
    pos = _parse_offset(offset)
    if epoch is None or pos is None:
        sink.add(BAD_INPUT, name, channel, event, f"confirmed frame at {epoch}/{offset}", t)
        return
    last = lane.position
    if last is not None and last[0] == epoch and pos <= last[1]:
        sink.add(OUT_OF_ORDER, name, channel, event,
                 f"offset {offset} after {last[1][0]}-{last[1][1]} in epoch {epoch}", t)
    lane.position = (epoch, pos)


def _by_time(events: dict[str, float]) -> tuple[list[float], list[str]]:
    """A channel's events sorted by first sight, as parallel lists for bisection."""
    pairs = sorted((t, event) for event, t in events.items())
    return [t for t, _ in pairs], [event for _, event in pairs]


def _end_of(client: Client) -> float:
    """When the client's last connection closed; infinity if it is not recorded as closed.

    Events first seen after that were never promised to it (the run ended, or it gave up).
    """
    last = max((f[0] for f in client["frames"]), default=-1)
    ends = [(conn, t) for conn, _, t in client["closes"] if conn >= last]
    return max(ends)[1] if ends else math.inf


class _Windows:
    """Time windows, possibly overlapping or nested: is a time inside one?"""

    def __init__(self, windows: Sequence[Sequence[float]]) -> None:
        pairs = sorted((float(a), float(b)) for a, b in windows)
        self._starts = [a for a, _ in pairs]
        self._reach = list(accumulate((b for _, b in pairs), max))

    def __contains__(self, t: float) -> bool:
        i = bisect_right(self._starts, t) - 1
        return i >= 0 and t <= self._reach[i]

    def overlaps(self, start: float, end: float) -> bool:
        """Whether a window meets ``[start, end]``."""
        i = bisect_right(self._starts, end) - 1
        return i >= 0 and self._reach[i] >= start


def _check_completeness(client: Client, lanes: dict[str, _Lane],
                        ordered: dict[str, tuple[list[float], list[str]]],
                        confirmed: defaultdict[str, set[str]], buffer_loss: _Windows,
                        sink: _Sink, stats: Stats) -> None:
    """Every event of a held channel first seen during the client's life reached it or a gap."""
    start, end = client["start"], _end_of(client)
    if start is None:  # never subscribed: nothing was promised to it
        return
    for channel, lane in lanes.items():
        times, events = ordered.get(channel, ([], []))
        for i in range(bisect_left(times, start), bisect_right(times, end)):
            stats.deliveries_expected += 1
            if events[i] in lane.copies:
                continue
            if lane.last_gap_t >= times[i]:  # a gap at or after first sight covers it
                stats.excused_by_gap += 1
            elif events[i] not in confirmed[channel] and times[i] in buffer_loss:
                # In the outage buffer of an instance killed before Redis came back: lost
                # for every other client, as docs/operations.md says.
                stats.excused_buffer_loss += 1
            else:
                only = "" if events[i] in confirmed[channel] else "; only ever seen provisionally"
                sink.add(SILENT_LOSS, client["client"], channel, events[i],
                         f"never received, and no gap on the channel after its first sight{only}",
                         times[i])


def _check_upstream(run: Run, sink: _Sink, stats: Stats) -> None:
    """Every signal the simulator sent became an event some client saw, or was in a loss window."""
    seen = {(str(key[0]), str(key[1])) for client in run["clients"]
            for key in client["upstream"].values()
            if key is not None and len(key) == 2 and None not in key}
    windows = _Windows(run["loss_windows"])
    for t, call_id, msg_id in run["journal"]:
        stats.events_emitted += 1
        if t > run["traffic_end"]:
            sink.add(BAD_INPUT, None, None, None,
                     f"signal call_id={call_id} msg_id={msg_id} sent after traffic end", t)
        elif (str(call_id), str(msg_id)) in seen:
            continue
        elif t in windows:
            stats.upstream_excused += 1
        else:
            sink.add(UPSTREAM_LOST, None, None, None,
                     f"signal call_id={call_id} msg_id={msg_id} reached no client", t)
