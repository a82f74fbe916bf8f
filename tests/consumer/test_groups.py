"""Consumer groups against the shared Redis: worker processes sharing a channel, one killed;
redelivery, dead letters, trimmed entries, start positions, a Redis restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bridge.brokers.redis.broker import RedisBroker
from bridge.consumer.groups import Delivery, GroupConsumer
from bridge.consumer.groupwire import DeadLetter, dead_key, group_name
from tests.support.redis_server import private_redis

REDIS = "redis://127.0.0.1:6379/0"
SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))
WAIT = 30.0 * SCALE


@pytest_asyncio.fixture
async def broker(prefix: str) -> AsyncIterator[RedisBroker]:
    started = RedisBroker(REDIS, prefix=prefix, probe_interval=None)
    await started.start()
    yield started
    await started.close()


async def publish(broker: RedisBroker, channel: str, n: int) -> str:
    offsets = await broker.publish([channel], orjson.dumps({"id": f"ev-{n}", "n": n}))
    assert offsets is not None
    return offsets[0]


async def take(consumer: GroupConsumer, count: int) -> list[Delivery]:
    """The next ``count`` deliveries (none acked)."""
    got: list[Delivery] = []
    async with asyncio.timeout(WAIT):
        async for delivery in consumer:
            got.append(delivery)
            if len(got) == count:
                return got
    return got


class Worker:
    """A ``tests.consumer.group_worker`` process and the lines it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, object]] = []
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, prefix: str, consumer: str, ack_first: int) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.consumer.group_worker", REDIS, prefix, "workers",
            consumer, str(ack_first), "calls:acme",
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": "."})
        worker = cls(proc)
        await worker.until(lambda: any("ready" in line for line in worker.lines))
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(orjson.loads(line))

    async def until(self, condition: object) -> None:
        async with asyncio.timeout(WAIT):
            while not condition():  # type: ignore[operator]
                if self.reader.done():
                    pytest.fail(f"worker exited: {self.lines[-5:]}")
                await asyncio.sleep(0.02)

    def got(self) -> list[dict[str, object]]:
        return [line for line in self.lines if "got" in line]

    def acked(self) -> set[str]:
        return {str(line["acked"]) for line in self.lines if "acked" in line}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self.reader


async def test_a_killed_workers_entries_go_to_the_survivor(prefix: str,
                                                           broker: RedisBroker) -> None:
    # a acks its first 3 deliveries, then holds every later one until it is killed.
    a = await Worker.start(prefix, "a", 3)
    b = await Worker.start(prefix, "b", -1)
    try:
        offsets = [await publish(broker, "calls:acme", n) for n in range(20)]
        await a.until(lambda: len(a.got()) >= 6)
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        await a.reader
        offsets += [await publish(broker, "calls:acme", n) for n in range(20, 40)]
        # Every event is handled (acked) by one of them, those a held after claim_after.
        await b.until(lambda: set(offsets) <= a.acked() | b.acked())
        held = {str(line["got"]) for line in a.got()} - a.acked()
        assert len(held) >= 3
        again = {str(line["got"]): line["deliveries"] for line in b.got()
                 if line["got"] in held}
        assert set(again) == held
        assert set(again.values()) == {2}
        # Nothing else was delivered twice: b's first deliveries are the rest.
        firsts = {str(line["got"]) for line in b.got() if line["deliveries"] == 1}
        assert firsts.isdisjoint(a.acked()) and firsts.isdisjoint(held)
        client = Redis.from_url(REDIS)
        try:
            summary = await client.xpending(f"{prefix}{{calls:acme}}:stream",
                                            group_name(prefix, "workers"))
        finally:
            await client.aclose()
        assert summary["pending"] == 0
    finally:
        await a.stop()
        await b.stop()


async def handle(consumer: GroupConsumer, ack: set[str], seen: list[Delivery]) -> None:
    """Iterate ``consumer``, acking the offsets in ``ack`` and holding the others."""
    async for delivery in consumer:
        seen.append(delivery)
        if delivery.offset in ack:
            await consumer.ack(delivery)


async def until_reported(reported: list[DeadLetter]) -> None:
    async with asyncio.timeout(WAIT):
        while not reported:
            await asyncio.sleep(0.05)


async def test_an_entry_never_acked_is_dead_lettered(prefix: str, broker: RedisBroker) -> None:
    reported: list[DeadLetter] = []
    consumer = GroupConsumer(REDIS, ["calls:acme"], group="hooks", consumer="w1", prefix=prefix,
                             claim_after=0.2, max_deliveries=3, block=0.1,
                             on_dead=reported.append)
    seen: list[Delivery] = []
    async with consumer:
        poison = await publish(broker, "calls:acme", 0)
        fine = await publish(broker, "calls:acme", 1)
        worker = asyncio.ensure_future(handle(consumer, {fine}, seen))
        await until_reported(reported)
        await consumer.close()
        await worker
    assert [d.deliveries for d in seen if d.offset == poison] == [1, 2, 3]
    assert [d.deliveries for d in seen if d.offset == fine] == [1]
    [record] = reported
    assert (record.channel, record.group, record.offset, record.reason, record.deliveries,
            record.consumer) == ("calls:acme", "hooks", poison, "max_deliveries", 3, "w1")
    assert record.event is not None and orjson.loads(record.event)["id"] == "ev-0"
    client = Redis.from_url(REDIS)
    try:
        [(record_id, fields)] = await client.xrange(dead_key(prefix, "calls:acme", "hooks"))
        summary = await client.xpending(f"{prefix}{{calls:acme}}:stream", f"{prefix}hooks")
    finally:
        await client.aclose()
    assert record_id.decode() == record.record_id
    assert fields == {b"offset": poison.encode(), b"reason": b"max_deliveries",
                      b"deliveries": b"3", b"consumer": b"w1", b"at": str(record.at).encode(),
                      b"e": record.event}
    assert summary["pending"] == 0


