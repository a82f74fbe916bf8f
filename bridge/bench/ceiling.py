"""The ceiling: the cheapest fan-out of Redis messages on callbridge's own server stack.

Run as ``python -m bridge.bench.ceiling --redis URL --channel NAME [--feed resp|redis-py]``.
It serves websockets the way ``callbridge serve`` does: uvicorn on a plain asyncio loop, through
:class:`bridge.http.serving.AppServer`, with callbridge's websocket protocol (uvicorn's
websockets sans-I/O one with callbridge's keepalive; no compression, the same ping interval).
It subscribes to the Redis pub/sub channel(s) where callbridge's Redis broker publishes
envelopes and sends each message, unchanged, as a text frame to every connected client: no
auth, no channels, no history.

What makes it the floor of the per-delivery cost: each message's frame is encoded once
(header and payload, never per client) and the same bytes are written to every client's
transport straight from the feed's callback; there is no per-client buffer, task or future,
and no ASGI call per frame. The Redis feed is chosen by ``--feed`` (:mod:`bridge.bench.feeds`).

A client whose unsent bytes pass what callbridge lets a client hold (its 1 MiB buffer plus the
transport's 64 KiB high-water mark) is dropped, as callbridge closes a slow consumer. It prints
``ceiling listening on ws://...`` once subscribed and serving.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from starlette.types import Receive, Scope, Send

from bridge.bench import feeds
from bridge.downstream.link import text_frame
from bridge.http.frames import DirectFrames
from bridge.http.serving import AppServer

#: callbridge's default ``client_queue_bytes`` plus asyncio's default write high-water mark.
MAX_UNSENT = (1 << 20) + 64 * 1024
#: callbridge's default websocket ping interval (``[server] ping_interval``).
PING_INTERVAL = 20.0


class Fanout:
    """The open connections' transports, and the one write per frame per client."""

    def __init__(self, max_unsent: int = MAX_UNSENT) -> None:
        self.transports: set[asyncio.Transport] = set()
        self.max_unsent = max_unsent
        self.dropped = 0

    def send(self, payloads: list[bytes]) -> None:
        """Write every payload, framed once, to every open transport."""
        transports = self.transports
        for payload in payloads:
            data = text_frame(payload)
            for t in transports:
                t.write(data)
        slow = [t for t in transports if t.get_write_buffer_size() > self.max_unsent]
        for t in slow:
            self.transports.discard(t)
            self.dropped += 1
            t.abort()


class FanoutProtocol(DirectFrames):
    """callbridge's websockets protocol (uvicorn's, with its keepalive wheel), registering its
    transport once the handshake is done."""

    fanout: Fanout  # set on the subclass made by :func:`protocol_for`

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and not self.transport.is_closing():
            self.fanout.transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fanout.transports.discard(self.transport)
        super().connection_lost(exc)


def protocol_for(fanout: Fanout) -> type[FanoutProtocol]:
    return type("BoundFanoutProtocol", (FanoutProtocol,), {"fanout": fanout})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept every websocket and wait for its end; frames are written by :class:`Fanout`."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def run(port: int, redis_url: str, channels: list[str], feed: str) -> None:
    fanout = Fanout()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = AppServer(app, port=port, graceful_timeout=5.0, ws=protocol_for(fanout),
                       ws_ping_interval=PING_INTERVAL, ws_ping_timeout=PING_INTERVAL,
                       ws_max_size=65536)
    async with feeds.opener(feed)(redis_url, channels, fanout.send) as lost:
        await server.start()
        try:
            print(f"ceiling listening on {server.ws_url}", flush=True)
            waiting = asyncio.create_task(stop.wait())
            ends: list[asyncio.Future[Any]] = [waiting, lost]
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
        finally:
            await server.close(10)
    if lost.done() and not lost.cancelled() and lost.exception() is not None:
        raise SystemExit(f"ceiling: {lost.exception()}")
    print(f"ceiling: {fanout.dropped} slow clients dropped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.ceiling")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", action="append", required=True)
    parser.add_argument("--feed", choices=feeds.FEEDS, default="resp",
                        help="how Redis is read (default: %(default)s)")
    args = parser.parse_args()
    asyncio.run(run(args.port, args.redis, args.channel, args.feed))


if __name__ == "__main__":
    main()
