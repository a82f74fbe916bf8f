"""Redis specifics: what outside consumers see, script reloads, reconnects, errors."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import traceback
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.brokers.base import BrokerError, ReplayStatus
from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.redis.wire import display_url, frame_offset
from bridge.calls.change import Change
from bridge.events.event import Event, EventType, envelope
from bridge.redisconn.clients import drop_prefix
from tests.support.redis_proxy import Proxy
from tests.support.redis_server import private_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
#: Safety net only: every wait ends as soon as what it awaits happens. Scale it on a slow
#: machine with CALLBRIDGE_TEST_TIMEOUT_SCALE.
WAIT = 5.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


def event_json(call_id: str = "c1") -> bytes:
    return Event(
        id=uuid.uuid4().hex,
        type=EventType.ANSWERED,
        provider="antbuddy",
        tenant="acme",
        occurred_at="2024-05-01T10:00:00.000Z",
        call_id=call_id,
    ).to_json()


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    plain = aioredis.Redis.from_url(REDIS_URL)
    yield plain
    await plain.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex}:"


@pytest.fixture
async def cleanup(prefix: str) -> AsyncIterator[None]:
    yield
    await drop_prefix(REDIS_URL, prefix)


@pytest.fixture
async def broker(prefix: str, cleanup: None) -> AsyncIterator[RedisBroker]:
    backend = RedisBroker(REDIS_URL, prefix=prefix, client_name=f"cb-{uuid.uuid4().hex}")
    await backend.start()
    yield backend
    await backend.close()


async def until(predicate: object, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


# -- pure helpers ------------------------------------------------------------------------------


def test_frame_offset_reads_the_offset_of_an_envelope() -> None:
    frame = envelope("calls:acme:101", "a1b2c3", "1714557600000-12", b'{"offset":"9-9"}')
    assert frame_offset(frame, b"calls:acme:101") == "1714557600000-12"


@pytest.mark.parametrize(
    "frame",
    [
        envelope("calls:other", "e1", "1-0", b"{}"),  # another channel's frame
        envelope("calls:acme", "e1", "1-0", b"{}")[:65],  # cut inside the offset
        envelope("calls:acme", "e1", "1-0", b"{}")[:50],  # cut inside the epoch
        envelope("calls:acme", "e-1", "1-0", b"{}"),  # not an epoch name
        b'{"type":"event","channel":"calls:acme","epoch":"e1","offset":"x-0","event":{}}',
        b'{"type":"event","channel":"calls:acme","offset":"1-0","event":{}}',  # no epoch
        b'{"channel":"calls:acme","type":"event","epoch":"e1","offset":"1-0","event":{}}',
        b'{"type":"event","channel":"calls:acme","epoch":"e1","offset":"1-0"}',
        b"hello",
        b"",
    ],
)
def test_frame_offset_rejects_other_messages(frame: bytes) -> None:
    assert frame_offset(frame, b"calls:acme") is None


def test_display_url_has_no_credentials() -> None:
    assert display_url("redis://user:pw@redis.internal:6380/2") == "redis://redis.internal:6380/2"
    assert display_url("rediss://:pw@h") == "rediss://h:6379/0"
    assert display_url("redis://h?db=3") == "redis://h:6379/3"


# -- what consumers outside callbridge see ------------------------------------------------------


async def test_plain_subscriber_gets_the_envelope_and_stream_holds_the_event(
    broker: RedisBroker, client: aioredis.Redis, prefix: str
) -> None:
    pubsub = client.pubsub()
    await pubsub.subscribe(prefix + "calls:acme")
    async with asyncio.timeout(WAIT):
        assert (await pubsub.get_message(timeout=None))["type"] == "subscribe"
    payload = event_json()
    offsets = await broker.publish(["calls:acme", "calls:acme:101"], payload)
    async with asyncio.timeout(WAIT):
        message = await pubsub.get_message(timeout=None)
    await pubsub.aclose()

    assert message["channel"] == (prefix + "calls:acme").encode()
    epoch = (await client.get(prefix + "{calls:acme}:epoch")).decode()
    # The Lua script builds the frame byte for byte as bridge.events.event.envelope() does.
    assert message["data"] == envelope("calls:acme", epoch, offsets[0], payload)
    parsed = orjson.loads(message["data"])
    assert parsed["event"] == orjson.loads(payload)
    assert (parsed["type"], parsed["channel"], parsed["epoch"], parsed["offset"]) == (
        "event",
        "calls:acme",
        await broker.epoch("calls:acme"),
        offsets[0],
    )
    for channel, offset in zip(["calls:acme", "calls:acme:101"], offsets):
        # Hash-tagged keys: a channel's stream and epoch share one cluster slot.
        entries = await client.xrange(prefix + "{" + channel + "}:stream")
        assert entries == [(offset.encode(), {b"e": payload})]
        assert await client.ttl(prefix + "{" + channel + "}:stream") == -1
        assert await client.ttl(prefix + "{" + channel + "}:epoch") == -1


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
async def test_redis_cli_subscriber_reads_events(broker: RedisBroker, prefix: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "redis-cli", "-h", "127.0.0.1", "-p", "6379", "SUBSCRIBE", prefix + "calls:acme",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            # Not a terminal: one line per reply element; the third confirms the subscription.
            confirmation = [await proc.stdout.readline() for _ in range(3)]
            assert confirmation[0].strip() == b"subscribe"
            payload = event_json("from-cli")
            (offset,) = await broker.publish(["calls:acme"], payload)
            lines = [await proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        await proc.wait()
    assert [line.strip() for line in lines[:2]] == [b"message", (prefix + "calls:acme").encode()]
    parsed = orjson.loads(lines[2])
    assert parsed["offset"] == offset
    assert parsed["event"]["call_id"] == "from-cli"


async def test_a_plain_client_reads_a_consistent_snapshot_with_multi_exec(
    broker: RedisBroker, client: aioredis.Redis, prefix: str
) -> None:
    at = "2024-05-01T10:00:00.000Z"
    created = Change("leg:c1", at, set={"extension": "101"}, setnx={"started_at": at},
                     max={"rank": 1})
    await broker.publish(["calls:acme"], event_json("c1"), change=created)
    await broker.publish(["calls:acme"], event_json("c2"), change=Change("leg:c2", at, end=True))
    # The recipe of docs/brokers.md ("Reading the live state from Redis").
    tag = prefix + "{calls:acme}"
    async with client.pipeline(transaction=True) as multi:
        multi.get(tag + ":epoch")
        multi.xinfo_stream(tag + ":stream")
        multi.hgetall(tag + ":state")
        epoch, info, state = await multi.execute()
    snapshot = await broker.snapshot("calls:acme")
    assert epoch.decode() == snapshot.epoch
    assert info["last-generated-id"].decode() == snapshot.offset
    assert {k.decode(): orjson.loads(v) for k, v in state.items()} == snapshot.records == {
        "leg:c1": {"extension": "101", "started_at": at, "rank": 1}}
    assert await client.zscore(tag + ":ended", "leg:c2") is not None
    assert await client.ttl(tag + ":state") == -1 and await client.ttl(tag + ":ended") == -1


# -- faults --------------------------------------------------------------------------------------


async def test_publish_reloads_the_script_after_script_flush(
    broker: RedisBroker, client: aioredis.Redis
) -> None:
    (first,) = await broker.publish(["calls:acme"], event_json())
    await client.script_flush("SYNC")
    (second,) = await broker.publish(["calls:acme"], event_json())
    assert [o for o, _ in await broker.history("calls:acme", None, 10)] == [first, second]
    assert await client.script_exists(broker._script.sha) == [True]


async def pubsub_client_ids(client: aioredis.Redis, name: str) -> list[int]:
    return [int(c["id"]) for c in await client.client_list(_type="pubsub") if c["name"] == name]


async def test_reader_recovers_after_its_connection_is_killed(
    broker: RedisBroker, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[tuple[str, str, bytes]] = []
    broker.set_handler(lambda *delivery: got.append(delivery))
    await broker.subscribe("calls:acme")
    await broker.subscribe("system:acme")
    (before,) = await broker.publish(["calls:acme"], event_json("before"))
    await until(lambda: len(got) == 1, "first delivery")
    name = broker._client.connection_pool.connection_kwargs["client_name"]
    (old_id,) = await pubsub_client_ids(client, name)  # only this broker's connection

    with caplog.at_level(logging.WARNING, logger="bridge.brokers.redis.broker"):
        assert await client.client_kill_filter(_id=old_id) == 1
        await until(lambda: broker.reconnects == 1 and broker.state == "connected", "reconnect")
    assert any("lost" in r.getMessage() for r in caplog.records)

    (new_id,) = await pubsub_client_ids(client, name)
    assert new_id != old_id
    offsets = await broker.publish(["calls:acme", "system:acme"], event_json("after"))
    await until(lambda: len(got) == 3, "deliveries after the reconnect")
    assert [(c, o) for c, o, _ in got] == [
        ("calls:acme", before),
        ("calls:acme", offsets[0]),
        ("system:acme", offsets[1]),
    ]


async def test_reader_waits_out_an_outage_and_resubscribes(prefix: str, cleanup: None) -> None:
    proxy = Proxy()
    await proxy.start()
    broker = RedisBroker(
        f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, connect_timeout=1.0, socket_timeout=1.0
    )
    got: list[tuple[str, str, bytes]] = []
    broker.set_handler(lambda *delivery: got.append(delivery))
    try:
        await broker.start()
        await broker.subscribe("calls:acme")
        await proxy.stop()
        await until(lambda: broker.state == "reconnecting", "the loss noticed")
        with pytest.raises(BrokerError):
            await broker.ping()
        with pytest.raises(BrokerError, match="position failed"):
            await broker.subscribe("system:acme")  # its position cannot be read: not kept
        await proxy.start()  # same port
        await until(lambda: broker.state == "connected", "reconnect")
        assert broker.reconnects == 1
        await broker.subscribe("system:acme")
        offsets = await broker.publish(["calls:acme", "system:acme"], event_json())
        await until(lambda: len(got) == 2, "deliveries after the outage")
        assert sorted((c, o) for c, o, _ in got) == sorted(
            zip(["calls:acme", "system:acme"], offsets))
    finally:
        await broker.close()
        await proxy.stop()


async def test_start_on_a_closed_port_names_the_address_not_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = RedisBroker("redis://:s3cret@127.0.0.1:1/0", connect_timeout=2.0)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(BrokerError) as raised:
            await broker.start()
        with pytest.raises(BrokerError) as pinged:
            await broker.ping()
    finally:
        await broker.close()
    assert broker.health()["errors"] == 2  # the start and the ping: counted for /metrics
    for exc in (raised.value, pinged.value):
        text = "".join(traceback.format_exception(exc))
        assert "127.0.0.1:1" in str(exc)
        assert "s3cret" not in text and "s3cret" not in repr(exc)
    assert "s3cret" not in repr(broker) + broker.display_url + caplog.text


async def test_close_is_idempotent_and_stops_delivery(
    broker: RedisBroker, client: aioredis.Redis, prefix: str
) -> None:
    got: list[object] = []
    broker.set_handler(lambda *delivery: got.append(delivery))
    await broker.subscribe("calls:acme")
    await broker.close()
    await broker.close()
    await client.publish(prefix + "calls:acme", envelope("calls:acme", "e1", "1-0", b"{}"))
    assert await client.pubsub_numsub(prefix + "calls:acme") == [
        ((prefix + "calls:acme").encode(), 0)
    ]
    assert got == []


async def test_probe_repairs_a_subscription_that_went_silent(prefix: str, cleanup: None) -> None:
    proxy = Proxy()
    await proxy.start()
    broker = RedisBroker(
        f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, probe_interval=0.05, probe_timeout=0.5
    )
    got: list[tuple[str, str, bytes]] = []
    broker.set_handler(lambda *delivery: got.append(delivery))
    try:
        await broker.start()
        await broker.subscribe("calls:acme")
        await until(lambda: broker.health()["last_probe_ok"] is not None, "a first probe")
        assert proxy.mute_subscribers() == 1
        (lost,) = await broker.publish(["calls:acme"], event_json("lost"))
        await until(lambda: broker.health()["probe_failures"] == 1, "the silence noticed")
        await until(lambda: broker.health()["state"] == "connected" and broker.reconnects == 1,
                    "the subscription re-established")
        (after,) = await broker.publish(["calls:acme"], event_json("after"))
        await until(lambda: len(got) == 2, "delivery on the new connection")
        # The muted one never came live: it was caught up from history, in order, once.
        assert [o for _, o, _ in got] == [lost, after]
        health = broker.health()
        assert health["subscriptions"] == 1 and health["probe_failures"] == 1
        assert (health["catch_ups"], health["caught_up_events"], health["gaps"]) == (1, 1, 0)
    finally:
        await broker.close()
        await proxy.stop()


async def test_health_reports_probes_and_subscriptions(broker: RedisBroker) -> None:
    assert set(broker.health()) == {
        "state", "reconnects", "errors", "probe_failures", "last_probe_ok", "subscriptions",
        "catching_up", "catch_ups", "caught_up_events", "gaps", "hold_overflows",
        "repeats_dropped",
    }
    await broker.subscribe("calls:acme")
    await broker.subscribe("system:acme")
    health = broker.health()
    assert (health["state"], health["subscriptions"], health["probe_failures"]) == (
        "connected", 2, 0
    )


async def test_dedup_mark_expires_with_the_window(
    prefix: str, cleanup: None, client: aioredis.Redis
) -> None:
    broker = RedisBroker(REDIS_URL, prefix=prefix, dedup_window=30.0)
    await broker.start()
    try:
        assert await broker.publish(["calls:acme"], event_json(), event_id="ev-1") is not None
        ttl = await client.pttl(prefix + "seen:ev-1")
        assert 0 < ttl <= 30_000
        await client.delete(prefix + "seen:ev-1")  # the window passed
        assert await broker.publish(["calls:acme"], event_json(), event_id="ev-1") is not None
        # A mark alone (no channels) still de-duplicates.
        assert await broker.publish([], event_json(), event_id="ev-2") == []
        assert await broker.publish(["calls:acme"], event_json(), event_id="ev-2") is None
    finally:
        await broker.close()


async def test_no_history_keeps_nothing_and_refuses_older_offsets(
    prefix: str, cleanup: None
) -> None:
    broker = RedisBroker(REDIS_URL, prefix=prefix, history_length=0)
    await broker.start()
    try:
        offsets = [(await broker.publish(["calls:acme"], event_json()))[0] for _ in range(3)]
        epoch = await broker.epoch("calls:acme")
        assert await broker.history("calls:acme", None, 10) == []
        latest = await broker.replay("calls:acme", epoch=epoch, after=offsets[-1], limit=10)
        assert (latest.status, latest.items) == (ReplayStatus.OK, [])
        for after in ("0-0", offsets[0], offsets[1]):
            result = await broker.replay("calls:acme", epoch=epoch, after=after, limit=10)
            assert result.status is ReplayStatus.TRIMMED
    finally:
        await broker.close()


# -- a private Redis: flushes, restarts, what the broker writes ------------------------------------


async def test_epoch_changes_when_redis_loses_its_data() -> None:
    async with private_redis() as server:
        broker = RedisBroker(server.url, prefix="cb:", connect_timeout=1.0, socket_timeout=1.0)
        got: list[tuple[str, str, bytes]] = []
        broker.set_handler(lambda *delivery: got.append(delivery))
        await broker.start()
        try:
            await broker.subscribe("calls:acme")
            (first,) = await broker.publish(["calls:acme"], event_json())
            await until(lambda: len(got) == 1, "delivery")
            old = orjson.loads(got[0][2])["epoch"]
            assert old == await broker.epoch("calls:acme")

            plain = aioredis.Redis.from_url(server.url)
            await plain.flushall()
            await plain.aclose()
            (second,) = await broker.publish(["calls:acme"], event_json())
            await until(lambda: len(got) == 2, "delivery after the flush")
            flushed = orjson.loads(got[1][2])["epoch"]
            assert flushed != old and flushed == await broker.epoch("calls:acme")
            stale = await broker.replay("calls:acme", epoch=old, after=first, limit=10)
            assert (stale.status, stale.epoch) == (ReplayStatus.EPOCH_CHANGED, flushed)

            await server.restart()  # no persistence: comes back empty
            await until(lambda: broker.state == "connected" and broker.reconnects >= 1,
                        "reconnect after the restart")
            third = None
            async with asyncio.timeout(WAIT):
                while third is None:  # the pool's first command may meet a dead connection
                    try:
                        (third,) = await broker.publish(["calls:acme"], event_json())
                    except BrokerError:
                        await asyncio.sleep(0.05)
            await until(lambda: len(got) == 3, "delivery after the restart")
            restarted = orjson.loads(got[2][2])["epoch"]
            assert restarted not in (old, flushed)
            again = await broker.replay("calls:acme", epoch=flushed, after=second, limit=10)
            assert again.status is ReplayStatus.EPOCH_CHANGED
            now = await broker.replay("calls:acme", epoch=restarted, after="0-0", limit=10)
            assert [o for o, _ in now.items] == [third]
        finally:
            await broker.close()


async def test_broker_writes_only_under_its_prefix() -> None:
    async with private_redis() as server:
        broker = RedisBroker(server.url, prefix="tenant-a:", probe_interval=0.05)
        await broker.start()
        plain = aioredis.Redis.from_url(server.url)
        try:
            await broker.subscribe("calls:acme")
            await broker.publish(["calls:acme", "system:acme"], event_json(), event_id="x1")
            await broker.epoch("calls:other")
            await until(lambda: broker.health()["last_probe_ok"] is not None, "a probe")
            keys = await plain.keys("*")
            channels = await plain.pubsub_channels()
            assert keys and channels
            assert all(k.startswith(b"tenant-a:") for k in keys + channels), keys + channels
            assert any(c.startswith(b"tenant-a:probe:") for c in channels)
        finally:
            await plain.aclose()
            await broker.close()


async def test_commands_raise_broker_error_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with private_redis() as server:
        url = server.url.replace("redis://", "redis://:pw-s3cret@")
        plain = aioredis.Redis.from_url(server.url)
        await plain.config_set("requirepass", "pw-s3cret")
        await plain.aclose()
        broker = RedisBroker(url, prefix="cb:", connect_timeout=0.5, socket_timeout=0.5)
        await broker.start()
        try:
            await server.stop(kill=True)
            calls = [
                broker.publish(["calls:acme"], event_json()),
                broker.publish(["calls:acme"], event_json(), event_id="e"),
                broker.epoch("calls:acme"),
                broker.history("calls:acme", None, 10),
                broker.replay("calls:acme", epoch="e1", after="1-0", limit=10),
                broker.ping(),
            ]
            with caplog.at_level(logging.DEBUG):
                for call in calls:
                    with pytest.raises(BrokerError) as raised:
                        await call
                    assert "pw-s3cret" not in str(raised.value)
                    assert str(server.port) in str(raised.value)
            assert "pw-s3cret" not in caplog.text
        finally:
            await broker.close()


async def test_a_busy_event_loop_is_not_taken_for_a_dead_subscription(broker: RedisBroker,
                                                                     prefix: str) -> None:
    """Under load the loop can be busy longer than the probe timeout while the probe's echo
    waits unread in the socket: that is no reason to drop the subscription (and, until it is
    back, to deliver only provisionally)."""
    busy = RedisBroker(REDIS_URL, prefix=prefix, probe_interval=0.05, probe_timeout=0.3)
    await busy.start()
    try:
        await until(lambda: busy.health()["last_probe_ok"] is not None, "a first probe")
        for _ in range(4):
            await asyncio.sleep(0.07)  # a probe goes out...
            time.sleep(0.6)  # ...and the loop is busy past its timeout
        await asyncio.sleep(0.2)
        assert (busy.health()["probe_failures"], busy.reconnects) == (0, 0)
    finally:
        await busy.close()


async def test_an_exhausted_pool_is_named_with_its_setting(prefix: str, cleanup: None) -> None:
    # Two connections: the pub/sub subscription holds one of them for good.
    broker = RedisBroker(REDIS_URL, prefix=prefix, max_connections=2, connect_timeout=0.3,
                         probe_interval=None)
    await broker.start()
    try:
        busy = asyncio.create_task(broker._client.blpop([f"{prefix}nothing"], timeout=2))
        await asyncio.sleep(0.1)  # the pool's one connection now waits in BLPOP
        with pytest.raises(BrokerError) as raised:
            await broker.publish(["calls:acme"], event_json())
        assert "connection pool exhausted (pool_size 2)" in str(raised.value)
        await busy
    finally:
        await broker.close()
