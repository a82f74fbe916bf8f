"""The broker contract: publish events to channels, keep their history, feed local subscribers.

A broker is chosen by URL scheme (:func:`bridge.brokers.from_url`). Every backend passes the same
contract suite (tests/brokers/test_contract.py).

Delivery to this process: the broker calls the one handler set with :meth:`Broker.set_handler`
for every message on a channel this process subscribed, as ``handler(channel, offset, frame)``
where ``frame`` is :func:`bridge.events.envelope` bytes, ready to send to clients. The handler
runs on the event loop and must not block or await: the hub copies the frame into bounded
per-client buffers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Sequence

MessageHandler = Callable[[str, str, bytes], None]


class BrokerError(Exception):
    """The broker could not do what was asked (unreachable, refused)."""


class Broker(ABC):
    #: Scheme and host, never credentials: safe to log and to show in /readyz.
    display_url: str = ""

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None

    def set_handler(self, handler: MessageHandler) -> None:
        self._handler = handler

    def _deliver(self, channel: str, offset: str, frame: bytes) -> None:
        if self._handler is not None:
            self._handler(channel, offset, frame)

    @abstractmethod
    async def start(self) -> None:
        """Connect. Raises :class:`BrokerError` when the backend cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering, release connections. Idempotent."""

    @abstractmethod
    async def publish(self, channels: Sequence[str], event_json: bytes) -> list[str]:
        """Append ``event_json`` to each channel's history and publish its envelope.

        Returns each channel's new offset, in the order of ``channels``. Offsets increase
        strictly within a channel and compare as ``(int, int)`` tuples of their two
        dash-separated parts (Redis stream ids: ``<ms>-<seq>``).
        """

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start delivering ``channel`` to the handler. Idempotent."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel``. Idempotent."""

    @abstractmethod
    async def history(
        self, channel: str, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        """Up to ``limit`` ``(offset, frame)`` pairs after ``after`` (oldest first).

        ``after=None`` reads from the oldest kept entry.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`BrokerError` unless the backend answers now."""


def offset_key(offset: str) -> tuple[int, int]:
    """Sort key of an offset ``"<a>-<b>"``."""
    a, _, b = offset.partition("-")
    return int(a), int(b or 0)
