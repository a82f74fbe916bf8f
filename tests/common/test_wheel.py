"""The timing wheel: every member once per period, in its own slot, one timer for all."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from bridge.common.wheel import Wheel


async def test_each_member_is_visited_once_per_period_and_may_leave_during_a_visit() -> None:
    seen: Counter[int] = Counter()
    wheel: Wheel[int]

    def visit(members: list[int]) -> None:
        for m in members:
            seen[m] += 1
            if m == 0:
                wheel.discard(m)  # leaving during its own visit

    wheel = Wheel(0.4, visit, tick=0.02, rng=random.Random(2))
    assert len(wheel._slots) == 20
    for m in range(50):
        wheel.add(m)
        wheel.add(m)  # idempotent
    assert len(wheel) == 50
    async with asyncio.timeout(10):
        while min(seen[m] for m in range(1, 50)) < 2:
            await asyncio.sleep(0.01)
    assert seen[0] == 1  # gone after its first visit
    counts = [seen[m] for m in range(1, 50)]
    assert max(counts) - min(counts) <= 1, seen  # once per period each, whatever the slot
    for m in range(50):
        wheel.discard(m)
    assert len(wheel) == 0 and wheel._timer is None


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period"):
        Wheel(0, lambda members: None)
