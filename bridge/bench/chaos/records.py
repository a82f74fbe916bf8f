"""What a chaos run records, as the checker (:mod:`bridge.bench.chaos.check`) reads it, and what the
checker reports.

Plain data, as written to JSON: the clients' frames (:mod:`bridge.bench.chaos.clients`), the signals
the simulator sent, and the windows in which the documentation allows a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NotRequired, TypedDict

Frame = tuple[int, str, str, str | None, str | None, str, int, float]
"""``[conn, kind, channel, epoch, offset, value, provisional, t]``; kind ``"e"`` (value: the event
id) or ``"g"`` (value: the gap's reason; offset null, provisional 0)."""

Close = tuple[int, int | None, float]
"""``[conn, code, t]``; code null when the client itself closed or aborted the connection."""


class Client(TypedDict):
    """One logical client: every connection it made, its frames in arrival order."""

    client: str
    channels: list[str]
    start: float | None  # when it was first subscribed to all its channels; None: never
    frames: Sequence[Frame]
    upstream: dict[str, Sequence[str | int | None] | None]  # event id -> [call_id, msg_id]
    closes: Sequence[Close]


class Run(TypedDict):
    """The record of one run, as the harness writes it."""

    clients: list[Client]
    journal: Sequence[tuple[float, str, str | int]]  # [t_emit, call_id, msg_id] per signal sent
    loss_windows: Sequence[tuple[float, float]]  # [start, end]: upstream signals may be lost
    #: [start, end]: events an instance only delivered provisionally may be lost (it was
    #: killed before Redis came back: docs/operations.md); optional.
    buffer_loss_windows: NotRequired[Sequence[tuple[float, float]]]
    #: [start, end]: Redis lost its data (killed, back empty); optional.
    data_losses: NotRequired[Sequence[tuple[float, float]]]
    traffic_end: float


@dataclass(frozen=True)
class Violation:
    """One broken promise; ``t`` is when it shows (a frame's arrival, an event's first sight)."""

    kind: str
    client: str | None
    channel: str | None
    event: str | None
    detail: str
    t: float | None


@dataclass
class Stats:
    """What was checked; all counts are exact."""

    clients: int = 0
    connections: int = 0
    frames_checked: int = 0  # event frames
    deliveries_expected: int = 0  # (client, channel, event) the client had to receive or be told of
    events_emitted: int = 0  # journal entries
    events_observed: int = 0  # distinct event ids seen by any client
    events_provisional_only: int = 0  # (channel, event) no client ever got confirmed
    excused_by_gap: int = 0
    excused_buffer_loss: int = 0  # provisional-only events missing, inside a buffer loss window
    provisional_redelivered: int = 0
    republished_after_data_loss: int = 0  # a copy in a new epoch, after an epoch_changed gap
    upstream_excused: int = 0
    gaps_by_reason: dict[str, int] = field(default_factory=dict)
    gaps_by_client: dict[str, dict[str, int]] = field(default_factory=dict)  # only non-zero
    closes_by_code: dict[str, int] = field(default_factory=dict)  # "client": closed by itself


@dataclass
class Report:
    """The outcome of :func:`check`: ``ok`` when no invariant was broken."""

    violations: list[Violation]
    counts: dict[str, int]
    stats: Stats

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (only str keys, plain values)."""
        return {"ok": self.ok, "counts": dict(self.counts),
                "violations": [asdict(v) for v in self.violations], "stats": asdict(self.stats)}

    def summary(self) -> str:
        """A few lines for a human: verdict, volumes, and the first violations."""
        s = self.stats
        broken = ", ".join(f"{k}={n}" for k, n in self.counts.items() if n) or "none"
        volumes = (f"{s.clients} clients, {s.connections} connections, {s.frames_checked} event"
                   f" frames, {s.deliveries_expected} deliveries expected, {s.excused_by_gap}"
                   f" excused by a gap, {s.provisional_redelivered} provisional redelivered")
        upstream = (f"upstream: {s.events_emitted} signals sent, {s.events_observed} events"
                    f" observed, {s.upstream_excused} unseen inside loss windows")
        lines = [f"chaos check: {'OK' if self.ok else 'FAILED'} (violations: {broken})", volumes,
                 upstream, f"gaps: {_fmt(s.gaps_by_reason)}; closes: {_fmt(s.closes_by_code)}"]
        lines += [f"  {v.kind} {v.client} {v.channel} {v.event} at {v.t}: {v.detail}"
                  for v in self.violations[:5]]
        return "\n".join(lines)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={n}" for k, n in sorted(counts.items())) or "none"
