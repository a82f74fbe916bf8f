"""The CDR poller's saved position: a UTC ``from`` and the CDR keys already emitted since it.

The provider filters by start time at minute resolution, and a CDR appears only once its call has
ended, so each poll re-reads a settling window behind ``now``; the keys remembered here are what
keeps a re-read (in this process or after a restart) from emitting a CDR twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from bridge.providers.epacific.protocol import iso_ms, parse_iso

#: Most keys kept; beyond it the oldest starts are forgotten (a bound on the cursor's size).
MAX_KEYS = 50_000


@dataclass
class CdrCursor:
    start: datetime
    #: CDR key -> its start, epoch seconds.
    seen: dict[str, float] = field(default_factory=dict)

    def encode(self) -> str:
        return orjson.dumps({"v": 1, "from": iso_ms(self.start),
                             "seen": sorted(self.seen.items())}).decode()

    @classmethod
    def decode(cls, text: str) -> "CdrCursor":
        """Raises ValueError on a cursor this version cannot read."""
        try:
            data = orjson.loads(text)
            return cls(parse_iso(data["from"]),
                       {str(k): float(v) for k, v in data.get("seen", [])})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable ePacific cursor: {type(exc).__name__}") from None

    def remember(self, key: str, start: datetime) -> None:
        self.seen[key] = start.timestamp()
        if len(self.seen) > MAX_KEYS:
            for old, _ in sorted(self.seen.items(), key=lambda kv: kv[1])[:len(self.seen)
                                                                          - MAX_KEYS]:
                del self.seen[old]

    def advance(self, new_start: datetime, keep_from: datetime) -> None:
        """Move ``from`` forward (never back); forget keys that start before ``keep_from``.

        ``keep_from`` is where the next request really begins (see ``request_start``): keys
        from there on may be read again and must be remembered.
        """
        if new_start <= self.start:
            return
        self.start = new_start
        floor = keep_from.timestamp()
        self.seen = {k: v for k, v in self.seen.items() if v >= floor}
