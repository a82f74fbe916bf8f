"""Stream hand-over between instances on a real Redis (and a real Redis Cluster): the live mark
in the lease key, the lease notices, and :func:`bridge.cluster.leases.hand_over` with two
runners."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.cluster.leases import LeasedRunner, LeaseStore, hand_over
from bridge.cluster.notices import LIVE, RELEASED, LeaseNotices, Notice, decode, encode
from tests.scenarios.conftest import SCALE, eventually
from tests.support.redis_cluster import binaries_missing, redis_cluster

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["redis", "cluster"])
async def url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "redis":
        yield REDIS
        return
    if binaries_missing():
        pytest.skip(binaries_missing() or "")
    async with redis_cluster() as cluster:
        yield cluster.url


# -- the live mark -----------------------------------------------------------------------------

async def test_the_live_mark_is_part_of_the_lease_and_names_only_another_holder(prefix):
    a = LeaseStore(REDIS, prefix=prefix, ttl=5, instance_id="inst-a")
    b = LeaseStore(REDIS, prefix=prefix, ttl=5, instance_id="inst-b")
    redis = aioredis.Redis.from_url(REDIS)
    try:
        assert await a.acquire("s")
        assert await b.successor("s") == ("inst-a", False), "held, not yet live"
        assert await a.renew("s", live=True)
        assert await b.successor("s") == ("inst-a", True)
        assert await a.successor("s") is None, "a holder is never its own successor"
        assert await b.holder("s") == "inst-a", "the instance id reads as before"
        assert 0 < await redis.pttl(a.key("s")) <= 5000

        assert not await b.renew("s", live=True), "another's lease is not touched"
        assert await a.renew("s"), "a plain renewal keeps the mark"
        assert await b.successor("s") == ("inst-a", True)
        assert not await b.acquire("s")
        assert not await b.release("s")
        assert await a.release("s"), "a live lease is released like any other"
        assert await redis.get(a.key("s")) is None
        assert await b.successor("s") is None

        assert await a.renew("s", live=True), "a vanished lease is re-created, live"
        assert await b.successor("s") == ("inst-a", True)
        assert 0 < await redis.pttl(a.key("s")) <= 5000
    finally:
        await a.close()
        await b.close()
        await redis.aclose()


# -- notices -----------------------------------------------------------------------------------

def test_notices_encode_and_decode_and_anything_else_is_ignored():
    data = encode(RELEASED, ["antbuddy/t/a", "antbuddy/t/b"], "inst-a", "f00d")
    assert decode(data) == Notice(RELEASED, ("antbuddy/t/a", "antbuddy/t/b"), "inst-a", "f00d")
    for junk in (b"", b"nope", b"[]", orjson.dumps({"kind": "other", "streams": [],
                                                      "by": "x", "from": "y"}),
                 orjson.dumps({"kind": LIVE, "streams": [1], "by": "x", "from": "y"}),
                 orjson.dumps({"kind": LIVE, "streams": ["s"], "by": "x"})):
        assert decode(junk) is None


async def test_a_notice_reaches_the_other_instances_who_are_counted(prefix):
    a = LeaseNotices(REDIS, prefix=prefix, instance_id="inst-a")
    b = LeaseNotices(REDIS, prefix=prefix, instance_id="inst-b")
    heard_a: list[Notice] = []
    heard_b: list[Notice] = []
    a.on_notice(heard_a.append)
    b.on_notice(heard_b.append)
    try:
        await a.start()
        assert await a.publish(RELEASED, ["s1"]) == 0, "nobody else listens"
        await b.start()
        assert await a.publish(RELEASED, ["s1", "s2"]) == 1
        await eventually(lambda: len(heard_b) == 1, 5, "b to hear the notice")
        assert heard_b[0].kind == RELEASED and heard_b[0].streams == ("s1", "s2")
        assert heard_b[0].by == "inst-a"
        assert await b.publish(LIVE, ["s1"]) == 1
        await eventually(lambda: len(heard_a) == 1, 5, "a to hear the answer")
        assert heard_a[0].kind == LIVE and heard_a[0].by == "inst-b"
        assert len(heard_b) == 1, "an instance does not hear its own notices"
    finally:
        await a.close()
        await b.close()


# -- hand_over ---------------------------------------------------------------------------------

class Instance:
    """One instance's lease side, as the service wires it: a store, notices, one runner."""

    def __init__(self, url: str, prefix: str, name: str, record: list[str], *,
                 settle: float = 0.0) -> None:
        """``settle``: seconds the stream takes to subscribe upstream (-1: it never does)."""
        # A ttl far beyond the test: standby attempts come every 8+ s, so a takeover within
        # the test's waits comes from a notice.
        self.store = LeaseStore(url, prefix=prefix, ttl=30, instance_id=name)
        self.notices = LeaseNotices(url, prefix=prefix, instance_id=name)
        self.subscribed = asyncio.Event()
        self._record = record
        self._name = name
        self._settle = settle
        self.runner = LeasedRunner(self.store, "antbuddy/t/a", self._stream,
                                   until_live=self.subscribed.wait, notices=self.notices)
        self.notices.on_notice(lambda n: self.runner.nudge() if n.kind == RELEASED
                               else self.runner.successor_live())
        self.task: asyncio.Task[None] | None = None

    async def _stream(self) -> None:
        self._record.append(f"{self._name} connecting")
        try:
            if self._settle < 0:
                await asyncio.Event().wait()
            await asyncio.sleep(self._settle)  # a connect and subscribe upstream take time
            self._record.append(f"{self._name} subscribed")
            self.subscribed.set()
            await asyncio.Event().wait()
        finally:
            self._record.append(f"{self._name} stopped")

    async def start(self) -> Instance:
        await self.notices.start()
        self.task = asyncio.create_task(self.runner.run())
        return self

    async def stop_loop(self) -> None:
        """What the service does first at shutdown: end the lease loop, keep the stream."""
        self.runner.detach()
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.runner.stop()
        await self.notices.close()
        await self.store.close()


