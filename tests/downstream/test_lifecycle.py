"""Token renewal and revocation, admission limits, idle reaping, and one stalled client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.auth.tokens import mint
from bridge.cluster.revocations import MemoryRevocations
from bridge.downstream import protocol as p
from tests.downstream.conftest import SCALE
from tests.downstream.harness import (
    JWT_SECRET,
    WAIT,
    StartBridge,
    client,
    close_code,
    recv,
    small_receive_buffer,
    subscribe,
    token,
)


async def renew(ws: Any, jwt: str) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "renew", "id": "n", "token": jwt}).decode())
    return await recv(ws)


async def test_renew_extends_the_connection_past_the_old_expiry(bridge: StartBridge) -> None:
    async with bridge(expiry_grace=0.5) as b, \
            client(b.url, token("calls:acme", ttl=1)) as (ws, welcome):
        assert welcome["expiry_grace"] == 0.5
        reply = await renew(ws, token("calls:acme", ttl=600))
        assert reply["type"] == "renewed" and reply["expires_at"] > welcome["expires_at"]
        await asyncio.sleep(max(0.0, welcome["expires_at"] + 0.5 - time.time()) + 0.2)
        await ws.send('{"type":"ping","id":1}')
        assert await recv(ws) == {"type": "pong", "id": 1}


async def test_renew_with_another_sub_or_a_bad_token_keeps_the_old_grant(
    bridge: StartBridge,
) -> None:
    async with bridge() as b, client(b.url, token("calls:acme", ttl=1)) as (ws, _):
        other = mint(JWT_SECRET, sub="someone-else", channels=["calls:acme"])
        assert (await renew(ws, other))["code"] == p.E_SUB_MISMATCH
        assert (await renew(ws, "x.y.z"))["code"] == p.E_TOKEN_REFUSED
        assert await close_code(ws) == p.TOKEN_EXPIRED  # the old grant still rules


async def test_renew_with_fewer_channels_unsubscribes_them(bridge: StartBridge) -> None:
    async with bridge() as b, client(b.url, token("calls:acme", "system:acme")) as (ws, _):
        await subscribe(ws, "calls:acme", "system:acme")
        assert await renew(ws, token("calls:acme")) == {
            "type": "unsubscribed", "id": None, "channels": ["system:acme"],
            "reason": "not_granted"}
        assert (await recv(ws))["type"] == "renewed"
        await b.publish("system:acme")
        offset, _ = await b.publish("calls:acme")
        assert (await recv(ws))["offset"] == offset


async def test_revocation_closes_open_connections_and_refuses_the_token(
    bridge: StartBridge,
) -> None:
    revocations = MemoryRevocations()
    async with bridge(revocations=revocations) as b:
        jwt = token("calls:acme", token_id="jti-1", ttl=600)
        async with client(b.url, jwt) as (ws, _), client(b.url, token("calls:acme")) as (ok, _):
            await revocations.revoke("jti-1", time.time() + 600)
            assert await close_code(ws) == p.TOKEN_REVOKED
            await ok.send('{"type":"ping"}')
            assert (await recv(ok))["type"] == "pong"
            assert (await renew(ok, jwt))["code"] == p.E_TOKEN_REVOKED
        async with connect(b.url) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": jwt}).decode())
            assert await close_code(ws) == p.TOKEN_REVOKED


async def test_connections_per_address_are_limited(bridge: StartBridge) -> None:
    async with bridge(max_connections_per_ip=2) as b:
        jwt = token("calls:acme")
        async with client(b.url, jwt) as (one, _):
            async with client(b.url, jwt) as (two, _):
                async with connect(b.url) as three:
                    assert await close_code(three) == p.TRY_AGAIN_LATER
            # `two` closed: its slot is released (once the server has seen the close).
            async with asyncio.timeout(WAIT * SCALE):
                while True:
                    try:
                        async with client(b.url, jwt) as (_, welcome):
                            assert welcome["type"] == "welcome"
                            break
                    except ConnectionClosed as exc:
                        assert exc.rcvd is not None and exc.rcvd.code == p.TRY_AGAIN_LATER
                    await asyncio.sleep(0.05)


async def test_origin_not_allowed_is_refused_before_the_handshake(bridge: StartBridge) -> None:
    async with bridge(allowed_origins=["https://app.example"]) as b:
        with pytest.raises(InvalidStatus) as info:
            async with connect(b.url, origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        for origin in ("https://app.example", None):
            async with client(b.url, token("calls:acme"), origin=origin) as (_, welcome):
                assert welcome["type"] == "welcome"


async def test_silent_client_is_reaped_and_a_pinging_one_is_not(bridge: StartBridge) -> None:
    async with bridge(heartbeat=0.1, idle_timeout=0.5) as b:
        async with client(b.url, token("calls:acme")) as (silent, welcome), \
                client(b.url, token("calls:acme")) as (chatty, _):
            assert welcome["idle_timeout"] == 0.5
            code_task = asyncio.create_task(close_code(silent))
            while not code_task.done():
                await chatty.send('{"type":"ping","id":"k"}')
                await asyncio.sleep(0.05)
            assert code_task.result() == p.CLIENT_IDLE
            await chatty.send('{"type":"ping","id":"last"}')
            async with asyncio.timeout(WAIT * SCALE):
                while (msg := orjson.loads(await chatty.recv())).get("id") != "last":
                    pass
            assert msg == {"type": "pong", "id": "last"}


async def test_one_stalled_client_does_not_hold_up_the_others(bridge: StartBridge) -> None:
    async with bridge(client_queue_bytes=64 * 1024) as b:
        port = int(b.url.rsplit(":", 1)[1].split("/")[0])
        jwt = token("calls:acme")
        async with client(b.url, jwt) as (f1, _), client(b.url, jwt) as (f2, _), \
                client(b.url, jwt) as (f3, _), client(
                    b.url, jwt, sock=small_receive_buffer(port), max_queue=1, ping_interval=None
                ) as (stalled, _):
            fast = [f1, f2, f3]
            for ws in fast + [stalled]:
                await subscribe(ws, "calls:acme")
            offsets: list[str] = []
            got: list[list[str]] = [[], [], []]
            latencies: list[float] = []
            extra = 50
            while extra:
                start = time.perf_counter()
                offset, _ = await b.publish("calls:acme", pad=8 * 1024)
                offsets.append(offset)
                for i, ws in enumerate(fast):
                    got[i].append((await recv(ws))["offset"])
                    latencies.append(time.perf_counter() - start)
                if b.hub.stats()["slow_consumers"]:
                    extra -= 1  # keep publishing after the stalled one is gone
            assert got == [offsets] * 3
            assert b.hub.stats()["slow_consumers"] == 1
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(WAIT * SCALE):
                    while True:
                        await stalled.recv()
            # A client that stopped reading may not get the close frame; if it does, 4008.
            assert info.value.rcvd is None or info.value.rcvd.code == p.SLOW_CONSUMER
            latencies.sort()
            print(f"fast clients: {len(offsets)} events each, latency p50 "
                  f"{latencies[len(latencies) // 2] * 1000:.2f} ms, "
                  f"max {latencies[-1] * 1000:.2f} ms")
