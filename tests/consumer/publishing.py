"""Publishing test events the way callbridge's brokers do (the publish script, one channel)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from bridge.brokers.redis import wire
from bridge.consumer.items import Envelope, Gap

REDIS_URL = "redis://127.0.0.1:6379/0"


def event(n: int, extension: str = "101", call_id: str | None = None) -> bytes:
    return orjson.dumps({
        "id": f"ev-{n}-{uuid.uuid4().hex[:6]}", "type": "call.created", "provider": "antbuddy",
        "tenant": "acme", "occurred_at": "2024-05-01T10:00:00.000Z", "n": n,
        "call_id": call_id or f"c{n}", "extension": extension,
        "caller": {"number": "+15550100", "name": "Ann"}, "callee": {"number": extension}})


async def publish(client: Any, prefix: str, channel: str, n: int, *,
                  history_length: int = 1000) -> str:
    """Append event ``n`` to ``channel``; its offset."""
    keys, args = wire.publish_keys_and_args(
        prefix, [channel], event(n, channel.rsplit(":", 1)[-1]), history_length=history_length,
        event_id=None, dedup_ms=0)
    ids = await client.eval(wire.PUBLISH_SCRIPT, len(keys), *keys, *args)
    return str(ids[0].decode())


async def take(items: AsyncIterator[Envelope | Gap], count: int, *,
               timeout: float = 20.0) -> list[Envelope | Gap]:
    """The next ``count`` items, within ``timeout`` seconds."""
    got: list[Envelope | Gap] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.append(await anext(items))
    return got


def numbers(items: list[Envelope | Gap]) -> list[int | str]:
    """Each envelope's event number, each gap's reason."""
    return [i.event["n"] if isinstance(i, Envelope) else i.reason for i in items]


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
