"""The broker contract: publish events to channels, keep their history, feed local subscribers.

A broker is chosen by URL scheme (:func:`bridge.core.backends.from_url`). Every backend passes
the same contract suite (tests/brokers/test_contract.py).

Delivery to this process: the broker calls the one handler set with :meth:`Broker.set_handler`
for every message on a channel this process subscribed, as ``handler(channel, offset, frame)``
where ``frame`` is :func:`bridge.events.event.envelope` bytes, ready to send to clients. The handler
runs on the event loop and must not block or await: the hub copies the frame into bounded
per-client buffers.

History and resume: every channel has an **epoch**, a short random name created with the
channel's history. Offsets increase within an epoch. When the history is lost (Redis flushed or
restarted empty, a ``memory://`` process restarted) the channel gets a new epoch, so a client
holding an offset of the old epoch is told its gap cannot be filled, rather than being handed a
silent partial replay (:meth:`Broker.replay`).

Live state: a publish may carry a :class:`~bridge.calls.change.Change`, applied to the state of
every channel of the event in the same atomic step as the append to its history; a
:meth:`Broker.snapshot` reads a channel's state together with its position, so the state is
exactly that of the events up to that offset. The state lives and is lost with the history
(a new epoch starts with an empty state).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Sequence

from bridge.calls.change import Change, Record

MessageHandler = Callable[[str, str, bytes], None]
#: ``gap(channel, reason, epoch)``: see :meth:`Broker.set_gap_handler`.
GapHandler = Callable[[str, str, str], None]
#: ``provisional(channel, offset, frame, event_id)``: see :meth:`Broker.set_provisional_handler`.
ProvisionalHandler = Callable[[str, str, bytes, str | None], None]

#: Epoch names: short, JSON-safe.
EPOCH_RE = re.compile(r"[A-Za-z0-9]{1,32}")
#: Offsets: ``<a>-<b>`` (Redis stream ids).
OFFSET_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


class BrokerError(Exception):
    """The broker could not do what was asked (unreachable, refused)."""


class ReplayStatus(StrEnum):
    #: History covers the gap: ``items`` are what the client missed (possibly nothing).
    OK = "ok"
    #: The channel's history was lost since the client's offset (new epoch).
    EPOCH_CHANGED = "epoch_changed"
    #: Entries after the client's offset were trimmed (history length exceeded).
    TRIMMED = "trimmed"
    #: The client's offset is older than the configured maximum history age.
    TOO_OLD = "too_old"


@dataclass(frozen=True)
class Snapshot:
    """A channel's live state at a known position: ``records`` reflect exactly the events up
    to ``offset`` of ``epoch`` (``"0-0"``: none yet)."""

    epoch: str
    offset: str
    #: Record key (``leg:<call id>``, ``ext:<extension>``) -> record.
    records: dict[str, Record] = field(default_factory=dict)


@dataclass(frozen=True)
class Replay:
    status: ReplayStatus
    #: The channel's current epoch.
    epoch: str
    #: ``(offset, frame)`` pairs after the requested offset, oldest first (status OK only).
    items: list[tuple[str, bytes]] = field(default_factory=list)
    #: False when more entries follow ``items`` (ask again after the last offset).
    complete: bool = True


class Broker(ABC):
    #: Scheme and host, never credentials: safe to log and to show in /readyz.
    display_url: str = ""

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None
        self._gap_handler: GapHandler | None = None
        self._provisional_handler: ProvisionalHandler | None = None

    def set_handler(self, handler: MessageHandler) -> None:
        self._handler = handler

    def set_gap_handler(self, handler: GapHandler) -> None:
        """``handler(channel, reason, epoch)`` is called when messages of a subscribed channel
        were lost on their way here and cannot be delivered from history (reasons as for
        :class:`ReplayStatus`, plus ``unavailable``). Every message the handler of
        :meth:`set_handler` gets is otherwise delivered once, in offset order, across lost
        subscriptions (a backend that can lose one catches up from history)."""
        self._gap_handler = handler

    def set_provisional_handler(self, handler: ProvisionalHandler) -> None:
        """``handler(channel, offset, frame, event_id)`` gets the frames a broker delivers to
        this process before the broker has them (:mod:`bridge.brokers.resilient`, during an
        outage). The same event comes later through the message handler, once published: the
        receiver decides who still needs that copy. Without this handler they go to the
        message handler."""
        self._provisional_handler = handler

    def _deliver_provisional(self, channel: str, offset: str, frame: bytes,
                             event_id: str | None) -> None:
        if self._provisional_handler is not None:
            self._provisional_handler(channel, offset, frame, event_id)
        else:
            self._deliver(channel, offset, frame)

    def _deliver(self, channel: str, offset: str, frame: bytes) -> None:
        if self._handler is not None:
            self._handler(channel, offset, frame)

    def _deliver_gap(self, channel: str, reason: str, epoch: str) -> None:
        if self._gap_handler is not None:
            self._gap_handler(channel, reason, epoch)

    @abstractmethod
    async def start(self) -> None:
        """Connect. Raises :class:`BrokerError` when the backend cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering, release connections. Idempotent."""

    @abstractmethod
    async def publish(
        self, channels: Sequence[str], event_json: bytes, *, event_id: str | None = None,
        change: Change | None = None,
    ) -> list[str] | None:
        """Append ``event_json`` to each channel's history and publish its envelope.

        Returns each channel's new offset, in the order of ``channels``. Offsets increase
        strictly within a channel's epoch and compare as ``(int, int)`` tuples of their two
        dash-separated parts (Redis stream ids: ``<ms>-<seq>``).

        With ``event_id``: when the same id was published within the broker's de-duplication
        window, by this process or any other sharing the broker, nothing is published and None
        is returned. Marking the id and publishing are atomic.

        With ``change``: it is applied (:func:`bridge.calls.change.apply`) to the state of each
        channel in the same atomic step as that channel's append, and not at all when the event
        is a repeat.
        """

    @abstractmethod
    async def snapshot(self, channel: str) -> Snapshot:
        """The channel's state and position, read in one atomic step (the epoch is created if
        the channel has none, as :meth:`position` does). Raises :class:`BrokerError` when the
        broker cannot answer."""

    async def state_parts(self, channel: str, size: int, prefix: str = ""
                          ) -> AsyncIterator[dict[str, Record]]:
        """The channel's state records whose key starts with ``prefix`` (``leg:``: the legs),
        ``size`` at a time, for a reader that looks at every record and keeps few (the
        closer's sweep): a part is decoded only when the one before it has been taken, so
        thousands of records are never all alive at once. Raises :class:`BrokerError` as
        :meth:`snapshot` does. Default: parts of a :meth:`snapshot`."""
        items = [(key, record) for key, record in (await self.snapshot(channel)).records.items()
                 if key.startswith(prefix)]
        for start in range(0, len(items), size):
            yield dict(items[start:start + size])

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start delivering ``channel`` to the handler. Idempotent."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel``. Idempotent."""

    @abstractmethod
    async def epoch(self, channel: str) -> str:
        """The channel's current epoch, created if the channel has none yet."""

    @abstractmethod
    async def position(self, channel: str) -> tuple[str, str]:
        """``(epoch, offset)``: the channel's current epoch (created if it has none yet) and
        the offset of its newest event (``"0-0"`` when it has none). A subscriber that joins
        after reading it gets every event after it, live or by resuming from it."""

    @abstractmethod
    async def history(
        self, channel: str, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        """Up to ``limit`` ``(offset, frame)`` pairs after ``after`` (oldest first).

        ``after=None`` reads from the oldest kept entry.
        """

    @abstractmethod
    async def replay(
        self, channel: str, *, epoch: str, after: str, limit: int, max_age: float | None = None
    ) -> Replay:
        """What a client that last saw ``(epoch, after)`` on ``channel`` missed.

        Status, checked in this order: ``epoch_changed`` when ``epoch`` is not the current
        epoch; ``too_old`` when ``max_age`` is set and ``after`` is older than that many seconds
        (the first part of an offset is a Unix time in milliseconds; ``"0-0"``, the position of
        a channel that had no event yet, is never too old); ``trimmed`` when entries
        after ``after`` may have been dropped (``after`` is older than the oldest kept entry,
        and no longer kept itself); else ``ok`` with up to ``limit`` entries after ``after``.
        Never a partial replay: either the gap is fully covered (page by page) or it is refused.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`BrokerError` unless the backend answers now."""

    def health(self) -> dict[str, Any]:
        """State for /readyz and metrics: at least ``{"state": ...}``."""
        return {"state": "ok"}


def offset_key(offset: str) -> tuple[int, int]:
    """Sort key of an offset ``"<a>-<b>"``."""
    a, _, b = offset.partition("-")
    return int(a), int(b or 0)
