"""Resume one channel for one client: history first, then the live frames held meanwhile; or
start it with its live state (``"state": true``).

The caller has joined the channel with it *held*
(:meth:`bridge.downstream.hub.Hub.subscribe_many`), so every live frame since the join is kept.
:func:`resume` replays the broker's history after the client's ``(epoch, offset)`` page by page
through the client's link, paced by the client's reading, then
:meth:`bridge.downstream.hub.Hub.release` queues the held frames newer than the last replayed
offset. History and held frames overlap (the join precedes the first history read), so nothing
is missed, and the offset comparison drops what was doubled.

When the broker cannot cover the gap (``trimmed``, ``too_old``) or fails mid-way, the client
gets one ``gap`` message, then live frames only: never a silent partial replay. After
``epoch_changed`` the gap is followed by what the new epoch holds that is newer than the
client's offset, then live frames.

State (:func:`send_state`): the caller holds the channel *before* it reads the channel's
:class:`~bridge.brokers.base.Snapshot`, so every event after the snapshot's offset was published
after the join and reaches the hold; releasing the hold from that offset is then the whole
switch-over, with no history to read (a replay from the snapshot's offset would read only what
the hold has, and could turn a short history into a false gap). A resume with state requested
that history no longer covers (``trimmed``, ``too_old``, ``epoch_changed``) reads a snapshot at
that point, still holding the channel, and sends it instead of the ``gap``.

Every resume is counted by outcome in :attr:`bridge.downstream.hub.Hub.resumes` (plain
numbers, read by the metrics endpoint): :data:`OUTCOMES`.
"""

from __future__ import annotations

import asyncio
import logging

from bridge.brokers.base import BrokerError, ReplayStatus, Snapshot, offset_key
from bridge.common.redact import redact
from bridge.downstream import protocol as p
from bridge.downstream.hub import Hub
from bridge.downstream.link import ClientLink

log = logging.getLogger(__name__)

#: History entries read per broker call.
PAGE = 500

#: How a resume ends: ``ok`` (replayed, possibly nothing), history no longer covering it
#: (``trimmed``, ``epoch_changed``, ``too_old``: a gap, or the state when the client asked for
#: it), ``unavailable`` (the broker failed), or ``closed`` (the client went away mid-replay).
OUTCOMES = ("ok", "trimmed", "epoch_changed", "too_old", "unavailable", "closed")


def _count(hub: Hub, outcome: str) -> None:
    hub.resumes[outcome] = hub.resumes.get(outcome, 0) + 1


async def send_state(hub: Hub, link: ClientLink, cid: p.ClientId, channel: str,
                     snapshot: Snapshot, send_timeout: float) -> None:
    """Queue ``channel``'s ``state`` message from ``snapshot``, then release the channel from
    the snapshot's offset. The channel must have been held before the snapshot was read.

    Paced like a replay page: the message waits until it fits in the client's buffer. One
    larger than the whole buffer waits until the buffer is empty and is queued outside its
    count (:meth:`ClientLink.put_large`): it is sent as one frame, and the buffer limit bounds
    the frames queued behind it. A client that reads nothing for ``send_timeout`` meanwhile is
    closed with 4008.
    """
    text = p.encode_state(cid, channel, snapshot.epoch, snapshot.offset, snapshot.records)
    size = len(text) if text.isascii() else len(text.encode())
    if not await link.wait_room(min(size, link.max_bytes), send_timeout):
        return
    if size <= link.max_bytes:
        link.put(text, size)
    else:
        link.put_large(text)
    hub.release(link, channel, snapshot.offset, snapshot.epoch)


async def _state_instead(hub: Hub, link: ClientLink, cid: p.ClientId, channel: str,
                         broker_timeout: float, send_timeout: float) -> bool:
    """Send ``channel``'s state in place of a gap; False, with nothing sent, when the broker
    gives no snapshot (the caller sends the gap)."""
    try:
        async with asyncio.timeout(broker_timeout):
            snapshot = await hub.broker.snapshot(channel)
    except (BrokerError, TimeoutError) as exc:
        log.warning("state of %s unavailable: %s", channel,
                    redact(str(exc) or type(exc).__name__))
        return False
    await send_state(hub, link, cid, channel, snapshot, send_timeout)
    return True


async def resume(
    hub: Hub,
    link: ClientLink,
    channel: str,
    epoch: str,
    offset: str,
    *,
    max_age: float | None,
    broker_timeout: float,
    send_timeout: float,
    page: int = PAGE,
    state: bool = False,
    cid: p.ClientId = None,
) -> None:
    """Replay ``channel`` after ``(epoch, offset)`` into ``link``, then make it live.

    When the channel's epoch changed (its history was lost), the client gets a ``gap``, then
    the entries of the new epoch newer than its offset: offsets are times, and an epoch that
    began after a loss holds only events newer than those lost, so nothing it has comes again.

    With ``state``, history that does not cover the position (``trimmed``, ``too_old``,
    ``epoch_changed``) gives a ``state`` message (with ``cid``, the subscribe's id) and the
    events after it instead of the gap; when the broker gives no snapshot, the gap as without
    ``state``. A broker failure mid-replay is a gap (``unavailable``) either way.
    """
    want, after, current = epoch, offset, epoch
    floor: tuple[int, int] | None = None  # after a new epoch: entries at or below are skipped
    age: float | None = max_age
    try:
        while link.close_code is None:
            async with asyncio.timeout(broker_timeout):
                replay = await hub.broker.replay(
                    channel, epoch=want, after=after, limit=page, max_age=age)
            current = replay.epoch
            if replay.status is ReplayStatus.EPOCH_CHANGED and floor is None:
                _count(hub, replay.status.value)
                if state and await _state_instead(hub, link, cid, channel, broker_timeout,
                                                  send_timeout):
                    return
                link.put(p.encode_gap(channel, replay.status.value, replay.epoch))
                want, after, floor, age = replay.epoch, "0-0", offset_key(offset), None
                continue
            if replay.status is not ReplayStatus.OK:
                if floor is None:  # else the client has its gap already
                    _count(hub, replay.status.value)
                    if state and await _state_instead(hub, link, cid, channel, broker_timeout,
                                                      send_timeout):
                        return
                    link.put(p.encode_gap(channel, replay.status.value, replay.epoch))
                # Same epoch: frames up to the client's own offset are still ones it has.
                if replay.epoch == epoch:
                    hub.release(link, channel, offset, epoch)
                else:
                    hub.release(link, channel, None)
                return
            for item_offset, frame in replay.items:
                after = item_offset
                if floor is not None and offset_key(item_offset) <= floor:
                    continue
                if not await link.wait_room(len(frame), send_timeout):
                    _count(hub, "closed")
                    return
                link.put(frame.decode(), len(frame))
            if replay.complete or not replay.items:
                break
    except (BrokerError, TimeoutError) as exc:
        log.warning("resume of %s failed: %s", channel, redact(str(exc) or type(exc).__name__))
        _count(hub, "unavailable")
        link.put(p.encode_gap(channel, p.GAP_UNAVAILABLE, current))
        hub.release(link, channel, after, current)
        return
    if floor is None:
        _count(hub, "ok" if link.close_code is None else "closed")
    hub.release(link, channel, after, current)
