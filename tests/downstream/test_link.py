"""A client link's slow-consumer closes are counted once, whichever path found the client slow."""

from __future__ import annotations

import asyncio

from bridge.brokers.memory import MemoryBroker
from bridge.downstream import protocol as p
from bridge.downstream.hub import Hub
from bridge.downstream.link import ClientLink, text_frame


async def test_a_send_blocked_past_its_timeout_counts_as_a_slow_consumer() -> None:
    hub = Hub(MemoryBroker(), client_queue_bytes=4096)
    link = hub.attach()
    assert link.put('{"type":"heartbeat"}')

    async def stuck(frame: str) -> None:
        await asyncio.sleep(3600)  # the peer stopped reading: the socket never drains

    assert await link.run(stuck, send_timeout=0.05) == p.SLOW_CONSUMER
    assert hub.stats()["slow_consumers"] == 1
    link.close(p.SLOW_CONSUMER)  # the first close decides; nothing is counted twice
    assert hub.stats()["slow_consumers"] == 1


async def test_an_overflow_counts_once_and_other_closes_not_at_all() -> None:
    hub = Hub(MemoryBroker(), client_queue_bytes=1024)
    slow, gone = hub.attach(), hub.attach()
    assert slow.put("x" * 1000)
    assert not slow.put("x" * 100)  # over the byte limit: closed with 4008
    assert slow.put("x" * 100)  # once closed, frames are dropped without a second close
    gone.close(p.SERVICE_RESTART)
    assert (slow.close_code, gone.close_code) == (p.SLOW_CONSUMER, p.SERVICE_RESTART)
    assert hub.stats()["slow_consumers"] == 1


async def test_a_frame_larger_than_the_buffer_is_queued_whole_and_bounds_nothing() -> None:
    """put_large: the frames behind it are counted as usual; a paced producer waits for it."""
    hub = Hub(MemoryBroker(), client_queue_bytes=1024)
    link = hub.attach()
    link.put_large("L" * 10_000)
    assert link.queued_bytes == 0 and link.put("x" * 1000)
    assert not link.put("x" * 100)  # the limit still holds behind it
    assert link.close_code == p.SLOW_CONSUMER

    link = hub.attach()
    link.put_large("L" * 10_000)
    sent: list[int] = []
    gate = asyncio.Event()

    async def send(frame: str) -> None:
        await gate.wait()
        sent.append(len(frame))

    writer = asyncio.create_task(link.run(send, 5.0))
    waiter = asyncio.create_task(link.wait_room(10, 5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # at most one such frame waits at a time
    gate.set()
    assert await waiter and sent == [10_000]
    link.close(p.NORMAL)
    assert await writer == p.NORMAL


class _Connection:
    """A connection's two ways out: direct frame writes to the sink it offers the link and the
    writer's sends; both append to one wire, in the order they happen. Writing to it while it
    is not offered, or once closing, is an error."""

    def __init__(self, link: ClientLink) -> None:
        self.link = link
        self.wire: list[str] = []
        self.closing = False
        self.offered = False
        self.sending: asyncio.Future[None] | None = None
        self.offer(True)

    def offer(self, offered: bool) -> None:
        self.offered = offered
        self.link.offer(self if offered else None)

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        assert self.offered and not self.closing, "a direct write the connection did not offer"
        self.wire.append(data[2:].decode())  # short text frames: a 2-byte header

    async def send(self, frame: str) -> None:
        if self.sending is not None:
            await self.sending
        self.wire.append(frame)


def _put(link: ClientLink, text: str) -> bool:
    return link.put(text, len(text), text_frame(text.encode()))


async def _idle(link: ClientLink, conn: _Connection) -> None:
    """Until the writer has sent what is queued and waits for more."""
    async with asyncio.timeout(5):
        while link.queued_bytes or len(conn.wire) == 0:
            await asyncio.sleep(0)
        for _ in range(3):
            await asyncio.sleep(0)


async def test_frames_go_straight_to_an_idle_connection_and_keep_their_order() -> None:
    hub = Hub(MemoryBroker(), client_queue_bytes=4096)
    link = hub.attach()
    conn = _Connection(link)
    assert link.put("welcome")  # no wire form: queued, sent by the writer
    writer = asyncio.create_task(link.run(conn.send, send_timeout=5))
    await _idle(link, conn)
    assert _put(link, "e1") and _put(link, "e2")  # idle writer: written at once
    assert conn.wire == ["welcome", "e1", "e2"] and link.queued_bytes == 0

    conn.offer(False)  # the transport holds writes back (paused): frames wait in the buffer
    conn.sending = asyncio.get_running_loop().create_future()  # and the writer's send blocks
    assert _put(link, "e3")
    assert link.queued_bytes == 2
    for _ in range(5):  # the writer takes e3 and blocks in its send
        await asyncio.sleep(0)
    conn.offer(True)  # the transport takes writes again, but the writer is still in a send
    assert _put(link, "e4")  # queued behind e3, never written ahead of it
    assert conn.wire == ["welcome", "e1", "e2"] and link.queued_bytes == 4
    conn.sending.set_result(None)
    conn.sending = None
    async with asyncio.timeout(5):
        while len(conn.wire) < 5:
            await asyncio.sleep(0)
    assert conn.wire == ["welcome", "e1", "e2", "e3", "e4"]
    link.close(p.SERVICE_RESTART)
    assert await writer == p.SERVICE_RESTART
    assert _put(link, "late") and conn.wire[-1] == "e4"  # closed: nothing more goes out


async def test_a_connection_that_holds_writes_back_still_meets_the_byte_limit() -> None:
    hub = Hub(MemoryBroker(), client_queue_bytes=1024)
    link = hub.attach()
    conn = _Connection(link)
    conn.offer(False)
    assert _put(link, "x" * 1000)
    assert not _put(link, "x" * 100)  # the buffer overflows as without direct writes
    assert link.close_code == p.SLOW_CONSUMER


async def test_a_closing_transport_and_a_closed_link_take_no_direct_writes() -> None:
    hub = Hub(MemoryBroker(), client_queue_bytes=4096)
    link = hub.attach()
    conn = _Connection(link)
    writer = asyncio.create_task(link.run(conn.send, send_timeout=5))
    assert _put(link, "e1")  # offered before the writer idles: queued, sent by the writer
    await _idle(link, conn)
    conn.closing = True  # the transport closes before the connection withdrew its offer
    conn.sending = asyncio.get_running_loop().create_future()
    assert _put(link, "e2")  # not written to the closing transport: queued for the writer
    assert conn.wire == ["e1"] and link.queued_bytes == 2
    link.close(p.SERVICE_RESTART)
    assert await writer == p.SERVICE_RESTART
    conn.closing = False
    conn.offer(True)  # an offer after the close changes nothing
    assert _put(link, "late") and conn.wire == ["e1"] and link.queued_bytes == 0
