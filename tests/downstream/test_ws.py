"""The /ws endpoint under real uvicorn, with real websockets clients."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.downstream import protocol as p
from bridge.redisconn.clients import drop_prefix
from tests.downstream.conftest import SCALE
from tests.downstream.harness import (
    REDIS_URL,
    WAIT,
    StartBridge,
    client,
    close_code,
    recv,
    small_receive_buffer,
    subscribe,
    token,
)


async def test_auth_welcome_and_events(bridge: StartBridge) -> None:
    async with bridge() as b:
        jwt = token("calls:acme:*", ttl=600)
        async with client(b.url, jwt) as (ws, welcome):
            assert welcome["type"] == "welcome" and welcome["sub"] == "crm-1"
            assert welcome["heartbeat"] == 30.0
            assert time.time() + 590 < welcome["expires_at"] <= time.time() + 601
            assert isinstance(welcome["session"], str) and welcome["session"]
            epoch = await b.broker.epoch("calls:acme:1001")
            assert await subscribe(ws, "calls:acme:1001", cid=1) == {
                "type": "subscribed", "id": 1, "channels": ["calls:acme:1001"],
                "epochs": {"calls:acme:1001": epoch}, "offsets": {"calls:acme:1001": "0-0"}}
            sent = [await b.publish("calls:acme:1001") for _ in range(3)]
            for offset, event in sent:
                assert await recv(ws) == {"type": "event", "channel": "calls:acme:1001",
                                          "epoch": epoch, "offset": offset, "event": event}


@pytest.mark.parametrize(
    ("patterns", "allowed", "forbidden"),
    [
        (("calls:acme:*",), ["calls:acme:1001", "calls:acme:1002"],
         ["calls:acme", "calls:acme2", "calls:acme2:1001", "system:acme", "calls:acm:1001"]),
        (("calls:acme", "system:acme"), ["calls:acme", "system:acme"],
         ["calls:acme:1001", "calls:acme2", "system:acme2", "calls:ACME"]),
        (("calls:acme:10?",), ["calls:acme:101"], ["calls:acme:1011", "calls:acme:10"]),
    ],
)
async def test_client_reads_only_granted_channels(
    bridge: StartBridge, patterns: tuple[str, ...], allowed: list[str], forbidden: list[str]
) -> None:
    async with bridge() as b, client(b.url, token(*patterns)) as (ws, _):
        for channel in forbidden:
            reply = await subscribe(ws, channel, cid=channel)
            assert reply["type"] == "error" and reply["code"] == p.E_FORBIDDEN
            assert reply["id"] == channel
        # All or nothing: one forbidden channel refuses the whole request.
        reply = await subscribe(ws, allowed[0], forbidden[0])
        assert reply["code"] == p.E_FORBIDDEN
        assert (await subscribe(ws, *allowed))["type"] == "subscribed"
        expected = []
        for channel in forbidden + allowed + forbidden:
            offset, _ = await b.publish(channel)
            if channel in allowed:
                expected.append((channel, offset))
        await ws.send('{"type":"ping","id":"end"}')
        got = []
        while (msg := await recv(ws))["type"] == "event":
            got.append((msg["channel"], msg["offset"]))
        assert msg == {"type": "pong", "id": "end"}
        assert got == expected


async def test_star_stays_within_a_segment_and_double_star_crosses(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme*")) as (ws, _):
        assert (await subscribe(ws, "calls:acme", "calls:acme2"))["type"] == "subscribed"
        assert (await subscribe(ws, "calls:acme:7"))["code"] == p.E_FORBIDDEN
    async with bridge() as b, client(b.url, token("calls:acme:**")) as (ws, _):
        assert (await subscribe(ws, "calls:acme:7", "calls:acme:7:x"))["type"] == "subscribed"
        assert (await subscribe(ws, "calls:acme2:7"))["code"] == p.E_FORBIDDEN
        assert (await subscribe(ws, "calls:acme"))["code"] == p.E_FORBIDDEN


async def test_wildcards_are_not_channel_names(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme:*")) as (ws, _):
        assert (await subscribe(ws, "calls:acme:*"))["code"] == p.E_BAD_CHANNEL


async def test_forged_and_malformed_tokens_close_4001(bridge: StartBridge) -> None:
    forged = mint(secrets.token_urlsafe(32), sub="crm-1", channels=["calls:*"])
    async with bridge() as b:
        for jwt in (forged, "not-a-token", forged.rsplit(".", 1)[0] + "."):
            async with connect(b.url, compression=None) as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": jwt}).decode())
                assert await close_code(ws) == p.AUTH_FAILED


async def test_expired_token_closes_4003(bridge: StartBridge) -> None:
    async with bridge() as b, connect(b.url) as ws:
        await ws.send(orjson.dumps(
            {"type": "auth", "token": token("calls:acme", ttl=60, now=time.time() - 3600)}))
        assert await close_code(ws) == p.TOKEN_EXPIRED


async def test_no_auth_in_time_closes_4002(bridge: StartBridge) -> None:
    async with bridge(auth_timeout=0.2) as b, connect(b.url) as ws:
        assert await close_code(ws) == p.AUTH_TIMEOUT


async def test_other_first_message_is_a_protocol_error(bridge: StartBridge) -> None:
    async with bridge() as b, connect(b.url) as ws:
        await ws.send('{"type":"subscribe","channels":["calls:acme"]}')
        reply = await recv(ws)
        assert reply["type"] == "error" and reply["code"] == p.E_BAD_REQUEST
        assert await close_code(ws) == p.PROTOCOL_ERROR
    async with bridge() as b, connect(b.url) as ws:
        await ws.send("{oops")
        assert (await recv(ws))["code"] == p.E_MALFORMED
        assert await close_code(ws) == p.PROTOCOL_ERROR


async def test_token_expiring_while_connected_closes_4003(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme", ttl=1)) as (ws, welcome):
        assert welcome["type"] == "welcome"
        assert (await subscribe(ws, "calls:acme"))["type"] == "subscribed"
        assert await close_code(ws) == p.TOKEN_EXPIRED
        assert time.time() >= welcome["expires_at"]


async def test_bad_messages_get_errors_and_the_stream_goes_on(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme:*")) as (ws, _):
        assert (await subscribe(ws, "calls:acme:1001"))["type"] == "subscribed"
        bad = [("{nope", p.E_MALFORMED, None),
               ('{"type":"shout","id":"a"}', p.E_UNKNOWN_TYPE, "a"),
               ('{"type":"subscribe","id":"b","channels":["bad channel"]}', p.E_BAD_CHANNEL, "b"),
               ('{"type":"subscribe","id":"c","channels":["calls:other"]}', p.E_FORBIDDEN, "c"),
               ('{"type":"auth","token":"x.y.z"}', p.E_ALREADY_AUTHENTICATED, None)]
        for frame, code, cid in bad:
            offset, _ = await b.publish("calls:acme:1001")
            await ws.send(frame)
            event = await recv(ws)
            assert (event["type"], event["offset"]) == ("event", offset)
            error = await recv(ws)
            assert (error["type"], error["code"], error["id"]) == ("error", code, cid)
        offset, _ = await b.publish("calls:acme:1001")
        assert (await recv(ws))["offset"] == offset


async def test_unsubscribe_stops_delivery(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme:*")) as (ws, _):
        await subscribe(ws, "calls:acme:1", "calls:acme:2")
        await ws.send('{"type":"unsubscribe","id":"u","channels":["calls:acme:1"]}')
        assert await recv(ws) == {"type": "unsubscribed", "id": "u", "channels": ["calls:acme:1"]}
        await b.publish("calls:acme:1")
        offset, _ = await b.publish("calls:acme:2")
        msg = await recv(ws)
        assert (msg["channel"], msg["offset"]) == ("calls:acme:2", offset)
        assert b.hub.stats()["channels"] == 1


async def test_ping_pong(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme")) as (ws, _):
        for cid in ("p1", 42, None):
            await ws.send(orjson.dumps({"type": "ping", "id": cid}).decode())
            assert await recv(ws) == {"type": "pong", "id": cid}


async def test_server_heartbeat(bridge: StartBridge) -> None:
    async with bridge(heartbeat=0.05) as b, client(b.url, token("calls:acme")) as (ws, welcome):
        assert welcome["heartbeat"] == 0.05
        async with asyncio.timeout(WAIT * SCALE):
            beat = orjson.loads(await ws.recv())
        assert beat["type"] == "heartbeat" and isinstance(beat["ts"], float)


async def test_too_many_channels(bridge: StartBridge) -> None:
    async with bridge(max_channels=3) as b, client(b.url, token("calls:acme:*")) as (ws, _):
        assert (await subscribe(ws, "calls:acme:1", "calls:acme:2"))["type"] == "subscribed"
        reply = await subscribe(ws, "calls:acme:3", "calls:acme:4")
        assert reply["code"] == p.E_TOO_MANY_CHANNELS
        # Re-subscribing held channels is not counted twice; the refused request changed nothing.
        assert (await subscribe(ws, "calls:acme:1", "calls:acme:3"))["type"] == "subscribed"
        offset, _ = await b.publish("calls:acme:3")
        await b.publish("calls:acme:4")
        assert (await recv(ws))["offset"] == offset


async def test_oversized_message_closes_1009(bridge: StartBridge) -> None:
    async with bridge(max_message_bytes=1024) as b, client(b.url, token("calls:acme")) as (ws, _):
        await ws.send('{"type":"ping","id":"' + "é" * 500 + '"}')  # 500 characters, 1000 bytes
        assert (await recv(ws))["type"] == "error"  # fits: an id too long, not a frame too big
        await ws.send('{"type":"ping","id":"' + "é" * 520 + '"}')  # 520 characters, 1040 bytes
        assert await close_code(ws) == p.MESSAGE_TOO_BIG


async def test_close_all_sends_1012(bridge: StartBridge) -> None:
    async with bridge() as b:
        async with client(b.url, token("calls:acme")) as (one, _), \
                client(b.url, token("calls:acme")) as (two, _):
            await subscribe(one, "calls:acme")
            assert b.hub.stats()["clients"] == 2
            closing = asyncio.create_task(b.hub.close_all())
            assert await close_code(one) == p.SERVICE_RESTART
            assert await close_code(two) == p.SERVICE_RESTART
            async with asyncio.timeout(WAIT * SCALE):
                await closing
            assert b.hub.stats()["clients"] == 0 and b.hub.stats()["channels"] == 0


async def test_slow_client_is_closed_4008_and_others_keep_receiving(
    bridge: StartBridge,
) -> None:
    async with bridge(client_queue_bytes=64 * 1024) as b:
        port = int(b.url.rsplit(":", 1)[1].split("/")[0])
        jwt = token("calls:acme")
        async with client(b.url, jwt) as (fast, _), client(
            b.url, jwt, sock=small_receive_buffer(port), max_queue=1, ping_interval=None
        ) as (slow, _):
            await subscribe(fast, "calls:acme")
            await subscribe(slow, "calls:acme")
            # `slow` stops reading here. Each event is read by `fast` before the next is sent.
            offsets = []
            for _ in range(4000):
                offset, _ = await b.publish("calls:acme", pad=8 * 1024)
                offsets.append(offset)
                assert (await recv(fast))["offset"] == offset
                if b.hub.stats()["slow_consumers"]:
                    break
            assert b.hub.stats()["slow_consumers"] == 1
            # The slow client got an unbroken prefix of the stream, then 4008.
            got = []
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(WAIT * SCALE):
                    while True:
                        got.append(orjson.loads(await slow.recv())["offset"])
            assert info.value.rcvd is not None and info.value.rcvd.code == p.SLOW_CONSUMER
            assert got == offsets[: len(got)] and len(got) < len(offsets)
            # The fast one is unaffected.
            offset, _ = await b.publish("calls:acme")
            assert (await recv(fast))["offset"] == offset
            assert b.hub.stats()["clients"] == 1


async def test_redis_broker_end_to_end(bridge: StartBridge) -> None:
    try:
        from bridge.brokers.redis.broker import RedisBroker
    except ImportError:
        pytest.skip("bridge/brokers/redis/broker.py is not there yet")
    prefix = f"test-ws-{uuid.uuid4().hex}:"
    try:
        async with bridge(RedisBroker(REDIS_URL, prefix=prefix)) as b, \
                client(b.url, token("calls:acme:*")) as (ws, _):
            assert (await subscribe(ws, "calls:acme:1", "calls:acme:2"))["type"] == "subscribed"
            await b.publish("calls:acme2:1")
            first, event = await b.publish("calls:acme:1")
            assert await recv(ws) == {"type": "event", "channel": "calls:acme:1",
                                      "epoch": await b.broker.epoch("calls:acme:1"),
                                      "offset": first, "event": event}
            await ws.send('{"type":"unsubscribe","channels":["calls:acme:1"]}')
            assert (await recv(ws))["type"] == "unsubscribed"
            await b.publish("calls:acme:1")
            last, _ = await b.publish("calls:acme:2")
            msg = await recv(ws)
            assert (msg["channel"], msg["offset"]) == ("calls:acme:2", last)
    finally:
        await drop_prefix(REDIS_URL, prefix)
