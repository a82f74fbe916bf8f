"""A client link's slow-consumer closes are counted once, whichever path found the client slow."""

from __future__ import annotations

import asyncio

from bridge.brokers.memory import MemoryBroker
from bridge.downstream import protocol as p
from bridge.downstream.hub import Hub


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