async def test_the_old_stream_runs_until_the_new_holder_is_live_upstream(url, prefix, caplog):
    record: list[str] = []
    old = await Instance(url, prefix, "inst-a", record).start()
    new: Instance | None = None
    try:
        await eventually(lambda: "inst-a subscribed" in record, 10, "the first holder")
        assert old.runner.held
        new = await Instance(url, prefix, "inst-b", record, settle=0.3).start()
        await eventually(lambda: new.runner.held_by == "inst-a", 10, "the standby to look")

        await old.stop_loop()
        assert record == ["inst-a connecting", "inst-a subscribed"], "the stream runs on"
        with caplog.at_level(logging.INFO, logger="bridge.cluster.leases"):
            async with asyncio.timeout(10 * SCALE):  # far below the 20 s hand-over limit
                await hand_over([old.runner], old.notices, timeout=20)
        assert record == ["inst-a connecting", "inst-a subscribed", "inst-b connecting",
                          "inst-b subscribed", "inst-a stopped"]
        assert new.runner.held and new.runner.live
        assert await old.store.holder("antbuddy/t/a") == "inst-b"
        assert old.runner.state == "standby"
        assert "lease antbuddy/t/a handed over to inst-b" in caplog.text
    finally:
        await old.close()
        if new is not None:
            await new.close()


async def test_with_nobody_listening_the_stream_stops_at_once(prefix, caplog):
    record: list[str] = []
    lone = await Instance(REDIS, prefix, "inst-a", record).start()
    try:
        await eventually(lambda: lone.runner.live, 10, "the stream to be live")
        await lone.stop_loop()
        with caplog.at_level(logging.INFO, logger="bridge.cluster.leases"):
            async with asyncio.timeout(5 * SCALE):  # far below the 60 s hand-over limit
                await hand_over([lone.runner], lone.notices, timeout=60)
        assert record[-1] == "inst-a stopped"
        assert await lone.store.holder("antbuddy/t/a") is None
        assert "no other instance listens; 1 stream(s) stop now" in caplog.text
    finally:
        await lone.close()


async def test_a_stream_nobody_takes_over_stops_after_a_short_grace(prefix, caplog):
    record: list[str] = []
    lone = await Instance(REDIS, prefix, "inst-a", record).start()
    # Another instance listens but does not take the stream (it is stopping too, say).
    bystander = LeaseNotices(REDIS, prefix=prefix, instance_id="inst-b")
    try:
        await bystander.start()
        await eventually(lambda: lone.runner.live, 10, "the stream to be live")
        await lone.stop_loop()
        with caplog.at_level(logging.INFO, logger="bridge.cluster.leases"):
            async with asyncio.timeout(10 * SCALE):  # far below the 60 s hand-over limit
                await hand_over([lone.runner], lone.notices, timeout=60)
        assert record[-1] == "inst-a stopped"
        assert await lone.store.holder("antbuddy/t/a") is None
        assert "1 other instance(s) told" in caplog.text
        assert "lease antbuddy/t/a: no instance took it over within 1.0s" in caplog.text
    finally:
        await bystander.close()
        await lone.close()


async def test_a_successor_that_never_gets_live_ends_the_wait_at_the_handover_timeout(
        prefix, caplog):
    record: list[str] = []
    old = await Instance(REDIS, prefix, "inst-a", record).start()
    new: Instance | None = None
    try:
        await eventually(lambda: old.runner.live, 10, "the stream to be live")
        new = await Instance(REDIS, prefix, "inst-b", record, settle=-1).start()
        await eventually(lambda: new.runner.held_by == "inst-a", 10, "the standby to look")
        await old.stop_loop()
        with caplog.at_level(logging.INFO, logger="bridge.cluster.leases"):
            await hand_over([old.runner], old.notices, timeout=1.5)
        assert record == ["inst-a connecting", "inst-a subscribed", "inst-b connecting",
                          "inst-a stopped"]
        assert new.runner.held and not new.runner.live
        assert ("lease antbuddy/t/a: inst-b took it over but was not live upstream within "
                "1.5s") in caplog.text
    finally:
        await old.close()
        if new is not None:
            await new.close()
