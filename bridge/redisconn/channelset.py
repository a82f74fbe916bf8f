"""The channels a pub/sub connection keeps, and the replies Redis still owes for them. No I/O.

Redis answers every SUBSCRIBE and UNSUBSCRIBE with one reply per channel, in order, on the
connection that also carries the messages. A channel unsubscribed and subscribed again gets
three replies; only the last one means "subscribed now". A node of a cluster that gives a
sharded channel's slot away sends an UNSUBSCRIBE reply nobody asked for: the subscription
ended. :class:`ChannelSet` tells these apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: ``(kind, name, data)``: "message" (any channel's, data is its payload), "subscribed" (a
#: kept channel is subscribed now) or "ended" (Redis ended a kept channel's subscription).
Reply = tuple[str, bytes, bytes]


class ChannelSet:
    """The kept channel names, and the SUBSCRIBE/UNSUBSCRIBE replies still owed on the
    current connection.

    Call :meth:`sending` before each command is sent, :meth:`new_connection` when a connection
    opens, and :meth:`reply` with every pub/sub reply read from it.
    """

    def __init__(self, names: Iterable[bytes] = ()) -> None:
        self.names: set[bytes] = set(names)
        self._acks: dict[bytes, int] = {}  # SUBSCRIBE replies owed, per name
        self._unacks: dict[bytes, int] = {}  # UNSUBSCRIBE replies owed, per name

    def add(self, names: Iterable[bytes]) -> list[bytes]:
        """Keep ``names``; the ones that were not kept yet."""
        fresh = [n for n in dict.fromkeys(names) if n not in self.names]
        self.names.update(fresh)
        return fresh

    def remove(self, names: Iterable[bytes]) -> list[bytes]:
        """Keep ``names`` no more; the ones that were kept."""
        gone = [n for n in dict.fromkeys(names) if n in self.names]
        self.names.difference_update(gone)
        return gone

    def new_connection(self) -> None:
        """Nothing is owed on a fresh connection."""
        self._acks.clear()
        self._unacks.clear()

    def sending(self, verb: str, names: Iterable[bytes]) -> None:
        """``verb`` ("SUBSCRIBE" or "UNSUBSCRIBE") is about to be sent for ``names``."""
        owed = self._acks if verb == "SUBSCRIBE" else self._unacks
        for name in names:
            owed[name] = owed.get(name, 0) + 1

    def awaiting(self, names: Iterable[bytes]) -> bool:
        """Whether a SUBSCRIBE reply for one of ``names`` is still owed."""
        return any(self._acks.get(name) for name in names)

    def reply(self, response: Any) -> Reply | None:
        """What a pub/sub reply (as the client library parses it) means; None: nothing."""
        if not response:
            return None
        kind, name = response[0], response[1]
        if kind in (b"message", b"smessage"):
            data = response[2]
            return "message", name, data if isinstance(data, bytes) else str(data).encode()
        if kind in (b"subscribe", b"ssubscribe"):
            left = self._acks.get(name, 0) - 1
            if left > 0:
                self._acks[name] = left  # a reply to an earlier SUBSCRIBE proves nothing
                return None
            self._acks.pop(name, None)
            return ("subscribed", name, b"") if name in self.names else None
        if kind in (b"unsubscribe", b"sunsubscribe"):
            ours = self._unacks.get(name, 0)
            if ours > 1:
                self._unacks[name] = ours - 1
            elif ours:
                del self._unacks[name]
            elif name in self.names:
                return "ended", name, b""
        return None
