"""Closing legs whose end never came: the rules (pure), the closing event and its id, and the
closer task against a memory broker (two pipelines on one broker publish a closing once)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from bridge.brokers.base import BrokerError, Snapshot
from bridge.brokers.memory import MemoryBroker
from bridge.calls.change import apply
from bridge.calls.legs import change_for
from bridge.core import closing
from bridge.core.closer import SWEEP_CHUNK, Closer
from bridge.core.pipeline import Pipeline
from bridge.events.event import Durations, Event, EventType, Party

NOW = 1_800_000_000.0


def created(call_id: str, at: float, **fields: Any) -> Event:
    fields.setdefault("extension", "1001")
    fields.setdefault("caller", Party("1001", "Alice"))
    fields.setdefault("callee", Party("0912345678"))
    return Event(id=f"c-{call_id}", type=EventType.CREATED, provider="antbuddy",
                 tenant="acme", occurred_at=closing.iso(at), call_id=call_id,
                 account="acct", **fields)


def state(*events: Event) -> dict[str, dict[str, Any]]:
    """The records these events leave (the memory broker's rule)."""
    records: dict[str, dict[str, Any]] = {}
    tombstones: dict[str, float] = {}
    for event in events:
        change = change_for(event)
        if change is not None:
            apply(records, tombstones, change, NOW)
    return records


def completed(**fields: Any) -> Event:
    fields.setdefault("provider", "antbuddy")
    fields.setdefault("occurred_at", closing.iso(NOW - 100))
    return Event(id="done-1", type=EventType.COMPLETED, tenant="acme", **fields)


def test_closing_ids_are_deterministic_and_look_like_event_ids() -> None:
    first = closing.closing_id("acme", "leg-1", closing.MAX_AGE)
    assert re.fullmatch(r"[a-z2-7]{26}", first)
    assert first == closing.closing_id("acme", "leg-1", closing.MAX_AGE)
    assert first != closing.closing_id("acme", "leg-1", closing.RECONCILED)
    assert first != closing.closing_id("globex", "leg-1", closing.MAX_AGE)
    assert first != closing.closing_id("acme", "leg-2", closing.MAX_AGE)


def test_the_closing_event_carries_the_legs_fields() -> None:
    records = state(created("l-1", NOW - 10, bridge_id="b", other_leg_id="l-2",
                            direction="outgoing", leg_direction="inbound"))
    event = closing.closing_event("acme", records["leg:l-1"], closing.RECONCILED, NOW,
                                  {"completed_id": "done-1"})
    assert event.to_dict() == {
        "id": closing.closing_id("acme", "l-1", "reconciled"), "type": "call.ended",
        "provider": "antbuddy", "tenant": "acme", "occurred_at": closing.iso(NOW),
        "account": "acct", "call_id": "l-1", "other_leg_id": "l-2", "bridge_id": "b",
        "extension": "1001", "direction": "outgoing", "leg_direction": "inbound",
        "caller": {"number": "1001", "name": "Alice"},
        "callee": {"number": "0912345678", "name": None}, "upstream": {},
        "detail": {"closed_by": "reconciled", "completed_id": "done-1"}, "v": 1}
    assert change_for(event) is not None and change_for(event).end  # type: ignore[union-attr]


def test_iso_and_seconds_agree() -> None:
    assert closing.iso(NOW + 0.1239) == "2027-01-15T08:00:00.123Z"
    assert closing.seconds("2027-01-15T08:00:00.123Z") == pytest.approx(NOW + 0.123)
    assert closing.seconds("2027-01-15T08:00:00") == NOW
    assert closing.seconds("yesterday") is None and closing.seconds(None) is None


def test_aged_legs_are_those_older_than_the_limit() -> None:
    records = state(created("old", NOW - 500), created("new", NOW - 50))
    # A leg first seen by a hold (its create lost) is aged from that time.
    records["leg:held"] = {"call_id": "held", "held": True, "held_at": closing.iso(NOW - 900)}
    records["leg:timeless"] = {"call_id": "timeless"}
    assert [r["call_id"] for r in closing.aged(records, NOW, 100)] == ["held", "old"]
    assert closing.aged(records, NOW, 1000) == []


def test_a_record_naming_a_leg_closes_its_whole_call() -> None:
    records = state(created("a", NOW - 60, bridge_id="b-1"),
                    created("b", NOW - 59, bridge_id="b-1", other_leg_id="a", extension="1002"),
                    created("z", NOW - 60, extension="1009"))
    for ids in ({"call_id": "a"}, {"call_id": "b-1"}, {"bridge_id": "b-1"},
                {"other_leg_id": "b"}):
        found = closing.reconciled(records, completed(provider="quickom", **ids))
        assert sorted(r["call_id"] for r in found) == ["a", "b"], ids
    assert closing.reconciled(records, completed(call_id="nothing")) == []


@pytest.mark.parametrize(("fields", "closes"), [
    # AntBuddy's history: the parties (a number by its last nine digits) and the time.
    ({"caller": Party("1001"), "callee": Party("+84 912 345 678"),
      "durations": Durations(duration=30)}, True),
    ({"caller": Party("+84912345678"), "callee": Party("1001")}, True),
    # The live call started after the record's call ended: another call of the same parties.
    ({"occurred_at": closing.iso(NOW - 400), "caller": Party("1001"),
      "callee": Party("0912345678"), "durations": Durations(duration=60)}, False),
    ({"caller": Party("1001"), "callee": Party("0999999999")}, False),
    ({"caller": Party("1001")}, False),
    ({"provider": "epacific", "caller": Party("1001"), "callee": Party("0912345678")}, False),
    ({"occurred_at": "1970-01-01T00:00:00.000Z", "caller": Party("1001"),
      "callee": Party("0912345678")}, False),
    # Quickom writes its end as the time and the start in detail.
    ({"occurred_at": closing.iso(NOW), "detail": {"start_time": closing.iso(NOW - 98)},
      "caller": Party("1001"), "callee": Party("0912345678")}, True),
])
def test_a_record_without_live_ids_matches_by_parties_and_time(fields: dict[str, Any],
                                                                closes: bool) -> None:
    records = state(created("a", NOW - 98))
    found = closing.reconciled(records, completed(call_id="history-1", **fields))
    assert bool(found) is closes


# -- the task ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(*coros: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def ended_on(broker: MemoryBroker, channel: str) -> list[dict[str, Any]]:
    frames = [orjson.loads(f)["event"] for _, f in await broker.history(channel, None, 100)]
    return [e for e in frames if e["type"] == "call.ended"]


async def test_two_instances_closing_one_leg_publish_it_once() -> None:
    broker = MemoryBroker()
    await broker.start()
    one, two = Pipeline(broker), Pipeline(broker)
    closers = [Closer(broker, p.submit, lambda: ["acme"], max_call_age=10, sweep_interval=60)
               for p in (one, two)]
    async with running(one.run(), two.run()):
        assert one.submit(created("old", time.time() - 60))
        assert await one.drain(5)
        assert [await c.sweep() for c in closers] == [1, 1]
        assert await one.drain(5) and await two.drain(5)
        assert one.counts["published"] + two.counts["published"] == 2  # the create, one close
        assert one.counts["duplicates"] + two.counts["duplicates"] == 1
        assert (await broker.snapshot("calls:acme")).records == {}
        # The leg is gone: the next sweeps close nothing more.
        assert [await c.sweep() for c in closers] == [0, 0]
    ended = await ended_on(broker, "calls:acme")
    assert len(ended) == 1 and ended[0]["detail"] == {"closed_by": "max_age"}
    assert len(await ended_on(broker, "calls:acme:1001")) == 1


class FailingBroker(MemoryBroker):
    failures = 0

    async def snapshot(self, channel: str) -> Snapshot:
        if self.failures:
            self.failures -= 1
            raise BrokerError("connect failed")
        return await super().snapshot(channel)


async def test_reconciliation_waits_out_a_broker_that_cannot_answer() -> None:
    broker = FailingBroker()
    await broker.start()
    pipeline = Pipeline(broker)
    closer = Closer(broker, pipeline.submit, lambda: ["acme"], max_call_age=0,
                    sweep_interval=60, retry_delay=0.01)
    pipeline.on_published = closer.completed
    async with running(pipeline.run(), closer.run()):
        pipeline.submit(created("a", time.time() - 5))
        assert await pipeline.drain(5)
        broker.failures = 3
        pipeline.submit(completed(call_id="a", occurred_at=closing.iso(time.time())))
        for _ in range(200):
            if closer.counts["reconciled"]:
                break
            await asyncio.sleep(0.01)
        assert await pipeline.drain(5)
    assert closer.counts["read_errors"] == 3 and closer.counts["reconciled"] == 1
    assert (await broker.snapshot("calls:acme")).records == {}


async def test_a_full_reconciliation_queue_drops_and_counts() -> None:
    closer = Closer(MemoryBroker(), lambda event: True, lambda: [], max_call_age=0,
                    sweep_interval=60, queue_size=2)
    for n in range(3):
        closer.completed(completed(call_id=f"c-{n}"))
    closer.completed(created("not-completed", NOW))
    assert closer.counts["dropped"] == 1


async def test_a_sweep_stops_when_the_pipeline_is_full() -> None:
    broker = MemoryBroker()
    await broker.start()
    pipeline = Pipeline(broker)
    async with running(pipeline.run()):
        for n in range(3):
            pipeline.submit(created(f"old-{n}", time.time() - 60))
        assert await pipeline.drain(5)
    taken: list[Event] = []

    def submit(event: Event) -> bool:
        taken.append(event)
        return len(taken) < 2

    closer = Closer(broker, submit, lambda: ["acme", "acme"], max_call_age=10,
                    sweep_interval=60)
    assert await closer.sweep() == 1
    assert [e.call_id for e in taken] == ["old-0", "old-1"]


async def test_a_sweep_over_many_chunks_lets_events_through_and_closes_oldest_first() -> None:
    # A state larger than one chunk is looked at in parts, the event loop running between
    # them; what is closed, and its order, is as if it were looked at in one step.
    broker = MemoryBroker()
    await broker.start()
    now = time.time()
    count = 3 * SWEEP_CHUNK + 7
    pipeline = Pipeline(broker, queue_size=2 * count)
    async with running(pipeline.run()):
        for n in range(count):
            pipeline.submit(created(f"leg-{n:05d}", now - 100 - (n * 7919) % count))
        pipeline.submit(created("fresh", now))
        assert await pipeline.drain(30)
    taken: list[Event] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    closer = Closer(broker, lambda event: taken.append(event) is None, lambda: ["acme"],
                    max_call_age=50, sweep_interval=60)
    async with running(ticker()):
        assert await closer.sweep() == count
    records = (await broker.snapshot("calls:acme")).records
    assert [e.call_id for e in taken] == [
        leg["call_id"] for leg in closing.aged(records, time.time(), 50)]
    assert "fresh" not in {e.call_id for e in taken}
    assert ticks >= 3  # the loop ran between the chunks


class CountingBroker(MemoryBroker):
    reads = 0

    async def snapshot(self, channel: str) -> Snapshot:
        self.reads += 1
        return await super().snapshot(channel)


async def test_a_burst_of_completed_records_shares_one_read_of_the_state() -> None:
    # Each read costs the whole tenant state: records queued together are reconciled
    # against one read, and a leg named by two of them is closed once.
    broker = CountingBroker()
    await broker.start()
    pipeline = Pipeline(broker)
    start = time.time() - 30
    async with running(pipeline.run()):
        for n in range(50):
            pipeline.submit(created(f"leg-{n}", start, extension=f"{1000 + n}"))
        assert await pipeline.drain(5)
    closer = Closer(broker, pipeline.submit, lambda: ["acme"], max_call_age=0,
                    sweep_interval=60)
    for n in range(50):
        closer.completed(completed(call_id=f"leg-{n}", occurred_at=closing.iso(time.time())))
    closer.completed(completed(call_id="leg-0", occurred_at=closing.iso(time.time())))
    broker.reads = 0
    async with running(pipeline.run(), closer.run()):
        async with asyncio.timeout(10):
            while closer._completed:
                await asyncio.sleep(0.01)
        assert await pipeline.drain(5)
    assert broker.reads == 1
    assert closer.counts["reconciled"] == 50
    assert (await broker.snapshot("calls:acme")).records == {}
