"""Connection counts for the log: a periodic INFO summary instead of lines per connection.

A reconnect storm opens thousands of connections a minute; a line for each would flood the log
(they are at DEBUG). :class:`Tally` counts connections accepted and closed, by close code, and
:meth:`Tally.summary` turns the counts since the previous summary into one line, or None when
nothing happened. No I/O: the route's owner logs the line (:func:`log_summaries`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Callable

log = logging.getLogger("bridge.downstream")

#: Seconds between summaries.
EVERY = 60.0


class Tally:
    __slots__ = ("accepted", "closed")

    def __init__(self) -> None:
        self.accepted = 0
        self.closed: Counter[int] = Counter()

    def summary(self, open_now: int, seconds: float) -> str | None:
        """One line about the connections since the last call (then forgotten); None if none."""
        if not self.accepted and not self.closed:
            return None
        codes = ", ".join(f"{code} x{n}" for code, n in sorted(self.closed.items()))
        line = (f"websocket clients: {open_now} open; in the last {seconds:g}s "
                f"{self.accepted} accepted, {sum(self.closed.values())} closed"
                + (f" ({codes})" if codes else ""))
        self.accepted = 0
        self.closed.clear()
        return line


async def log_summaries(tally: Tally, open_now: Callable[[], int], every: float = EVERY) -> None:
    """Log :meth:`Tally.summary` at INFO every ``every`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(every)
        line = tally.summary(open_now(), every)
        if line is not None:
            log.info("%s", line)