async def test_an_entry_trimmed_while_pending_is_reported_lost(prefix: str,
                                                              broker: RedisBroker) -> None:
    reported: list[DeadLetter] = []
    consumer = GroupConsumer(REDIS, ["calls:acme"], group="hooks", consumer="w1", prefix=prefix,
                             claim_after=0.2, block=0.1, on_dead=reported.append)
    seen: list[Delivery] = []
    client = Redis.from_url(REDIS)
    try:
        async with consumer:
            offset = await publish(broker, "calls:acme", 0)
            [delivery] = await take(consumer, 1)  # held, never acked
            await client.xtrim(f"{prefix}{{calls:acme}}:stream", maxlen=0, approximate=False)
            kept = await publish(broker, "calls:acme", 1)
            worker = asyncio.ensure_future(handle(consumer, {kept}, seen))
            await until_reported(reported)
            await consumer.close()
            await worker
        summary = await client.xpending(f"{prefix}{{calls:acme}}:stream", f"{prefix}hooks")
        dead = await client.xrange(dead_key(prefix, "calls:acme", "hooks"))
    finally:
        await client.aclose()
    assert delivery.offset == offset
    assert [(d.offset, d.deliveries) for d in seen] == [(kept, 1)]
    [record] = reported
    assert (record.offset, record.reason, record.deliveries, record.event) == (
        offset, "trimmed", 1, None)
    assert [fields[b"reason"] for _, fields in dead] == [b"trimmed"]
    assert summary["pending"] == 0


async def test_start_all_and_new(prefix: str, broker: RedisBroker) -> None:
    before = [await publish(broker, "calls:acme", n) for n in range(3)]
    common = dict(prefix=prefix, block=0.1)
    async with GroupConsumer(REDIS, ["calls:acme"], group="all", consumer="w", start="all",
                             **common) as every, \
            GroupConsumer(REDIS, ["calls:acme"], group="new", consumer="w", start="new",
                          **common) as fresh:
        after = await publish(broker, "calls:acme", 3)
        assert [d.offset for d in await take(every, 4)] == [*before, after]
        assert [d.offset for d in await take(fresh, 1)] == [after]


async def test_own_pending_entries_come_back_first_after_a_restart(
        prefix: str, broker: RedisBroker) -> None:
    options = dict(group="hooks", consumer="w1", prefix=prefix, claim_after=60.0, block=0.1)
    async with GroupConsumer(REDIS, ["calls:acme"], **options) as first:  # type: ignore[arg-type]
        offsets = [await publish(broker, "calls:acme", n) for n in range(3)]
        got = await take(first, 3)
        await first.ack(got[0])
    async with GroupConsumer(REDIS, ["calls:acme"], **options) as again:  # type: ignore[arg-type]
        later = await publish(broker, "calls:acme", 3)
        got = await take(again, 3)
    assert [(d.offset, d.deliveries) for d in got] == [(offsets[1], 2), (offsets[2], 2),
                                                        (later, 1)]
    assert got[0].envelope.epoch == await broker.epoch("calls:acme")
    assert got[0].envelope.event == {"id": "ev-1", "n": 1}


async def test_a_redis_restart_is_survived(prefix: str) -> None:
    async with private_redis() as server:
        broker = RedisBroker(server.url, prefix=prefix, probe_interval=None)
        await broker.start()
        consumer = GroupConsumer(server.url, ["calls:acme"], group="hooks", consumer="w1",
                                 prefix=prefix, block=0.1)
        try:
            async with consumer:
                await publish(broker, "calls:acme", 0)
                [first] = await take(consumer, 1)
                await consumer.ack(first)
                await server.stop()
                reading = asyncio.ensure_future(take(consumer, 1))
                await asyncio.sleep(0.5)
                assert not reading.done()
                await server.start()  # empty: the group is created again, from the start
                async with asyncio.timeout(WAIT):
                    while True:
                        try:
                            offset = await publish(broker, "calls:acme", 1)
                            break
                        except Exception:
                            await asyncio.sleep(0.1)
                [second] = await reading
            assert second.offset == offset
            assert second.envelope.epoch == await broker.epoch("calls:acme")
        finally:
            await broker.close()


async def test_close_ends_a_waiting_iteration_promptly(prefix: str) -> None:
    consumer = GroupConsumer(REDIS, ["calls:acme"], group="hooks", consumer="w1", prefix=prefix,
                             block=5.0)
    async with consumer:
        reading = asyncio.ensure_future(take(consumer, 1))
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await consumer.close()
        assert await reading == []
        assert loop.time() - began < 1.0
