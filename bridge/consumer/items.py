"""What a consumer yields, and where it stands (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.brokers.base import OFFSET_RE, offset_key


@dataclass(frozen=True, slots=True)
class Position:
    """Where a consumer stands on one channel: the epoch and offset of the last event it
    handled (``"0-0"``: none yet). Comparable only within one epoch."""

    epoch: str
    offset: str

    def __post_init__(self) -> None:
        if not OFFSET_RE.fullmatch(self.offset):
            raise ValueError(f"invalid offset {self.offset!r}")

    def key(self) -> tuple[int, int]:
        return offset_key(self.offset)

    def to_dict(self) -> dict[str, str]:
        return {"epoch": self.epoch, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event on one channel, as ``/ws`` and Redis pub/sub carry it: ``frame`` is the
    envelope's JSON bytes (the same bytes), ``event`` the event object inside it."""

    channel: str
    epoch: str
    offset: str
    frame: bytes

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.frame)["event"]
        return event


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of ``channel`` were lost and cannot be given back: ``reason`` is
    ``epoch_changed`` (the channel's history was lost; its new epoch's events follow from the
    first), or ``trimmed`` (older than the history kept). The same reasons as ``/ws``'s
    ``gap`` message (docs/protocol.md)."""

    channel: str
    reason: str
    epoch: str
