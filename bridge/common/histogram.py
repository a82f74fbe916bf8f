"""A histogram kept in plain numbers: cheap to observe on the event path, read when scraped.

The metrics endpoint (:mod:`bridge.http.metrics`) turns it into a Prometheus histogram at scrape
time, so the code that observes needs no metrics library, takes no lock and allocates nothing.
All observations happen on the event loop's thread, as do the scrapes that read them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: Seconds from an event's receipt to the broker's acknowledgement of its publish: about a
#: millisecond on a healthy Redis, seconds when a backlog builds up.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class Histogram:
    """Counts of observations per bucket (upper bounds ``buckets``, then +Inf) and their sum."""

    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError("buckets must be strictly increasing")
        self.buckets = tuple(float(b) for b in buckets)
        #: Observations per bucket, not cumulative; the last one is +Inf.
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket ("less or equal").
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(upper bound, observations <= it)`` for every bucket and ``+Inf``, as Prometheus
        exposes them."""
        out, running = [], 0
        for bound, n in zip((*map(repr, self.buckets), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out

