"""Resume after a disconnect: history, then live, with no gap and no duplicate; or a gap notice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bridge.brokers.memory import MemoryBroker
from bridge.downstream import protocol as p
from bridge.hub import Hub
from bridge.link import ClientLink

from .conftest import SCALE
from .harness import WAIT, StartBridge, client, recv, subscribe, token

CH = "calls:acme:1001"


async def subscribe_resume(ws: Any, channel: str, epoch: str, offset: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", "id": "r", "channels": [channel],
                                "resume": {channel: {"epoch": epoch, "offset": offset}}}))
    return await recv(ws)


async def last_seen(b: Any) -> tuple[str, str]:
    """Connect, receive a few events live, disconnect: the (epoch, offset) a client keeps."""
    async with client(b.url, token("calls:acme:*")) as (ws, _):
        reply = await subscribe(ws, CH)
        for _ in range(3):
            await b.publish(CH)
        for _ in range(3):
            msg = await recv(ws)
        assert msg["epoch"] == reply["epochs"][CH]
        return msg["epoch"], msg["offset"]


async def test_resume_after_100_missed_while_events_keep_coming(bridge: StartBridge) -> None:
    async with bridge(MemoryBroker(history_length=1000)) as b:
        epoch, offset = await last_seen(b)
        missed = [(await b.publish(CH))[0] for _ in range(100)]
        live: list[str] = []

        async def publisher() -> None:
            for _ in range(300):
                live.append((await b.publish(CH))[0])
                await asyncio.sleep(0)

        async with client(b.url, token("calls:acme:*")) as (ws, _):
            task = asyncio.create_task(publisher())
            try:
                reply = await subscribe_resume(ws, CH, epoch, offset)
                assert reply["type"] == "subscribed" and reply["epochs"] == {CH: epoch}
                got = []
                async with asyncio.timeout(WAIT * SCALE):
                    while not task.done() or len(got) < len(missed) + len(live):
                        msg = await recv(ws)
                        assert msg["type"] == "event", msg
                        got.append(msg["offset"])
            finally:
                await task
            # Exactly what was missed, then everything published meanwhile: no gap, no dup.
            assert got == missed + live
            last, _ = await b.publish(CH)
            assert (await recv(ws))["offset"] == last
        assert b.hub.resumes == {"ok": 1}  # counted for /metrics


async def test_trimmed_history_sends_gap_then_live(bridge: StartBridge) -> None:
    async with bridge(MemoryBroker(history_length=10)) as b:
        epoch, offset = await last_seen(b)
        for _ in range(50):
            await b.publish(CH)
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            assert (await subscribe_resume(ws, CH, epoch, offset))["type"] == "subscribed"
            assert await recv(ws) == {"type": "gap", "channel": CH, "reason": "trimmed",
                                      "epoch": epoch}
            nxt, _ = await b.publish(CH)
            assert (await recv(ws))["offset"] == nxt
        assert b.hub.resumes == {"trimmed": 1}


async def test_changed_epoch_sends_gap(bridge: StartBridge) -> None:
    async with bridge() as b:
        epoch, offset = await last_seen(b)
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            assert (await subscribe_resume(ws, CH, "lostepoch", offset))["type"] == "subscribed"
            assert await recv(ws) == {"type": "gap", "channel": CH, "reason": "epoch_changed",
                                      "epoch": epoch}
            nxt, _ = await b.publish(CH)
            assert (await recv(ws))["offset"] == nxt
        assert b.hub.resumes == {"epoch_changed": 1}


async def test_too_old_offset_sends_gap(bridge: StartBridge) -> None:
    async with bridge(history_max_age=60.0) as b:
        epoch, _ = await last_seen(b)
        old = f"{int((time.time() - 3600) * 1000)}-0"
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            assert (await subscribe_resume(ws, CH, epoch, old))["type"] == "subscribed"
            gap = await recv(ws)
            assert (gap["type"], gap["reason"]) == ("gap", "too_old")
        assert b.hub.resumes == {"too_old": 1}


async def test_resume_with_nothing_missed_goes_live(bridge: StartBridge) -> None:
    async with bridge() as b:
        epoch, offset = await last_seen(b)
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            assert (await subscribe_resume(ws, CH, epoch, offset))["type"] == "subscribed"
            nxt, _ = await b.publish(CH)
            assert (await recv(ws))["offset"] == nxt
        assert b.hub.resumes == {"ok": 1}


async def drain(link: ClientLink, count: int) -> list[str]:
    out: list[str] = []

    async def send(frame: str) -> None:
        out.append(orjson.loads(frame)["offset"])

    task = asyncio.create_task(link.run(send, 5.0))
    try:
        async with asyncio.timeout(WAIT * SCALE):
            while len(out) < count:
                await asyncio.sleep(0.01)
    finally:
        link.close(p.NORMAL)
        await task
    return out


async def test_release_skips_held_frames_up_to_the_replayed_offset() -> None:
    broker = MemoryBroker()
    hub = Hub(broker)
    link = hub.attach()
    assert await hub.subscribe_many(link, [CH], hold=[CH]) == [CH]
    offsets = [(await broker.publish([CH], b'{"n":1}'))[0] for _ in range(4)]  # type: ignore
    assert link.queued_bytes == 0  # held, not queued
    hub.release(link, CH, offsets[1])
    later = (await broker.publish([CH], b'{"n":2}'))[0]  # type: ignore[index]
    assert await drain(link, 3) == offsets[2:] + [later]


async def test_held_backlog_overflow_closes_4008() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, client_queue_bytes=4096)
    link = hub.attach()
    await hub.subscribe_many(link, [CH], hold=[CH])
    for _ in range(10):
        await broker.publish([CH], orjson.dumps({"pad": "x" * 1000}))
        if link.close_code is not None:
            break
    assert link.close_code == p.SLOW_CONSUMER
    assert hub.stats()["slow_consumers"] == 1
