"""callbridge's websocket protocol on real sockets: keepalive pings by one wheel per loop, a
peer that answers stays, one that does not is failed with 1011 within two intervals."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from bridge.bench.ceiling import app as accept_every_websocket
from bridge.http import frames
from bridge.http.frames import DirectFrames
from bridge.http.serving import AppServer

INTERVAL = 0.2


class RawClient(asyncio.Protocol):
    """A websocket client that records every frame and answers pings only when told to."""

    def __init__(self, url: str, answer: bool) -> None:
        self.proto = ClientProtocol(parse_uri(url))
        self.answer = answer
        self.frames: list[Frame] = []
        self.lost = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.proto.send_request(self.proto.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Frame):
                self.frames.append(event)
        if self.answer:
            self._flush()
        else:
            self.proto.data_to_send()  # drop the pongs (and everything else) unsent

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)

    def pings(self) -> int:
        return sum(1 for f in self.frames if f.opcode is Opcode.PING)


async def open_raw(server: AppServer, answer: bool) -> RawClient:
    loop = asyncio.get_running_loop()
    host, port = server.ws_url.split("//")[1].split("/")[0].split(":")
    _, client = await loop.create_connection(lambda: RawClient(server.ws_url, answer),
                                             host, int(port))
    return client


async def test_a_peer_that_answers_pings_stays_and_one_that_does_not_is_failed() -> None:
    async with AppServer(accept_every_websocket, ws=DirectFrames, ws_ping_interval=INTERVAL,
                         ws_ping_timeout=INTERVAL) as server:
        good = await open_raw(server, answer=True)
        silent = await open_raw(server, answer=False)
        async with asyncio.timeout(5):
            await silent.lost  # ping, no pong by the next visit: failed
        closes = [f for f in silent.frames if f.opcode is Opcode.CLOSE]
        assert silent.pings() == 1 and len(closes) == 1
        assert closes[0].data[:2] == (1011).to_bytes(2, "big")
        async with asyncio.timeout(5):  # pinged again and again, and answering: still open
            while good.pings() < 4:
                await asyncio.sleep(0.02)
        assert not good.lost.done()
        # One wheel for every connection of the loop, at this interval.
        wheel = frames._keepalives[asyncio.get_running_loop()][INTERVAL]
        assert len(wheel) == 1
        assert good.transport is not None
        good.transport.close()
        async with asyncio.timeout(5):
            while len(wheel):
                await asyncio.sleep(0.01)
        assert wheel._timer is None  # no connection left: no timer


async def test_no_pings_when_the_interval_is_unset() -> None:
    async with AppServer(accept_every_websocket, ws=DirectFrames,
                         ws_ping_interval=None) as server:
        client = await open_raw(server, answer=False)
        await asyncio.sleep(0.5)
        assert client.pings() == 0 and not client.lost.done()
        assert client.transport is not None
        client.transport.close()
