"""``"state": true``: a ``state`` message before a channel's first event, then every later event
live, with no gap and no duplicate; with a resume, in place of a gap only."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any, AsyncIterator, Callable

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from bridge.brokers.base import Broker, BrokerError, Snapshot, offset_key
from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.calls import view
from bridge.calls.change import Change, Record, apply
from bridge.calls.legs import change_for
from bridge.core.pipeline import channels_for
from bridge.downstream import protocol as p
from bridge.events.event import Event, EventType, Party
from tests.downstream.conftest import SCALE
from tests.downstream.harness import WAIT, StartBridge, client, close_code, recv, token
from tests.support.redis_server import private_redis

TENANT = "acme"
CH = "calls:acme"
EXT = "calls:acme:1001"
GRANT = ("calls:acme", "calls:acme:*", "presence:acme", "system:acme")

MakeBroker = Callable[..., contextlib.AbstractAsyncContextManager[Broker]]


@contextlib.asynccontextmanager
async def _memory(history_length: int = 1000) -> AsyncIterator[Broker]:
    yield MemoryBroker(history_length=history_length)


class SlowSnapshots(MemoryBroker):
    """A memory broker whose snapshots take a while before and after the read, as a remote
    one does: events published meanwhile reach the hold on both sides of the offset."""

    async def snapshot(self, channel: str) -> Snapshot:
        await asyncio.sleep(0.05)
        snapshot = await super().snapshot(channel)
        await asyncio.sleep(0.05)
        return snapshot


@contextlib.asynccontextmanager
async def _slow_memory(history_length: int = 1000) -> AsyncIterator[Broker]:
    yield SlowSnapshots(history_length=history_length)


@contextlib.asynccontextmanager
async def _redis(history_length: int = 1000) -> AsyncIterator[Broker]:
    async with private_redis() as server:
        yield RedisBroker(server.url, prefix="cb:", history_length=history_length)


@pytest.fixture(params=[
    "memory",
    "memory-slow",
    "redis",
])
def make_broker(request: pytest.FixtureRequest) -> MakeBroker:
    """Each test on every broker that keeps live state: ``async with make_broker() as b``."""
    return {"memory": _memory, "memory-slow": _slow_memory, "redis": _redis}[request.param]


class Calls:
    """Publishes call events with their changes, as the pipeline does, and keeps what it
    published: each channel's ``(offset, change)`` in order, the reference a client's view is
    checked against."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.log: dict[str, list[tuple[str, Change | None]]] = {}

    async def event(self, kind: str, call_id: str | None = None, extension: str | None = None,
                    detail: dict[str, Any] | None = None) -> dict[str, str]:
        now = time.time()
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
            f".{int(now * 1000) % 1000:03d}Z"
        event = Event(id=uuid.uuid4().hex, type=kind, provider="test", tenant=TENANT,
                      occurred_at=at, call_id=call_id, extension=extension,
                      caller=Party(number="+15550100") if call_id else None,
                      detail=detail)
        channels = channels_for(event)
        change = change_for(event)
        offsets = await self.broker.publish(channels, event.to_json(), event_id=event.id,
                                            change=change)
        assert offsets is not None
        for channel, offset in zip(channels, offsets):
            self.log.setdefault(channel, []).append((offset, change))
        return dict(zip(channels, offsets))

    def records(self, channel: str, upto: str | None = None) -> dict[str, Record]:
        """The channel's records after its changes up to ``upto`` (all when None)."""
        records: dict[str, Record] = {}
        tombstones: dict[str, float] = {}
        for offset, change in self.log.get(channel, []):
            if upto is not None and offset_key(offset) > offset_key(upto):
                break
            if change is not None:
                apply(records, tombstones, change, time.time())
        return records


