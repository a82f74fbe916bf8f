"""Push test helpers: a recording HTTP receiver under real uvicorn, an in-memory source of
deliveries, a Redis key prefix dropped after each test."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.config.model import WebhookTarget
from bridge.consumer.items import Envelope
from bridge.events.event import envelope
from bridge.redisconn.clients import drop_prefix
from tests.simulator.conftest import SCALE, serve

REDIS = "redis://127.0.0.1:6379/0"
SECRET = "receiver-secret-" + secrets.token_hex(8)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = f"cbtest-push-{secrets.token_hex(4)}:"
    yield value
    with contextlib.suppress(Exception):
        await drop_prefix(REDIS, value)


@dataclass
class Receiver:
    """Records every request; ``answer(n)`` gives the status of the n-th request (from 1)."""

    answer: Callable[[int], int] = lambda n: 200
    requests: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    url: str = ""

    def delivered(self) -> list[dict[str, Any]]:
        """The envelopes answered 2xx, in arrival order."""
        return [orjson.loads(body) for headers, body, _ in self.requests
                if headers["x-answered"].startswith("2")]

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        status = self.answer(len(self.requests) + 1)
        self.requests.append(({**request.headers, "x-answered": str(status)}, body,
                              time.time()))
        return Response(status_code=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Any]]:
    async with contextlib.AsyncExitStack() as stack:
        async def start(answer: Callable[[int], int] = lambda n: 200) -> Receiver:
            rec = Receiver(answer)
            app = Starlette(routes=[Route("/hook", rec.handle, methods=["POST"])])
            rec.url = f"http://{await stack.enter_async_context(serve(app))}/hook"
            return rec
        yield start


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server that accepts connections and reads, but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/hook"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def target(name: str, url: str, channels: list[str], **keys: Any) -> WebhookTarget:
    return WebhookTarget(name=name, url=url, channels=channels, secrets=[SECRET], **keys)


@dataclass(frozen=True)
class FakeDelivery:
    envelope: Envelope
    deliveries: int = 1

    @property
    def channel(self) -> str:
        return self.envelope.channel

    @property
    def offset(self) -> str:
        return self.envelope.offset


def delivery(channel: str, n: int, epoch: str = "ep1") -> FakeDelivery:
    event = orjson.dumps({"id": f"{channel}-ev{n}", "type": "call.ringing", "n": n})
    offset = f"{1000 + n}-0"
    return FakeDelivery(Envelope(channel, epoch, offset, envelope(channel, epoch, offset, event)))


class FakeSource:
    """Yields ``items`` once, then ends (or waits when ``endless``); records acknowledgements."""

    def __init__(self, items: list[FakeDelivery], *, endless: bool = False) -> None:
        self.items = items
        self.acked: list[FakeDelivery] = []
        self._endless = endless

    def __aiter__(self) -> AsyncIterator[FakeDelivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[FakeDelivery]:
        for item in self.items:
            yield item
        while self._endless:
            await asyncio.sleep(3600)

    async def ack(self, item: FakeDelivery) -> None:
        self.acked.append(item)


__all__ = ["REDIS", "SCALE", "SECRET", "FakeSource", "Receiver", "delivery", "target"]
