"""Every target under its lease, on a real Redis, with the real consumer groups
(:mod:`bridge.consumer.groups`): two instances never push an event twice, order holds through a
receiver's failures and through a takeover, and a dead target never holds up a live one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.redis.wire import stream_key
from bridge.cluster.leases import LeaseStore
from bridge.cluster.notices import LocalNotices
from bridge.consumer.groupwire import group_name
from bridge.push.pusher import Pusher
from bridge.push.record import DeadLetters
from tests.push.conftest import REDIS, SCALE, target
from tests.scenarios.conftest import eventually

CHANNELS = ["calls:acme", "presence:acme"]


@pytest.fixture
async def broker(prefix: str) -> AsyncIterator[RedisBroker]:
    backend = RedisBroker(REDIS, prefix=prefix)
    await backend.start()
    yield backend
    await backend.close()


@contextlib.asynccontextmanager
async def instance(name: str, prefix: str, targets: list) -> AsyncIterator[Pusher]:
    leases = LeaseStore(REDIS, prefix=prefix, ttl=1.5, instance_id=name)
    pusher = Pusher(targets, url=REDIS, prefix=prefix, leases=leases, notices=LocalNotices())
    pusher.start()
    try:
        yield pusher
    finally:
        await pusher.close()
        await leases.close()


async def _groups_ready(prefix: str, group: str, channels: list[str]) -> bool:
    client = aioredis.Redis.from_url(REDIS)
    try:
        for channel in channels:
            try:
                groups = await client.xinfo_groups(stream_key(prefix, channel))
            except aioredis.ResponseError:
                return False
            if not any(g["name"].decode() == group_name(prefix, group) for g in groups):
                return False
        return True
    finally:
        await client.aclose()


async def _publish(broker: RedisBroker, numbers: range) -> list[bytes]:
    sent = []
    for n in numbers:
        for channel in CHANNELS:
            event = orjson.dumps({"id": f"{channel}-{n}", "n": n})
            await broker.publish([channel], event, event_id=f"{channel}-{n}")
            sent.append(event)
    return sent


def _by_channel(envelopes: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {c: [] for c in CHANNELS}
    for e in envelopes:
        out[e["channel"]].append(e["event"]["n"])
    return out


async def test_two_instances_push_every_event_once_in_order_through_failures_and_a_takeover(
        prefix, broker, receiver):
    rec = await receiver(lambda n: 500 if n <= 4 else 200)
    crm = target("crm", rec.url, CHANNELS, timeout=2.0, retry_for=30.0)
    async with instance("inst-a", prefix, [crm]) as a, instance("inst-b", prefix, [crm]) as b:
        await eventually(lambda: _groups_ready(prefix, "webhook:crm", CHANNELS), 10,
                         "the consumer groups")
        holders = [p for p in (a, b) if p.runners[0].held]
        assert len(holders) == 1, "one instance pushes a target at a time"
        await _publish(broker, range(10))
        await eventually(lambda: len(rec.delivered()) == 20, 30, "20 events delivered")
        assert _by_channel(rec.delivered()) == {c: list(range(10)) for c in CHANNELS}

        holder, other = (a, b) if holders[0] is a else (b, a)
        await holder.stop()  # its lease released: the other takes over
        await _publish(broker, range(10, 20))
        await eventually(lambda: other.runners[0].held, 10 * SCALE, "the takeover")
        await eventually(lambda: len(rec.delivered()) == 40, 30, "40 events delivered")
    assert _by_channel(rec.delivered()) == {c: list(range(20)) for c in CHANNELS}, \
        "every event once, in order, across the takeover"
    for envelope in rec.delivered():
        assert envelope["type"] == "event" and envelope["event"]["id"].startswith(
            envelope["channel"])


async def test_events_read_but_not_acknowledged_go_first_after_a_takeover(
        prefix, broker, receiver):
    # The receiver fails until told otherwise: the holder is stopped while it retries the
    # first event, with later ones read from the group and waiting behind it (all pending).
    failing = [True]
    rec = await receiver(lambda n: 500 if failing[0] else 200)
    crm = target("crm", rec.url, ["calls:acme"], timeout=2.0, retry_for=60.0)
    async with instance("inst-a", prefix, [crm]) as a:
        await eventually(lambda: _groups_ready(prefix, "webhook:crm", ["calls:acme"]), 10,
                         "the consumer group")
        for n in range(5):
            await broker.publish(["calls:acme"], orjson.dumps({"id": f"p-{n}", "n": n}))
        await eventually(lambda: len(rec.requests) >= 2, 10, "a retried first event")
        await a.stop()
    failing[0] = False
    async with instance("inst-b", prefix, [crm]) as b:
        await eventually(lambda: b.runners[0].held, 10, "the takeover")
        for n in range(5, 8):
            await broker.publish(["calls:acme"], orjson.dumps({"id": f"p-{n}", "n": n}))
        await eventually(lambda: len(rec.delivered()) == 8, 30, "8 events delivered")
    assert [e["event"]["n"] for e in rec.delivered()] == list(range(8))


async def test_a_dead_target_is_dead_lettered_while_another_target_keeps_receiving(
        prefix, broker, receiver, silent_url):
    rec = await receiver()
    live = target("live", rec.url, ["calls:acme"])
    down = target("down", silent_url, ["calls:acme"], timeout=0.3, retry_for=1.0)
    async with instance("inst-a", prefix, [down, live]) as a:
        for group in ("webhook:live", "webhook:down"):
            await eventually(lambda g=group: _groups_ready(prefix, g, ["calls:acme"]), 10,
                             "the consumer groups")
        await broker.publish(["calls:acme"], orjson.dumps({"id": "x-0", "n": 0}))
        await eventually(lambda: len(rec.delivered()) == 1, 5, "the live target's first event")
        for n in range(1, 20):
            await broker.publish(["calls:acme"], orjson.dumps({"id": f"x-{n}", "n": n}))
        await eventually(lambda: len(rec.delivered()) == 20, 5, "the live target's events")
        assert a.pushers[0].log.counts["dead"] == 0, "the live target did not wait"
        await eventually(lambda: a.pushers[0].log.counts["dead"] >= 1, 10, "a dead letter")
        snapshot = {t["name"]: t for t in a.snapshot()}
        assert snapshot["live"]["delivered"] == 20 and snapshot["live"]["dead"] == 0
        assert snapshot["down"]["lease"]["state"] == "held"
    letters = DeadLetters(REDIS, prefix=prefix)
    try:
        (first, *_) = reversed(await letters.read("down"))
        assert (first["event_id"], first["channel"], first["outcome"]) == (
            "x-0", "calls:acme", "dead")
    finally:
        await letters.close()
