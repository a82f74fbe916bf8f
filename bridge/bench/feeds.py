"""Reading Redis pub/sub messages for the ceiling: two readers, to compare what each costs.

- ``resp``: an ``asyncio.Protocol`` on its own TCP connection, replies parsed by ``hiredis``
  in ``data_received``: no task and no future per message, and every message that one read
  brought arrives in one call.
- ``redis-py``: redis-py's asyncio ``PubSub`` (hiredis parser), one blocking ``get_message``
  per message on one task.

Both call ``on_messages(payloads)`` with the payloads (bytes) of the messages in order.
``python -m bridge.bench.ceiling --feed`` picks one; docs/performance.md gives the cost of each.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Callable
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis

FEEDS = ("resp", "redis-py")
OnMessages = Callable[[list[bytes]], None]


def command(*parts: str) -> bytes:
    """One command in RESP (arrays of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        data = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespFeed(asyncio.Protocol):
    """A subscribed connection whose replies are parsed where they are read."""

    def __init__(self, channels: list[str], on_messages: OnMessages) -> None:
        self._reader = hiredis.Reader()
        self._pending = set(channels)
        self._on_messages = on_messages
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        batch: list[bytes] = []
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, list) and reply[0] == b"message":
                batch.append(reply[2])
            elif isinstance(reply, list) and reply[0] == b"subscribe":
                self._pending.discard(reply[1].decode())
                if not self._pending and not self.subscribed.done():
                    self.subscribed.set_result(None)
            elif isinstance(reply, Exception) and not self.subscribed.done():
                self.subscribed.set_exception(reply)  # AUTH or SUBSCRIBE refused
        if batch:
            self._on_messages(batch)

    def connection_lost(self, exc: Exception | None) -> None:
        for f in (self.subscribed, self.lost):
            if not f.done():
                f.set_exception(ConnectionError(f"Redis connection lost: {exc}"))


@contextlib.asynccontextmanager
async def resp(url: str, channels: list[str], on_messages: OnMessages,
               timeout: float = 10.0) -> AsyncIterator[asyncio.Future[None]]:
    """Subscribed to ``channels`` while open; yields a future that fails if Redis goes away."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        transport, feed = await loop.create_connection(
            lambda: RespFeed(channels, on_messages), parts.hostname or "127.0.0.1",
            parts.port or 6379)
    try:
        if parts.password is not None:
            user = unquote(parts.username or "default")
            transport.write(command("AUTH", user, unquote(parts.password)))
        transport.write(command("SUBSCRIBE", *channels))
        async with asyncio.timeout(timeout):
            await feed.subscribed
        yield feed.lost
    finally:
        for f in (feed.subscribed, feed.lost):
            f.cancel()  # closing is not losing: no one is left to read the error
        transport.abort()


@contextlib.asynccontextmanager
async def redis_py(url: str, channels: list[str], on_messages: OnMessages,
                   timeout: float = 10.0) -> AsyncIterator[asyncio.Future[None]]:
    """The same through redis-py's ``PubSub``, read by one owned task."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout)
    pubsub = client.pubsub(ignore_subscribe_messages=True)

    async def read() -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None:
                on_messages([message["data"]])

    try:
        async with asyncio.timeout(timeout):
            await pubsub.subscribe(*channels)
        task = asyncio.create_task(read(), name="ceiling feed")
        try:
            yield task  # fails (ends) only if the reader does
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await pubsub.aclose()
        await client.aclose()


def opener(name: str) -> Callable[..., contextlib.AbstractAsyncContextManager[
        asyncio.Future[None]]]:
    if name not in FEEDS:
        raise ValueError(f"unknown feed {name!r}; choose from {', '.join(FEEDS)}")
    return resp if name == "resp" else redis_py
