"""How callbridge's server treats the connections it accepts."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from bridge.bench import lean
from bridge.bench.ceiling import app as accept_every_websocket
from bridge.http.frames import DirectFrames
from bridge.http.serving import AppServer


async def test_accepted_connections_send_small_frames_at_once() -> None:
    """TCP_NODELAY on every accepted connection: no frame waits for the previous one's ACK."""
    options: list[int] = []

    class Recording(DirectFrames):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            options.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async with AppServer(accept_every_websocket, ws=Recording) as server:
        client = await lean.connect(server.ws_url)
        try:
            async with asyncio.timeout(5):
                while not options:
                    await asyncio.sleep(0.01)
        finally:
            client.close()
    assert options == [1]
