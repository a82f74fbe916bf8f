"""A lost subscription loses nothing silently: what was published meanwhile is caught up from
history, in order and once, or the handler is told of a gap. On a private Redis (and a private
cluster), killed, restarted empty, trimmed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.brokers.base import Broker
from bridge.brokers.continuity import Continuity
from bridge.core.backends import from_url
from bridge.events.event import Event, EventType
from tests.brokers.redis.test_broker import WAIT
from tests.support.redis_cluster import binaries_missing, redis_cluster
from tests.support.redis_server import PrivateRedis, private_redis

CH = "calls:acme:1001"


def event_json(n: int) -> bytes:
    return Event(id=f"ev-{n}-{uuid.uuid4().hex[:6]}", type=EventType.CREATED, provider="test",
                 tenant="acme", occurred_at="2024-05-01T10:00:00.000Z", call_id=f"c{n}").to_json()


class Collector:
    """A broker's handlers: every frame and every gap, in arrival order."""

    def __init__(self, broker: Broker) -> None:
        self.got: list[tuple[str, Any]] = []
        broker.set_handler(lambda c, o, f: self.got.append(("event", (o, orjson.loads(f)))))
        broker.set_gap_handler(lambda c, reason, epoch: self.got.append(("gap", reason)))

    def offsets(self) -> list[str]:
        return [v[0] for kind, v in self.got if kind == "event"]

    def gaps(self) -> list[str]:
        return [v for kind, v in self.got if kind == "gap"]


async def until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(WAIT * 2):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


