"""Bounded memories of recent ids, for dropping duplicates without growing forever."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Iterator


class RecentIds:
    """The newest ``size`` ids, oldest first; an id seen again becomes the newest."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already there (a duplicate)."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class RecentWindow:
    """Ids seen in the last ``window`` seconds (at most ``size`` of them)."""

    def __init__(self, window: float, *, size: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._size = size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already seen within the window (a repeat)."""
        now = self._clock()
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if now - at < self._window and len(seen) < self._size:
                break
            del seen[oldest]
        if key in seen:
            return False
        seen[key] = now
        return True
