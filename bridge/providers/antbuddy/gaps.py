"""Gap filling, pure: when the signal stream was down, and which history records it missed.

:class:`OutageTracker` turns periodic looks at a stream's state into outage windows.
:class:`LiveLedger` remembers the calls whose end was seen live, so a history record of such a
call is not emitted again. History records carry no Kazoo call id, so a record matches a live
call by parties and time (rule and limits in docs/providers/antbuddy-rest.md).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from bridge.providers.antbuddy.rest import HistoryRecord
from bridge.upstream import kazoo

_DIGITS = re.compile(r"\D")


@dataclass(frozen=True)
class Window:
    start: int  # Unix seconds, inclusive
    end: int


class OutageTracker:
    """Feed :meth:`observe` the stream's state every few seconds; it returns the window to fill.

    An outage is noticed either as a look that finds the stream not subscribed, or as a
    reconnect counter that moved between two looks (a drop shorter than the polling interval).
    The window runs from the last look that found the stream healthy, minus ``margin``, to the
    look that finds it healthy again, plus ``margin`` (from the first look when a drop came
    before any healthy look). The first subscription itself is no gap: calls before callbridge
    started are not filled.
    """

    def __init__(self, margin: float = 60.0) -> None:
        self.margin = margin
        self._first: float | None = None
        self._last_ok: float | None = None
        self._reconnects: int | None = None
        self._down = False

    def observe(self, now: float, subscribed: bool, reconnects: int) -> Window | None:
        if self._first is None:
            self._first = now
        moved = self._reconnects is not None and reconnects != self._reconnects
        self._reconnects = reconnects
        if not subscribed:
            self._down = self._down or self._last_ok is not None
            return None
        window = None
        if self._down or moved:
            # Never seen healthy before this drop: the outage counts from the first look.
            since = self._last_ok if self._last_ok is not None else self._first
            window = Window(int(since - self.margin), int(now + self.margin) + 1)
        self._down = False
        self._last_ok = now
        return window


def _key(name: str) -> str:
    """A party name compared loosely: phone numbers by their last nine digits."""
    digits = _DIGITS.sub("", name)
    if len(digits) >= 9 and len(digits) >= len(name.lstrip("+")) - 1:
        return digits[-9:]
    return name.strip().lower()


@dataclass(frozen=True)
class LiveCall:
    start: float
    end: float
    parties: frozenset[str]


class LiveLedger:
    """The ends of calls seen live (``CHANNEL_DESTROY`` of either leg), newest ``size`` kept."""

    def __init__(self, size: int = 20_000, tolerance: float = 5.0) -> None:
        self.tolerance = tolerance
        self._calls: deque[LiveCall] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._calls)

    def note(self, name: str, payload: object) -> None:
        """Record one live Kazoo event (only call ends are kept; a payload that is not a JSON
        object is ignored)."""
        if not isinstance(name, str) or name.upper() != "CHANNEL_DESTROY":
            return
        if not isinstance(payload, dict):
            return
        p = kazoo.canonical(payload)
        end = kazoo.micros_from_msg_id(p.get("msg_id"))
        if end is None:
            end = kazoo.micros_from_gregorian(p.get("timestamp"))
        if end is None:
            return
        duration = kazoo.as_seconds(p.get("duration_seconds")) or 0
        parties = set()
        for key, uri in (("caller_id_number", "from"), ("callee_id_number", "to")):
            value = kazoo.as_str(p.get(key)) or kazoo.user_part(p.get(uri))
            if value:
                parties.add(_key(value))
        if len(parties) < 2:
            return
        self._calls.append(LiveCall(end / 1e6 - duration, end / 1e6, frozenset(parties)))

    def seen(self, record: HistoryRecord) -> bool:
        """True when a live call end matches ``record``: both parties, and its start or its end
        within ``tolerance`` seconds (live times are exact; history's are whole seconds)."""
        if not record.caller or not record.callee:
            return False
        callers = {_key(n) for n in record.caller}
        callees = {_key(n) for n in record.callee}
        slack = self.tolerance + 1
        for call in self._calls:
            if not (callers & call.parties and callees & call.parties):
                continue
            if abs(call.start - record.start) <= slack or abs(call.end - record.end) <= slack:
                return True
        return False