async def kill_pubsub(url: str) -> int:
    admin = aioredis.Redis.from_url(url)
    try:
        return int(await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
    finally:
        await admin.aclose()


@pytest.fixture
async def server() -> AsyncIterator[PrivateRedis]:
    async with private_redis() as running:
        yield running


def broker_on(url: str, **options: Any) -> Broker:
    return from_url(url, prefix="cb:", connect_timeout=1.0, socket_timeout=1.0, **options)


async def test_events_published_while_the_subscription_was_killed_are_caught_up(
        server: PrivateRedis) -> None:
    watcher, other = broker_on(server.url), broker_on(server.url)
    seen = Collector(watcher)
    await watcher.start()
    await other.start()
    try:
        await watcher.subscribe(CH)
        before = await other.publish([CH], event_json(0))
        await until(lambda: len(seen.offsets()) == 1, "live before the kill")
        assert await kill_pubsub(server.url) >= 1
        # Published by another instance while this one's subscription is gone.
        missed = [(await other.publish([CH], event_json(n)))[0] for n in range(1, 21)]
        await until(lambda: watcher.health()["state"] == "connected"
                    and watcher.health()["catching_up"] == 0, "resubscribed and caught up")
        after = [(await other.publish([CH], event_json(n)))[0] for n in range(21, 24)]
        await until(lambda: len(seen.offsets()) == 24, "every event")
        assert seen.offsets() == before + missed + after  # once each, in order
        assert seen.gaps() == [] and watcher.health()["caught_up_events"] >= 1
    finally:
        await watcher.close()
        await other.close()


async def test_a_redis_restarted_empty_is_a_gap_then_what_the_new_epoch_holds(
        server: PrivateRedis) -> None:
    watcher = broker_on(server.url)
    seen = Collector(watcher)
    await watcher.start()
    try:
        await watcher.subscribe(CH)
        await watcher.publish([CH], event_json(0))
        await until(lambda: len(seen.offsets()) == 1, "live before the restart")
        await server.restart()  # empty: the channel's history and epoch are gone
        other = broker_on(server.url)
        await other.start()
        try:
            fresh = [(await other.publish([CH], event_json(n)))[0] for n in range(1, 6)]
            await until(lambda: len(seen.offsets()) == 6, "the new epoch's events")
        finally:
            await other.close()
        kinds = [kind for kind, _ in seen.got]
        assert kinds == ["event", "gap", *["event"] * 5]
        assert seen.gaps() == ["epoch_changed"] and seen.offsets()[1:] == fresh
    finally:
        await watcher.close()


async def test_missed_events_history_no_longer_holds_are_a_trimmed_gap(
        server: PrivateRedis) -> None:
    watcher, other = (broker_on(server.url, history_length=0),
                      broker_on(server.url, history_length=0))
    seen = Collector(watcher)
    await watcher.start()
    await other.start()
    try:
        await watcher.subscribe(CH)
        await kill_pubsub(server.url)
        await other.publish([CH], event_json(1))  # no history is kept: it cannot come back
        await until(lambda: seen.gaps() == ["trimmed"], "the gap")
        (later,) = await watcher.publish([CH], event_json(2))  # type: ignore[misc]
        await until(lambda: seen.offsets() == [later], "live after the gap")
    finally:
        await watcher.close()
        await other.close()


async def test_a_channel_subscribed_after_events_gets_none_of_them_on_a_catch_up(
        server: PrivateRedis) -> None:
    """The position of a new subscription is where the channel stood when it was made."""
    watcher = broker_on(server.url)
    seen = Collector(watcher)
    await watcher.start()
    try:
        for n in range(3):
            await watcher.publish([CH], event_json(n))
        await watcher.subscribe(CH)
        await kill_pubsub(server.url)
        (missed,) = await watcher.publish([CH], event_json(3))  # type: ignore[misc]
        await until(lambda: seen.offsets() == [missed], "only the missed one")
    finally:
        await watcher.close()


async def test_the_cluster_backend_catches_up_too() -> None:
    if binaries_missing():
        pytest.skip(binaries_missing() or "")
    async with redis_cluster() as cluster:
        watcher, other = broker_on(cluster.url), broker_on(cluster.url)
        seen = Collector(watcher)
        await watcher.start()
        await other.start()
        try:
            await watcher.subscribe(CH)
            for port in cluster.ports:
                await kill_pubsub(f"redis://127.0.0.1:{port}/0")
            missed = [(await other.publish([CH], event_json(n)))[0] for n in range(10)]
            await until(lambda: seen.offsets() == missed, "the missed events, once each")
            assert seen.gaps() == []
        finally:
            await watcher.close()
            await other.close()


async def test_live_messages_held_past_the_budget_are_read_from_history_instead() -> None:
    """Pure: a held buffer over budget is emptied; the catch-up reads further instead."""
    delivered: list[str] = []
    history = [f"{n}-0" for n in range(1, 11)]

    async def read(channel: str) -> tuple[str, str]:
        return "e1", "0-0"

    continuity: Continuity

    async def replay(channel: str, *, epoch: str, after: str, limit: int) -> Any:
        from bridge.brokers.base import Replay, ReplayStatus

        start = int(after.split("-")[0])
        if start == 0:  # while the first page is read, live frames overflow the buffer
            for offset in history[5:]:
                continuity.live(CH, offset, frame(offset))
        items = [(o, frame(o)) for o in history if int(o.split("-")[0]) > start][:3]
        return Replay(ReplayStatus.OK, "e1", items, complete=len(items) < 3)

    def frame(offset: str) -> bytes:
        return b'{"type":"event","channel":"' + CH.encode() + b'","epoch":"e1","offset":"' \
            + offset.encode() + b'","event":{"pad":"' + b"x" * 100 + b'"}}'

    continuity = Continuity(lambda c, o, f: delivered.append(o), lambda *gap: None, read,
                            replay, page=3, hold_bytes=300)
    await continuity.anchor(CH)
    continuity.suspend([CH])
    continuity.confirmed(CH)
    async with asyncio.timeout(WAIT):
        while continuity.suspended:
            await asyncio.sleep(0.01)
    await continuity.close()
    assert delivered == history and continuity.counts["hold_overflows"] >= 1


async def test_a_message_at_or_below_the_position_is_not_delivered_again() -> None:
    """Pure: within a subscription offsets only grow; a second copy of one (from the connection
    and from history both, say) is dropped, a new epoch's smaller offsets are not."""
    delivered: list[str] = []

    async def read(channel: str) -> tuple[str, str]:
        return "e1", "5-0"

    async def replay(channel: str, *, epoch: str, after: str, limit: int) -> Any:
        raise AssertionError("no catch-up here")

    def frame(epoch: str, offset: str) -> bytes:
        return (b'{"type":"event","channel":"' + CH.encode() + b'","epoch":"' + epoch.encode()
                + b'","offset":"' + offset.encode() + b'","event":{"id":"x"}}')

    continuity = Continuity(lambda c, o, f: delivered.append(o), lambda *gap: None, read, replay)
    await continuity.anchor(CH)
    for epoch, offset in [("e1", "4-0"), ("e1", "6-0"), ("e1", "6-0"), ("e1", "7-0"),
                          ("e2", "1-0")]:
        continuity.live(CH, offset, frame(epoch, offset))
    assert delivered == ["6-0", "7-0", "1-0"]
    assert continuity.counts["repeats_dropped"] == 2
