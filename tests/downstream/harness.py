"""Shared pieces of the /ws tests: a bridge under real uvicorn, and a small client."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import orjson
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.brokers.base import Broker
from bridge.brokers.memory import MemoryBroker
from bridge.downstream.endpoint import ws_route
from bridge.downstream.hub import Hub
from bridge.events.event import Event, EventType
from tests.downstream.conftest import SCALE, RunningServer

JWT_SECRET = secrets.token_urlsafe(32)
REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 5.0  # safety net for every wait; each ends as soon as the awaited thing happens


@dataclass
class Bridge:
    hub: Hub
    broker: Broker
    url: str

    async def publish(self, channel: str, pad: int = 0) -> tuple[str, dict[str, Any]]:
        event = Event(id=uuid.uuid4().hex, type=EventType.CREATED, provider="test",
                      tenant="acme", occurred_at="2024-05-01T10:00:00.000Z",
                      detail={"pad": "x" * pad} if pad else None)
        [offset] = await self.broker.publish([channel], event.to_json())
        return offset, orjson.loads(event.to_json())


StartBridge = Callable[..., contextlib.AbstractAsyncContextManager[Bridge]]


def bridge_starter(serve: Any) -> StartBridge:
    """``async with start(broker=None, client_queue_bytes=..., **ws_route options) as b``."""
    @contextlib.asynccontextmanager
    async def start(broker: Broker | None = None, client_queue_bytes: int = 1 << 20,
                    **route: Any) -> AsyncIterator[Bridge]:
        broker = broker or MemoryBroker()
        await broker.start()
        hub = Hub(broker, client_queue_bytes=client_queue_bytes)
        settings: dict[str, Any] = {"jwt_secret": JWT_SECRET, "leeway": 0.0,
                                    "auth_timeout": 5.0, "max_message_bytes": 4096,
                                    "heartbeat": 30.0, "expiry_grace": 0.0}
        settings.update(route)
        app = Starlette(routes=[ws_route(hub, **settings)])
        running: RunningServer
        try:
            async with serve(app) as running:
                yield Bridge(hub, broker, running.ws_url + "/ws")
        finally:
            await broker.close()
    return start


def token(*channels: str, **kw: Any) -> str:
    return mint(JWT_SECRET, sub="crm-1", channels=channels, **kw)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not a heartbeat."""
    async with asyncio.timeout(WAIT * SCALE):
        while True:
            msg = orjson.loads(await ws.recv())
            if msg["type"] != "heartbeat":
                return msg


async def close_code(ws: ClientConnection) -> int:
    """Read until the server closes; the close code it sent."""
    async with asyncio.timeout(WAIT * SCALE):
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.recv()
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code


@contextlib.asynccontextmanager
async def client(url: str, jwt: str, **kw: Any) -> AsyncIterator[tuple[ClientConnection, dict]]:
    async with connect(url, compression=None, open_timeout=WAIT * SCALE, **kw) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": jwt}).decode())
        yield ws, await recv(ws)


async def subscribe(ws: ClientConnection, *channels: str, cid: Any = "s") -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", "id": cid, "channels": channels}).decode())
    return await recv(ws)


def small_receive_buffer(port: int) -> socket.socket:
    """A connected socket whose receive window is tiny, so a stalled reader backs up fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT * SCALE)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock
