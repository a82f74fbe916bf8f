"""The ceiling: a bare ``websockets`` server that ``broadcast()``s every Redis message it gets.

Run as ``python -m bridge.bench.ceiling --port P --redis URL --channel NAME``. It subscribes to
the Redis pub/sub channel(s) where callbridge's Redis broker publishes envelopes, and sends each
message, unchanged, to every connected client: no auth, no channels, no history. It prints
``ceiling listening on ws://...`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve


async def run(port: int, redis_url: str, channels: list[str]) -> None:
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*channels)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=65536) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"ceiling listening on ws://127.0.0.1:{bound}", flush=True)
        while not stop.is_set():
            message = await pubsub.get_message(timeout=0.5)
            if message is not None:
                # Same bytes callbridge sends: text frames of the envelope.
                broadcast(clients, message["data"].decode())
    await pubsub.aclose()
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.ceiling")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", action="append", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.port, args.redis, args.channel))


if __name__ == "__main__":
    main()
