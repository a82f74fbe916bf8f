"""bridge.cluster.disconnects: an instance has the one holding a client close it, over real
Redis; junk on the channel is ignored, and a Redis it cannot reach is an error, never a 'no'."""

from __future__ import annotations

import asyncio
import uuid
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bridge.cluster.disconnects import (
    ASK,
    ClusterDisconnects,
    LocalDisconnects,
    Unavailable,
    decode,
    encode,
)
from bridge.redisconn.clients import drop_prefix
from tests.support.redis_proxy import Proxy

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-disconnects-{uuid.uuid4().hex}:"
    yield name
    await drop_prefix(REDIS_URL, name)


class Holder:
    """An instance's sessions: closing one removes it and says it did."""

    def __init__(self, *sessions: str) -> None:
        self.sessions = set(sessions)
        self.closed: list[str] = []

    def __call__(self, session: str) -> bool:
        if session not in self.sessions:
            return False
        self.sessions.remove(session)
        self.closed.append(session)
        return True


async def started(prefix: str, instance_id: str, holder: Holder,
                  url: str = REDIS_URL) -> ClusterDisconnects:
    disconnects = ClusterDisconnects(url, prefix=prefix, instance_id=instance_id, wait=0.5)
    disconnects.on_ask(holder)
    await disconnects.start()
    return disconnects


async def test_the_instance_holding_a_session_closes_it_and_says_so(prefix: str) -> None:
    a_sessions, b_sessions, c_sessions = Holder("a-1"), Holder("b-1", "b-2"), Holder("c-1")
    a = await started(prefix, "bridge-a", a_sessions)
    b = await started(prefix, "bridge-b", b_sessions)
    c = await started(prefix, "bridge-c", c_sessions)
    try:
        assert await a.ask("b-2") == "bridge-b"
        assert b_sessions.closed == ["b-2"] and b_sessions.sessions == {"b-1"}
        assert await c.ask("a-1") == "bridge-a"
        assert await a.ask("b-2") is None  # closed already: nobody holds it
        assert await b.ask("nobody-holds-this") is None
        assert a_sessions.closed == ["a-1"] and c_sessions.closed == []
        # An instance never answers itself: its own sessions are the API's to close.
        assert await c.ask("c-1") is None and c_sessions.sessions == {"c-1"}
    finally:
        for d in (a, b, c):
            await d.close()


async def test_with_nobody_else_listening_the_answer_is_no(prefix: str) -> None:
    alone = await started(prefix, "bridge-a", Holder())
    try:
        assert await alone.ask("b-1") is None
    finally:
        await alone.close()
    assert await LocalDisconnects().ask("b-1") is None


async def test_junk_on_the_channel_is_ignored_and_answers_go_on(prefix: str) -> None:
    b_sessions = Holder("b-1")
    a = await started(prefix, "bridge-a", Holder())
    b = await started(prefix, "bridge-b", b_sessions)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        for junk in (b"not json", b"[1]", b'{"kind": "ask"}',
                     encode(ASK, "x" * 65, "ref", "bridge-z", "other"),
                     b'{"kind": "ask", "session": 7, "ref": "r", "by": "z", "from": "f"}'):
            assert decode(junk) is None
            await client.publish(a.channel, junk)
        assert await a.ask("b-1") == "bridge-b"
    finally:
        await client.aclose()
        await a.close()
        await b.close()


async def test_a_redis_it_cannot_reach_is_an_error_not_a_no(prefix: str) -> None:
    proxy = Proxy()
    await proxy.start()
    b_sessions = Holder("b-1")
    a = await started(prefix, "bridge-a", Holder(), url=f"redis://127.0.0.1:{proxy.port}/0")
    b = await started(prefix, "bridge-b", b_sessions)
    try:
        assert await a.ask("b-1") == "bridge-b"
        await proxy.stop()
        with pytest.raises(Unavailable):
            async with asyncio.timeout(10):
                while True:  # until the reader notices the loss, or the publish fails
                    await a.ask("b-2")
                    await asyncio.sleep(0.05)
    finally:
        await a.close()
        await b.close()
