"""Local fan-out: broker messages to the websocket clients of this process.

The hub is the broker's message handler. For each message it looks up the channel's clients and
appends the frame to each client's :class:`~bridge.downstream.link.ClientLink`, a buffer
bounded in bytes. The frame is decoded to text once per message and that one ``str`` is shared
by every client: nothing is re-encoded per client. Each link is drained by exactly one writer task
(:meth:`ClientLink.run`), owned by the connection that owns the link; there is no task per
message.

Backpressure cannot work for fan-out, so a client whose buffer would overflow is closed with
:data:`~bridge.downstream.protocol.SLOW_CONSUMER` and the others are unaffected.

Resume: :meth:`Hub.subscribe_many` can *hold* channels for a client. A held channel's live
frames go to a per-(client, channel) buffer, bounded by the client's byte limit (overflow closes
the client with 4008), while the connection replays history (or reads the channel's state:
:func:`bridge.downstream.resume.send_state`); :meth:`Hub.release` then queues the held frames
newer than the last replayed offset (or the state's) and makes the channel live, in one step
without yielding, so no frame is lost or doubled at the switch-over. The replay reads history on
another connection than the live feed, so under load it can overtake frames still on their way
here: after the release, the client's **floor** (the last replayed position) drops every live
frame at or below it, until the first newer one passes.

Gaps: when the broker lost frames of a channel it cannot give back (:meth:`Hub.on_gap`), every
client of the channel gets a ``gap`` message in their place (after its replay, for a client
still replaying).

Provisional frames (:meth:`Hub.on_provisional`, during a broker outage) go to the channel's
clients at once. The hub remembers when (a join counter); when the published copy of the same
event comes back, it goes only to the clients that joined the channel since, who never had it.

Broker subscriptions are reference-counted per channel: the first client of a channel subscribes
the broker, the last one to leave unsubscribes it. Broker calls are serialized by one lock and
recompute the wanted state under it, so interleaved subscribes and unsubscribes cannot leave the
broker out of step with the clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from bridge.brokers.base import Broker, BrokerError, offset_key
from bridge.common.redact import redact
from bridge.downstream.echoes import Echoes
from bridge.downstream.link import PEER_GONE, SLOW_CONSUMER, ClientLink, text_frame
from bridge.downstream.protocol import encode_gap
from bridge.events.event import frame_epoch

log = logging.getLogger(__name__)

__all__ = ["PEER_GONE", "SLOW_CONSUMER", "ClientLink", "Hub"]


class _Held:
    """Live frames of one channel held for one client while it replays history."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        #: (epoch, offset, frame, size); epoch and offset are None for frames that are always
        #: released (gap notices, provisional frames, whose offset is not their own).
        self.frames: list[tuple[str | None, str | None, str, int]] = []
        self.size = 0


def _at_or_below(floor: tuple[str, tuple[int, int]], offset: str, frame: bytes) -> bool:
    """True for a frame the client already has: same epoch as ``floor``, offset not above it.
    (Only published frames come here: provisional ones go through :meth:`Hub.on_provisional`
    and are never held back by a floor, their offset not being their own.)"""
    epoch, key = floor
    return offset_key(offset) <= key and frame_epoch(frame) == epoch


