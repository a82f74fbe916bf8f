"""The peer: python-socketio ``AsyncServer`` with ``AsyncRedisManager``, on uvicorn.

Run as ``python -m bridge.bench.peer --port P --redis URL --channel NAME``. A client joins the
rooms listed in its connect auth object (``{"rooms": [...]}``); events reach it through the
Redis manager, as a Socket.IO deployment publishes them from other processes
(``AsyncRedisManager(write_only=True).emit("event", data, room=...)``, see :func:`emitter`).
Prints ``peer listening on http://...`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from functools import partial
from typing import Any

import socketio
import uvicorn


async def join_rooms(sio: Any, sid: str, environ: dict[str, Any], auth: Any) -> None:
    """The connect handler: ``sid`` joins the rooms its auth object names."""
    for room in (auth or {}).get("rooms", []):
        await sio.enter_room(sid, room)


def build(redis_url: str, channel: str) -> Any:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager,
                               cors_allowed_origins="*", logger=False, engineio_logger=False,
                               http_compression=False, compression_threshold=2**30)
    sio.on("connect", partial(join_rooms, sio))
    return socketio.ASGIApp(sio)


def emitter(redis_url: str, channel: str) -> Any:
    """A write-only manager for the driver: ``await it.emit("event", data, room=R)``."""
    return socketio.AsyncRedisManager(redis_url, channel=channel, write_only=True)


async def run(port: int, redis_url: str, channel: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(build(redis_url, channel), log_level="warning", ws="websockets",
                            lifespan="off", ws_per_message_deflate=False, backlog=4096)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    print(f"peer listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.peer")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.port, args.redis, args.channel))


if __name__ == "__main__":
    main()