async def send(ws: ClientConnection, **msg: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", "id": "s", **msg}).decode())
    return await recv(ws)


async def test_state_on_connect_mid_call_shows_the_ongoing_calls(
        bridge: StartBridge, make_broker: MakeBroker) -> None:
    async with make_broker() as broker, bridge(broker) as b:
        calls = Calls(b.broker)
        await calls.event(EventType.CREATED, "a1", "1001")
        await calls.event(EventType.ANSWERED, "a1", "1001")
        await calls.event(EventType.CREATED, "b1", "1002")
        await calls.event(EventType.CREATED, "c1", "1003")
        await calls.event(EventType.ENDED, "c1", "1003")
        await calls.event(EventType.PRESENCE, detail={"extension": "1001", "online": True})
        async with client(b.url, token(*GRANT)) as (ws, _):
            reply = await send(ws, channels=[CH, "presence:acme", "system:acme"], state=True)
            assert reply["type"] == "subscribed"
            states = [await recv(ws) for _ in range(3)]
            assert [s["channel"] for s in states] == [CH, "presence:acme", "system:acme"]
            for s in states:
                assert s["type"] == "state" and s["id"] == "s"
                # The subscribed reply gives the state's position.
                assert (s["epoch"], s["offset"]) == (reply["epochs"][s["channel"]],
                                                     reply["offsets"][s["channel"]])
            tenant, presence, system = states
            assert tenant["offset"] == calls.log[CH][-1][0]
            assert [(c["call_id"], c["state"]) for c in tenant["calls"]] == [
                ("a1", "answered"), ("b1", "ringing")]
            assert [(e["extension"], e["status"]) for e in tenant["extensions"]] == [
                ("1001", "talking"), ("1002", "ringing")]
            assert "online" not in tenant["extensions"][0]  # presence is its own channel's
            assert presence["calls"] == []
            assert presence["extensions"] == [
                {"extension": "1001", "status": "idle", "calls": [], "online": True}]
            assert (system["calls"], system["extensions"]) == ([], [])
            # Then live events, newer than the state.
            offsets = await calls.event(EventType.ENDED, "a1", "1001")
            event = await recv(ws)
            assert (event["type"], event["channel"], event["offset"]) == (
                "event", CH, offsets[CH])


async def test_state_then_every_event_once_while_events_pour_in(
        bridge: StartBridge, make_broker: MakeBroker) -> None:
    """A publisher runs at ~200 events/s, each with its change, before, during and after the
    subscribe: the state plus the events that follow it is the channel's final state, and
    the events are exactly those published after the state's offset, in order."""
    async with make_broker() as broker, bridge(broker) as b:
        calls = Calls(b.broker)
        stop = asyncio.Event()

        async def publisher() -> None:
            n = 0
            while not stop.is_set():
                call, extension = f"c{n // 3}", f"10{n % 7:02d}"
                kind = (EventType.CREATED, EventType.ANSWERED, EventType.ENDED)[n % 3]
                if n % 3 == 2 and n % 9 == 8:
                    kind = EventType.HELD  # some calls stay up until the end
                await calls.event(kind, call, extension)
                n += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        try:
            await asyncio.sleep(0.5)
            async with client(b.url, token(*GRANT)) as (ws, _):
                reply = await send(ws, channels=[CH], state=True)
                assert reply["type"] == "subscribed"
                state = await recv(ws)
                assert state["type"] == "state"
                assert reply["offsets"][CH] == state["offset"]
                await asyncio.sleep(1.5)
                stop.set()
                await task
                last = calls.log[CH][-1][0]
                offsets: list[str] = []
                async with asyncio.timeout(WAIT * SCALE):
                    while not offsets or offsets[-1] != last:
                        msg = await recv(ws)
                        assert msg["type"] == "event", msg
                        offsets.append(msg["offset"])
        finally:
            stop.set()
            await task
        # The state is exactly that of the events up to its offset.
        mine = calls.records(CH, upto=state["offset"])
        assert (state["calls"], state["extensions"]) == (view.calls(mine), view.extensions(mine))
        # Then every later event once, in order: none at or below the state's offset.
        published = [o for o, _ in calls.log[CH]]
        after = [o for o in published if offset_key(o) > offset_key(state["offset"])]
        assert offsets == after and len(after) > 100
        # Folding them onto the state gives the broker's final state.
        changes = dict(calls.log[CH])
        tombstones: dict[str, float] = {}
        for offset in offsets:
            change = changes[offset]
            if change is not None:
                apply(mine, tombstones, change, time.time())
        final = await b.broker.snapshot(CH)
        assert final.offset == last
        assert mine == final.records
        assert view.calls(final.records), "some calls are still up"


async def test_an_extension_channel_gets_only_its_extension(
        bridge: StartBridge, make_broker: MakeBroker) -> None:
    async with make_broker() as broker, bridge(broker) as b:
        calls = Calls(b.broker)
        await calls.event(EventType.CREATED, "a1", "1001")
        await calls.event(EventType.CREATED, "b1", "1002")
        async with client(b.url, token(*GRANT)) as (ws, _):
            assert (await send(ws, channels=[EXT, "calls:acme:1009"], state=True))[
                "type"] == "subscribed"
            mine, other = await recv(ws), await recv(ws)
            assert [c["call_id"] for c in mine["calls"]] == ["a1"]
            assert mine["extensions"] == [
                {"extension": "1001", "status": "ringing", "calls": ["a1"]}]
            # An extension nothing is known of is listed, idle.
            assert other["calls"] == []
            assert other["extensions"] == [{"extension": "1009", "status": "idle", "calls": []}]


async def test_a_channel_held_already_gets_no_second_state(bridge: StartBridge) -> None:
    async with bridge() as b:
        calls = Calls(b.broker)
        await calls.event(EventType.CREATED, "a1", "1001")
        async with client(b.url, token(*GRANT)) as (ws, _):
            assert (await send(ws, channels=[CH], state=True))["type"] == "subscribed"
            assert (await recv(ws))["type"] == "state"
            reply = await send(ws, channels=[CH, EXT], state=True)
            assert reply["channels"] == [CH, EXT]
            state = await recv(ws)
            assert (state["type"], state["channel"]) == ("state", EXT)
            await ws.send('{"type":"ping","id":1}')
            assert await recv(ws) == {"type": "pong", "id": 1}


async def subscribe_resume(ws: ClientConnection, channel: str, epoch: str,
                           offset: str) -> dict[str, Any]:
    return await send(ws, channels=[channel], state=True,
                      resume={channel: {"epoch": epoch, "offset": offset}})


async def test_a_resume_history_covers_gets_the_missed_events_and_no_state(
        bridge: StartBridge, make_broker: MakeBroker) -> None:
    async with make_broker() as broker, bridge(broker) as b:
        calls = Calls(b.broker)
        seen = (await calls.event(EventType.CREATED, "a1", "1001"))[CH]
        epoch = (await b.broker.position(CH))[0]
        missed = [(await calls.event(EventType.ANSWERED, "a1", "1001"))[CH],
                  (await calls.event(EventType.CREATED, "b1", "1002"))[CH]]
        async with client(b.url, token(*GRANT)) as (ws, _):
            assert (await subscribe_resume(ws, CH, epoch, seen))["type"] == "subscribed"
            assert [(await recv(ws))["offset"] for _ in missed] == missed
            live = (await calls.event(EventType.ENDED, "b1", "1002"))[CH]
            assert (await recv(ws))["offset"] == live
        assert b.hub.resumes == {"ok": 1}


@pytest.mark.parametrize("lost", ["trimmed", "epoch_changed", "too_old"])
async def test_a_resume_history_no_longer_covers_gets_the_state_instead_of_a_gap(
        bridge: StartBridge, lost: str) -> None:
    async with bridge(MemoryBroker(history_length=5), history_max_age=600.0) as b:
        calls = Calls(b.broker)
        seen = (await calls.event(EventType.CREATED, "a1", "1001"))[CH]
        epoch = (await b.broker.position(CH))[0]
        for n in range(10):
            await calls.event(EventType.CREATED, f"b{n}", "1002")
        if lost == "epoch_changed":
            epoch = "lostepoch"
        elif lost == "too_old":
            seen = f"{int((time.time() - 3600) * 1000)}-0"
        else:
            seen = calls.log[CH][2][0]  # trimmed away since
        async with client(b.url, token(*GRANT)) as (ws, _):
            reply = await subscribe_resume(ws, CH, epoch, seen)
            assert reply["type"] == "subscribed"
            state = await recv(ws)
            assert (state["type"], state["id"], state["channel"]) == ("state", "s", CH)
            assert state["offset"] == calls.log[CH][-1][0]
            assert len(state["calls"]) == 11
            live = (await calls.event(EventType.ENDED, "a1", "1001"))[CH]
            assert (await recv(ws))["offset"] == live
        assert b.hub.resumes == {lost: 1}


class FailingSnapshots(MemoryBroker):
    """A broker whose snapshots fail (``error``) or never answer (``hang``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    async def snapshot(self, channel: str) -> Snapshot:
        if self.how == "hang":
            await asyncio.sleep(3600)
        raise BrokerError("connection refused")


@pytest.mark.parametrize("how", ["error", "hang"])
async def test_no_snapshot_refuses_the_subscribe_with_a_retry_code(
        bridge: StartBridge, how: str) -> None:
    async with bridge(FailingSnapshots(how), broker_timeout=0.3) as b:
        async with client(b.url, token(*GRANT)) as (ws, _):
            reply = await send(ws, channels=[EXT, CH], state=True)
            assert (reply["type"], reply["id"], reply["code"]) == ("error", "s", p.E_UNAVAILABLE)
            assert b.hub.stats()["subscriptions"] == 0  # all or nothing
            await Calls(b.broker).event(EventType.CREATED, "a1", "1001")
            await ws.send('{"type":"ping","id":1}')
            assert await recv(ws) == {"type": "pong", "id": 1}  # no event came
            # Without state the same channels subscribe.
            assert (await send(ws, channels=[EXT, CH]))["type"] == "subscribed"


async def test_a_resume_that_needs_a_state_the_broker_cannot_give_gets_the_gap(
        bridge: StartBridge) -> None:
    async with bridge(FailingSnapshots("error")) as b:
        epoch = (await b.broker.position(CH))[0]
        async with client(b.url, token(*GRANT)) as (ws, _):
            assert (await subscribe_resume(ws, CH, "lostepoch", "1-0"))["type"] == "subscribed"
            assert await recv(ws) == {"type": "gap", "channel": CH, "reason": "epoch_changed",
                                      "epoch": epoch}


async def test_a_state_larger_than_the_client_buffer_comes_whole_and_the_client_stays(
        bridge: StartBridge) -> None:
    """5,000 calls, about 1 MB of JSON, to a client whose buffer is 64 KiB: one frame, and the
    live events published meanwhile follow it."""
    broker = MemoryBroker(history_length=10)
    async with bridge(broker, client_queue_bytes=64 * 1024, max_channels=10) as b:
        calls = Calls(b.broker)
        for n in range(5000):
            await calls.event(EventType.CREATED, f"call-{n:05d}-{uuid.uuid4().hex}", "1001")
        async with client(b.url, token(*GRANT), max_size=None) as (ws, _):
            await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "channels": [CH],
                                        "state": True}).decode())
            for _ in range(20):  # live events while the state is built and sent
                await calls.event(EventType.CREATED, "late", "1002")
                await asyncio.sleep(0.002)
            assert (await recv(ws))["type"] == "subscribed"
            async with asyncio.timeout(WAIT * SCALE):
                raw = await ws.recv()
            assert len(raw) > 64 * 1024
            state = orjson.loads(raw)
            assert state["type"] == "state" and len(state["calls"]) == 5000 + (
                state["offset"] > calls.log[CH][4999][0])
            after = [o for o, _ in calls.log[CH] if offset_key(o) > offset_key(state["offset"])]
            assert [(await recv(ws))["offset"] for _ in after] == after
            assert b.hub.stats()["slow_consumers"] == 0


async def test_a_client_that_stops_reading_a_large_state_is_closed_4008(
        bridge: StartBridge) -> None:
    """The state is sent whole, but the buffer still bounds what waits behind it."""
    async with bridge(client_queue_bytes=16 * 1024) as b:
        calls = Calls(b.broker)
        for n in range(200):
            await calls.event(EventType.CREATED, f"call-{n:04d}", "1001")
        async with client(b.url, token(*GRANT), max_size=None, max_queue=1) as (ws, _):
            await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "channels": [CH],
                                        "state": True}).decode())
            # The client reads nothing more; events keep coming, each 2 KiB.
            async with asyncio.timeout(WAIT * 4 * SCALE):
                while b.hub.stats()["slow_consumers"] == 0:
                    await calls.event(EventType.CREATED, "late", "1002", {"pad": "x" * 2048})
                    await asyncio.sleep(0.001)
            assert await close_code(ws) == p.SLOW_CONSUMER