class Hub:
    """Fan-out of broker messages to :class:`ClientLink` buffers. See the module docstring."""

    def __init__(
        self, broker: Broker, *, client_queue_bytes: int = 1 << 20, broker_timeout: float = 10.0
    ) -> None:
        self.broker = broker
        self.client_queue_bytes = client_queue_bytes
        self._broker_timeout = broker_timeout
        self._links: set[ClientLink] = set()
        self._channels: dict[str, set[ClientLink]] = {}
        #: Each client's channels, with the join counter's value when it joined each.
        self._by_link: dict[ClientLink, dict[str, int]] = {}
        self._joins = 0
        self._echoes = Echoes()
        self._broker_channels: set[str] = set()
        self._held: dict[tuple[ClientLink, str], _Held] = {}
        #: (client, channel) -> (epoch, offset key) replayed last: live frames at or below it
        #: are dropped until a newer one passes.
        self._floors: dict[tuple[ClientLink, str], tuple[str, tuple[int, int]]] = {}
        self._lock = asyncio.Lock()
        self._frames_out = 0
        self._slow_consumers = 0
        #: Resumes by outcome, counted by :func:`bridge.downstream.resume.resume`.
        self.resumes: dict[str, int] = {}
        broker.set_handler(self.on_message)
        broker.set_gap_handler(self.on_gap)
        broker.set_provisional_handler(self.on_provisional)

    def _count_slow(self) -> None:
        self._slow_consumers += 1

    def attach(self) -> ClientLink:
        """A new link, known to :meth:`close_all` until :meth:`remove`."""
        link = ClientLink(self.client_queue_bytes, self._count_slow)
        self._links.add(link)
        self._by_link[link] = {}
        return link

    def on_message(self, channel: str, offset: str, frame: bytes) -> None:
        """Broker handler: queue ``frame`` for every client of ``channel``. Never blocks."""
        links = self._channels.get(channel)
        if not links:
            return
        if self._echoes:
            since = self._echoes.since(channel, frame)
            if since is not None:  # sent provisionally: only to the clients that joined since
                links = {link for link in links if self._by_link[link].get(channel, 0) > since}
        text = frame.decode()
        size = len(frame)
        wire = text_frame(frame)  # framed once for every client that can take it directly
        held, floors = self._held, self._floors
        if not held and not floors:  # nobody is replaying: every link takes it as it is
            taken = 0
            for link in links:
                if link.close_code is not None:
                    continue
                if link.put(text, size, wire):
                    taken += 1
                else:
                    log.info("client closed as slow consumer on %s", channel)
            self._frames_out += taken
            return
        for link in links:
            if link.close_code is not None:
                continue
            if held and (hold := held.get((link, channel))) is not None:
                self._hold(link, hold, frame_epoch(frame), offset, text, size)
                continue
            if floors and (floor := floors.get((link, channel))) is not None:
                if _at_or_below(floor, offset, frame):
                    continue  # replayed to this client already
                del floors[(link, channel)]
            if link.put(text, size, wire):
                self._frames_out += 1
            else:
                log.info("client closed as slow consumer on %s", channel)

    def on_provisional(self, channel: str, offset: str, frame: bytes,
                       event_id: str | None) -> None:
        """Broker handler for a provisional frame: queued for every client of ``channel`` (for
        a client replaying, after its replay: its offset is not the event's own)."""
        links = self._channels.get(channel)
        if not links:
            return
        if event_id is not None:
            self._echoes.sent(channel, event_id, self._joins)
        self._frames_out += self._to_all(links, channel, frame.decode(), len(frame))

    def on_gap(self, channel: str, reason: str, epoch: str) -> None:
        """Broker gap handler: tell every client of ``channel`` that frames were lost."""
        links = self._channels.get(channel)
        if links:
            text = encode_gap(channel, reason, epoch)
            self._to_all(links, channel, text, len(text))

    def _to_all(self, links: set[ClientLink], channel: str, text: str, size: int) -> int:
        """Queue a frame without an offset of its own for every open link of ``channel``; a
        link still replaying gets it after its replay. How many links took it now."""
        queued = 0
        for link in links:
            if link.close_code is not None:
                continue
            if (hold := self._held.get((link, channel))) is not None:
                self._hold(link, hold, None, None, text, size)
            elif link.put(text, size):
                queued += 1
        return queued

    def _hold(self, link: ClientLink, hold: _Held, epoch: str | None, offset: str | None,
              text: str, size: int) -> None:
        if hold.size + size > link.max_bytes:
            link.close(SLOW_CONSUMER)
            log.info("client closed as slow consumer: live backlog outgrew a resume")
            return
        hold.frames.append((epoch, offset, text, size))
        hold.size += size

    def release(self, client: ClientLink, channel: str, after: str | None,
                epoch: str | None = None) -> None:
        """Make a held ``channel`` live for ``client``, the client having every frame up to
        ``(epoch, after)`` (nothing when ``after`` is None).

        Held frames above that (all of them when None; those of another epoch too) are
        queued first, in order; later frames go straight to the link, except those at or
        below ``(epoch, after)`` that were still on their way (the floor). No-op if not held.
        """
        hold = self._held.pop((client, channel), None)
        if hold is None:
            return
        floor = (epoch, offset_key(after)) if after is not None and epoch is not None else None
        if floor is not None:
            self._floors[(client, channel)] = floor
        for frame_ep, offset, text, size in hold.frames:
            if floor is not None and offset is not None and frame_ep == floor[0] \
                    and offset_key(offset) <= floor[1]:
                continue
            if client.put(text, size):
                self._frames_out += 1
            else:
                return

    async def subscribe(self, client: ClientLink, channel: str) -> None:
        """Deliver ``channel`` to ``client``. Raises :class:`BrokerError` (nothing changed)."""
        await self.subscribe_many(client, (channel,))

    async def subscribe_many(
        self, client: ClientLink, channels: Iterable[str], hold: Iterable[str] = ()
    ) -> list[str]:
        """Deliver all ``channels`` to ``client``, all or none; return the newly joined ones.

        The broker is subscribed first; the client joins every channel at once, without
        yielding, after that. So nothing of these channels reaches the client before this
        returns, and a reply queued right after the call precedes their first event.
        Newly joined channels listed in ``hold`` are held until :meth:`release`.
        """
        wanted = [c for c in channels if c not in self._by_link.get(client, ())]
        try:
            async with asyncio.timeout(self._broker_timeout), self._lock:
                for channel in wanted:
                    if channel not in self._broker_channels:
                        await self.broker.subscribe(channel)
                        self._broker_channels.add(channel)
        except (BrokerError, TimeoutError) as exc:
            await self._release(wanted)  # those subscribed before the failure, if nobody reads
            if isinstance(exc, TimeoutError):
                raise BrokerError("broker did not answer the subscribe in time") from None
            raise
        if client not in self._by_link:
            return []  # removed while waiting for the broker
        held = set(hold)
        mine = self._by_link[client]
        for channel in wanted:
            if channel in held:
                self._held[(client, channel)] = _Held()
            self._channels.setdefault(channel, set()).add(client)
            self._joins += 1
            mine[channel] = self._joins
        return wanted

    async def unsubscribe(self, client: ClientLink, channel: str) -> None:
        """Stop delivering ``channel`` to ``client`` (at once; the broker follows). Idempotent."""
        await self.unsubscribe_many(client, (channel,))

    async def unsubscribe_many(self, client: ClientLink, channels: Iterable[str]) -> None:
        mine = self._by_link.get(client, {})
        dropped = [c for c in channels if c in mine]
        for channel in dropped:
            del mine[channel]
            self._leave(client, channel)
        await self._release(dropped)

    async def remove(self, client: ClientLink) -> None:
        """Forget ``client`` and all its channels (at once; the broker follows)."""
        self._links.discard(client)
        channels = list(self._by_link.pop(client, {}))
        for channel in channels:
            self._leave(client, channel)
        await self._release(channels)

    def _leave(self, client: ClientLink, channel: str) -> None:
        self._held.pop((client, channel), None)
        self._floors.pop((client, channel), None)
        links = self._channels.get(channel)
        if links is not None:
            links.discard(client)
            if not links:
                del self._channels[channel]

    async def _release(self, channels: Iterable[str]) -> None:
        candidates = [c for c in channels if c not in self._channels]
        if not candidates:
            return
        try:
            async with asyncio.timeout(self._broker_timeout), self._lock:
                for channel in candidates:
                    # Re-checked under the lock: a client may have joined meanwhile.
                    if channel in self._broker_channels and channel not in self._channels:
                        self._broker_channels.discard(channel)
                        await self.broker.unsubscribe(channel)
        except (BrokerError, TimeoutError) as exc:
            # A stale broker subscription is harmless: on_message drops channels nobody reads.
            log.warning("broker unsubscribe failed: %s", redact(str(exc) or type(exc).__name__))

    async def close_all(self, code: int = 1012, timeout: float = 5.0) -> None:
        """Close every client with ``code`` and wait (up to ``timeout``) until they are gone."""
        links = list(self._links)
        for link in links:
            link.close(code)
        try:
            async with asyncio.timeout(timeout):
                for link in links:
                    await link.wait_finished()
        except TimeoutError:
            log.warning("%d client(s) still closing after %.1fs", len(self._links), timeout)

    def stats(self) -> dict[str, int]:
        """``clients`` attached, ``channels`` with clients, ``subscriptions`` (client, channel)
        pairs, ``frames_out`` frames queued to clients, ``slow_consumers`` clients closed with
        4008 (buffer overflow, a send blocked past its timeout, a stalled replay)."""
        return {
            "clients": len(self._links),
            "channels": len(self._channels),
            "subscriptions": sum(map(len, self._channels.values())),
            "frames_out": self._frames_out,
            "slow_consumers": self._slow_consumers,
        }
