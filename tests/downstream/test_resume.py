"""Resume after a disconnect: history, then live, with no gap and no duplicate; or a gap notice."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import orjson

from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.resilient import provisional_frame
from bridge.downstream import protocol as p
from bridge.downstream.hub import Hub
from bridge.downstream.link import ClientLink
from bridge.redisconn.clients import drop_prefix
from tests.downstream.conftest import SCALE
from tests.downstream.harness import REDIS_URL, WAIT, StartBridge, client, recv, subscribe, token
from tests.support.redis_proxy import Proxy
from tests.support.redis_server import private_redis

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
    hub.release(link, CH, offsets[1], await broker.epoch(CH))
    later = (await broker.publish([CH], b'{"n":2}'))[0]  # type: ignore[index]
    assert await drain(link, 3) == offsets[2:] + [later]


async def test_frames_still_on_their_way_after_a_replay_are_not_sent_twice() -> None:
    """A replay reads history on another connection than the live feed: under load it can
    read frames whose live copies arrive after the release. Those are dropped (the floor)."""
    broker = MemoryBroker()
    hub = Hub(broker)
    epoch = await broker.epoch(CH)
    for n in range(4):
        await broker.publish([CH], orjson.dumps({"n": n}))  # before the client: not live
    frames = await broker.history(CH, None, 10)
    link = hub.attach()
    await hub.subscribe_many(link, [CH], hold=[CH])
    hub.release(link, CH, frames[3][0], epoch)  # the replay gave all four
    for offset, frame in frames:
        hub.on_message(CH, offset, frame)  # their live copies, late
    provisional = provisional_frame(CH, epoch, frames[3][0], b'{"n":"p"}')
    hub.on_provisional(CH, frames[3][0], provisional, "p")  # then an outage's frame
    (fifth,) = await broker.publish([CH], orjson.dumps({"n": 4}))  # type: ignore[misc]
    hub.on_message(CH, frames[2][0], frames[2][1])  # a stale one after a newer one: sent
    assert await drain(link, 3) == [frames[3][0], fifth, frames[2][0]]


async def test_a_gap_reaches_live_clients_at_once_and_replaying_ones_after_their_replay(
        ) -> None:
    broker = MemoryBroker()
    hub = Hub(broker)
    live, replaying = hub.attach(), hub.attach()
    await hub.subscribe_many(live, [CH])
    await hub.subscribe_many(replaying, [CH], hold=[CH])
    hub.on_gap(CH, "epoch_changed", "e2")
    assert replaying.queued_bytes == 0
    got: list[dict[str, object]] = []

    async def send(frame: str) -> None:
        got.append(orjson.loads(frame))

    hub.release(replaying, CH, None)
    for link in (live, replaying):
        task = asyncio.create_task(link.run(send, 5.0))
        async with asyncio.timeout(WAIT * SCALE):
            while link.queued_bytes:
                await asyncio.sleep(0.01)
        link.close(p.NORMAL)
        await task
    gap = {"type": "gap", "channel": CH, "reason": "epoch_changed", "epoch": "e2"}
    assert got == [gap, gap]


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


async def test_a_live_feed_lagging_behind_the_replay_sends_nothing_twice(
        bridge: StartBridge) -> None:
    """The pub/sub feed lags 0.3 s behind the command connection the replay reads history
    on, as on a loaded instance: every event arrives once, in order."""
    prefix = f"test-lag-{uuid.uuid4().hex}:"
    proxy = Proxy()
    await proxy.start()
    try:
        async with bridge(RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix)) as b:
            epoch, offset = await last_seen(b)
            proxy.delay_subscribers(0.3)
            published: list[str] = []

            async def publisher() -> None:
                for _ in range(60):
                    published.append((await b.publish(CH))[0])
                    await asyncio.sleep(0.01)

            async with client(b.url, token("calls:acme:*")) as (ws, _):
                task = asyncio.create_task(publisher())
                await asyncio.sleep(0.1)
                assert (await subscribe_resume(ws, CH, epoch, offset))["type"] == "subscribed"
                got: list[str] = []
                async with asyncio.timeout(WAIT * 4 * SCALE):
                    await task
                    while len(got) < len(published) or published[-1] not in got:
                        got.append((await recv(ws))["offset"])
                    await asyncio.sleep(0.5)  # anything doubled would have arrived by now
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            got.append((await recv(ws))["offset"])
            assert got == published
    finally:
        await proxy.stop()
        await drop_prefix(REDIS_URL, prefix)


async def test_a_resume_across_a_lost_history_gets_a_gap_then_the_new_epochs_events(
        bridge: StartBridge) -> None:
    """Redis restarted empty while the client was away: a gap, then what was published since
    (the new epoch), then live events; nothing it had comes again."""
    async with private_redis() as server, bridge(RedisBroker(server.url, prefix="cb:")) as b:
        epoch, offset = await last_seen(b)
        await server.restart()
        since = [(await b.publish(CH))[0] for _ in range(3)]
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            reply = await subscribe_resume(ws, CH, epoch, offset)
            assert reply["type"] == "subscribed" and reply["epochs"][CH] != epoch
            gap = await recv(ws)
            assert (gap["type"], gap["reason"], gap["epoch"]) == (
                "gap", "epoch_changed", reply["epochs"][CH])
            assert [(await recv(ws))["offset"] for _ in since] == since
            live, _ = await b.publish(CH)
            assert (await recv(ws))["offset"] == live
        assert b.hub.resumes == {"epoch_changed": 1}


async def test_a_client_that_saw_no_event_resumes_from_the_subscribed_position(
        bridge: StartBridge) -> None:
    """A quiet channel: the client has no event to resume from, but ``subscribed`` gave it the
    channel's position; events published while it was away reach it on its return."""
    async with bridge(MemoryBroker()) as b:
        await b.publish(CH)  # before the client: not promised to it
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            reply = await subscribe(ws, CH)
            epoch, offset = reply["epochs"][CH], reply["offsets"][CH]
        missed = [(await b.publish(CH))[0] for _ in range(2)]
        async with client(b.url, token("calls:acme:*")) as (ws, _):
            assert (await subscribe_resume(ws, CH, epoch, offset))["type"] == "subscribed"
            assert [(await recv(ws))["offset"] for _ in missed] == missed
