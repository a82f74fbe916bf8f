"""Reconnect and retry delays: pure functions, no sleeping here."""

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


def jittered(value: float, spread: float, rng: random.Random | None = None) -> float:
    """``value`` moved by a uniform amount in [-spread, +spread] (spread is a fraction)."""
    rand = rng or random.Random()
    return value * (1.0 + rand.uniform(-spread, spread))
