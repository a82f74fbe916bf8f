"""Which clients already have an event a broker delivered provisionally (no I/O).

During a broker outage the hub sends events to its clients before the broker has them
(provisional frames); once published, the broker's copy comes back like any other. The clients
that had the provisional frame must not get it again, the ones that joined the channel since
must. :class:`Echoes` remembers, per (channel, event id) sent provisionally, the hub's join
counter at that moment: the published copy then goes only to clients that joined later.
"""

from __future__ import annotations

from collections import OrderedDict

from bridge.events.event import frame_event_id

#: Provisional deliveries remembered until their published copy comes back (oldest forgotten).
LIMIT = 100_000


class Echoes:
    __slots__ = ("_sent", "_channels", "_limit")

    def __init__(self, limit: int = LIMIT) -> None:
        #: (channel, event id) -> the join counter when it was sent provisionally
        self._sent: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._channels: dict[str, int] = {}  # how many remembered, per channel
        self._limit = limit

    def sent(self, channel: str, event_id: str, joins: int) -> None:
        key = (channel, event_id)
        if key not in self._sent:
            self._channels[channel] = self._channels.get(channel, 0) + 1
        self._sent[key] = joins
        if len(self._sent) > self._limit:
            self._forget(self._sent.popitem(last=False)[0][0])

    def since(self, channel: str, frame: bytes) -> int | None:
        """For a published frame: the join counter when its event went out provisionally on
        ``channel`` (then forgotten), or None. Costs nothing on a channel with none pending."""
        if channel not in self._channels:
            return None
        event_id = frame_event_id(frame)
        joins = self._sent.pop((channel, event_id), None) if event_id is not None else None
        if joins is not None:
            self._forget(channel)
        return joins

    def __len__(self) -> int:
        return len(self._sent)

    def _forget(self, channel: str) -> None:
        left = self._channels.get(channel, 0) - 1
        if left > 0:
            self._channels[channel] = left
        else:
            self._channels.pop(channel, None)
