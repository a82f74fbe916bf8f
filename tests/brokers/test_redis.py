"""Redis specifics: what outside consumers see, script reloads, reconnects, errors."""

from __future__ import annotations

import asyncio
import os
import logging
import shutil
import traceback
import uuid
from typing import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from bridge.brokers.base import BrokerError
from bridge.brokers.redis import RedisBroker
from bridge.brokers.redis_wire import display_url, frame_offset
from bridge.events import Event, EventType, envelope

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
async def cleanup(client: aioredis.Redis, prefix: str) -> AsyncIterator[None]:
    yield
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await client.delete(*keys)


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
    frame = envelope("calls:acme:101", "1714557600000-12", b'{"offset":"9-9"}')
    assert frame_offset(frame, b"calls:acme:101") == "1714557600000-12"


@pytest.mark.parametrize(
    "frame",
    [
        envelope("calls:other", "1-0", b"{}"),  # another channel's frame
        envelope("calls:acme", "1-0", b"{}")[:51],  # cut inside the offset
        b'{"type":"event","channel":"calls:acme","offset":"x-0","event":{}}',
        b'{"channel":"calls:acme","type":"event","offset":"1-0","event":{}}',
        b'{"type":"event","channel":"calls:acme","offset":"1-0"}',
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
    # The Lua script builds the frame byte for byte as bridge.events.envelope() does.
    assert message["data"] == envelope("calls:acme", offsets[0], payload)
    parsed = orjson.loads(message["data"])
    assert parsed["event"] == orjson.loads(payload)
    assert (parsed["type"], parsed["channel"], parsed["offset"]) == (
        "event",
        "calls:acme",
        offsets[0],
    )
    for channel, offset in zip(["calls:acme", "calls:acme:101"], offsets):
        entries = await client.xrange(f"{prefix}stream:{channel}")
        assert entries == [(offset.encode(), {b"e": payload})]


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

    with caplog.at_level(logging.WARNING, logger="bridge.brokers.redis"):
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


class Proxy:
    """A loopback TCP relay to the test Redis that can drop every connection and refuse new ones."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass


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
        with pytest.raises(BrokerError, match="not confirmed"):
            await broker.subscribe("system:acme")  # kept, and made on reconnect
        await proxy.start()  # same port
        await until(lambda: broker.state == "connected", "reconnect")
        assert broker.reconnects == 1
        offsets = await broker.publish(["calls:acme", "system:acme"], event_json())
        await until(lambda: len(got) == 2, "deliveries after the outage")
        assert sorted((c, o) for c, o, _ in got) == sorted(zip(["calls:acme", "system:acme"], offsets))
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
    await client.publish(prefix + "calls:acme", envelope("calls:acme", "1-0", b"{}"))
    assert await client.pubsub_numsub(prefix + "calls:acme") == [
        ((prefix + "calls:acme").encode(), 0)
    ]
    assert got == []
