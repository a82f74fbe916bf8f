"""The ceiling delivers exactly what Redis carries, with either feed, and drops a slow client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import uuid

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from bridge.bench import feeds
from bridge.bench.ceiling import Fanout

REDIS = "redis://127.0.0.1:6379/0"


async def start_ceiling(channel: str, feed: str) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bridge.bench.ceiling", "--redis", REDIS, "--channel", channel,
         "--feed", feed], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 30)
    found = re.search(r"listening on (ws://\S+)", line)
    assert found, line
    return server, found.group(1)


@pytest.mark.parametrize("feed", feeds.FEEDS)
async def test_every_client_gets_every_message_byte_for_byte(feed):
    channel = f"callbridge-test:ceiling:{uuid.uuid4().hex}"
    server, url = await start_ceiling(channel, feed)
    # Sizes across the three websocket length encodings: 7 bits, 16 bits, 64 bits.
    messages = ['{"n":0}', '{"n":1,"pad":"' + "x" * 300 + '"}',
                '{"n":2,"pad":"' + "é" * 40_000 + '"}']
    publisher = aioredis.Redis.from_url(REDIS)
    try:
        clients = [await connect(url, max_size=2**20) for _ in range(3)]
        for m in messages:
            await publisher.publish(channel, m)
        for ws in clients:
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in messages]
            assert got == messages
            await ws.close()
    finally:
        await publisher.aclose()
        server.terminate()
        server.wait(15)
        assert server.stdout is not None
        server.stdout.close()


async def test_a_client_that_stops_reading_is_dropped_and_the_others_are_not():
    loop = asyncio.get_running_loop()
    first_accepted, finished = asyncio.Event(), asyncio.Event()
    accepted: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        if not first_accepted.is_set():  # the first client reads, the second never does
            first_accepted.set()
            with contextlib.suppress(ConnectionError):
                while await reader.read(1 << 16):
                    pass
        else:
            await finished.wait()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fanout = Fanout(max_unsent=1 << 20)
    transports = []
    for _ in range(2):
        t, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transports.append(t)
        fanout.transports.add(t)
        await asyncio.wait_for(first_accepted.wait(), 10)  # the reader is the first
    try:
        async with asyncio.timeout(30):
            while not fanout.dropped:
                fanout.send([b"x" * 65536])
                await asyncio.sleep(0.001)  # the reading client drains meanwhile
        assert fanout.dropped == 1
        assert fanout.transports == {transports[0]}
    finally:
        finished.set()
        for t in transports:
            t.abort()
        for w in accepted:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in accepted), return_exceptions=True)
        server.close()
        await server.wait_closed()
