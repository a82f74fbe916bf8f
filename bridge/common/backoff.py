"""Reconnect and retry delays, and the jitter that spreads timers apart: pure functions, no
sleeping here. Every random delay in callbridge is drawn here."""

from __future__ import annotations

import random
from typing import Iterator

#: The longest wait between two attempts to subscribe to Redis again (the broker's pub/sub
#: connection, the revocation and lease listeners): a Redis that is back is found within it,
#: and the attempts of a few connections per instance cost Redis nothing.
RESUBSCRIBE_MAX = 2.0


def backoff(
    initial: float = 0.5,
    factor: float = 2.0,
    maximum: float = 30.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Full-jitter exponential delays: uniform in [0, min(maximum, initial * factor**n)].

    The first delay is small but never zero-centred on a herd: hundreds of streams dropped by
    one upstream restart spread their reconnects over the whole window.
    """
    rand = rng or random.Random()
    ceiling = initial
    while True:
        yield rand.uniform(initial / 2, ceiling)
        ceiling = min(maximum, ceiling * factor)


def jittered(value: float, fraction: float, rng: random.Random | None = None) -> float:
    """``value`` moved by a uniform amount in [-fraction, +fraction] of itself."""
    rand = rng or random.Random()
    return value * (1.0 + rand.uniform(-fraction, fraction))


def spread(low: float, high: float, rng: random.Random | None = None) -> float:
    """A uniform point in [``low``, ``high``]: for timers that many streams or instances would
    otherwise fire in the same instant (token refreshes, rotations)."""
    rand = rng or random.Random()
    return rand.uniform(low, high)
