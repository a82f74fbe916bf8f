"""Every: a log line at most once per interval, however often the event repeats."""

from __future__ import annotations

import time

from bridge.common.logs import Every


def test_due_the_first_time_then_once_per_interval() -> None:
    every = Every(0.2)
    assert every.due()
    assert [every.due() for _ in range(1000)] == [False] * 1000
    time.sleep(0.25)
    assert every.due() and not every.due()
