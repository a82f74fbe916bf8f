"""bridge.cluster.clients: an instance has the one holding a client close it, and gathers
every instance's client list, over real Redis; junk on the channel is ignored, and a Redis it
cannot reach is an error, never a 'no'."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bridge.cluster.clients import (
    ASK,
    LIST,
    MAX_LISTED,
    ClusterClients,
    LocalClients,
    Message,
    Unavailable,
    decode,
    encode,
)
from tests.support.redis_proxy import Proxy

REDIS_URL = "redis://127.0.0.1:6379/0"


class Holder:
    """An instance's sessions: closing one removes it and says it did; listing them lists
    those whose name starts with the channel given."""

    def __init__(self, *sessions: str) -> None:
        self.sessions = set(sessions)
        self.closed: list[str] = []
        self.instance_id = ""

    def __call__(self, session: str) -> bool:
        if session not in self.sessions:
            return False
        self.sessions.remove(session)
        self.closed.append(session)
        return True

    def listing(self, channel: str | None, limit: int) -> dict[str, object]:
        mine = sorted(s for s in self.sessions if channel is None or s.startswith(channel))
        return {"instance_id": self.instance_id, "total": len(mine),
                "clients": [{"session": s} for s in mine[:limit]]}


async def started(prefix: str, instance_id: str, holder: Holder,
                  url: str = REDIS_URL) -> ClusterClients:
    clients = ClusterClients(url, prefix=prefix, instance_id=instance_id, wait=0.5)
    holder.instance_id = instance_id
    clients.serve(holder, holder.listing)
    await clients.start()
    return clients


async def test_the_instance_holding_a_session_closes_it_and_says_so(prefix: str) -> None:
    a_sessions, b_sessions, c_sessions = Holder("a-1"), Holder("b-1", "b-2"), Holder("c-1")
    a = await started(prefix, "bridge-a", a_sessions)
    b = await started(prefix, "bridge-b", b_sessions)
    c = await started(prefix, "bridge-c", c_sessions)
    try:
        assert await a.disconnect("b-2") == "bridge-b"
        assert b_sessions.closed == ["b-2"] and b_sessions.sessions == {"b-1"}
        assert await c.disconnect("a-1") == "bridge-a"
        assert await a.disconnect("b-2") is None  # closed already: nobody holds it
        assert await b.disconnect("nobody-holds-this") is None
        assert a_sessions.closed == ["a-1"] and c_sessions.closed == []
        # An instance never answers itself: its own sessions are the API's to close.
        assert await c.disconnect("c-1") is None and c_sessions.sessions == {"c-1"}
    finally:
        for d in (a, b, c):
            await d.close()


async def test_with_nobody_else_listening_the_answer_is_no(prefix: str) -> None:
    alone = await started(prefix, "bridge-a", Holder())
    try:
        assert await alone.disconnect("b-1") is None
        assert await alone.listings(None, 10) == ([], 0)
    finally:
        await alone.close()
    assert await LocalClients().disconnect("b-1") is None
    assert await LocalClients().listings(None, 10) == ([], 0)


async def test_every_other_instance_answers_with_its_list(prefix: str) -> None:
    a = await started(prefix, "bridge-a", Holder("x-1"))
    b = await started(prefix, "bridge-b", Holder("x-2", "y-1", "x-3"))
    c = await started(prefix, "bridge-c", Holder("y-2"))
    try:
        lists, asked = await a.listings(None, 10)
        assert asked == 2
        assert sorted((listing["instance_id"], listing["total"]) for listing in lists) == [
            ("bridge-b", 3), ("bridge-c", 1)]
        lists, asked = await c.listings("x", 1)  # of one channel, at most one each
        assert asked == 2
        assert sorted((listing["instance_id"], listing["total"], len(listing["clients"]))
                      for listing in lists) == [("bridge-a", 1, 1), ("bridge-b", 2, 1)]
        # A limit above what one answer may carry is capped.
        big = Holder(*(f"z-{i:05d}" for i in range(MAX_LISTED + 5)))
        await b.close()
        b = await started(prefix, "bridge-b", big)
        lists, _ = await a.listings("z", 10 * MAX_LISTED)
        (only,) = [listing for listing in lists if listing["instance_id"] == "bridge-b"]
        assert only["total"] == MAX_LISTED + 5 and len(only["clients"]) == MAX_LISTED
        # A listener that does not answer is counted as asked, and missing from the lists.
        mute = aioredis.Redis.from_url(REDIS_URL)
        pubsub = mute.pubsub()
        await pubsub.subscribe(a.channel)
        try:
            lists, asked = await a.listings(None, 10)
            assert asked == 3
            assert sorted(listing["instance_id"] for listing in lists) == ["bridge-b", "bridge-c"]
        finally:
            await pubsub.aclose()
            await mute.aclose()
    finally:
        for d in (a, b, c):
            await d.close()


async def test_junk_on_the_channel_is_ignored_and_answers_go_on(prefix: str) -> None:
    b_sessions = Holder("b-1")
    a = await started(prefix, "bridge-a", Holder())
    b = await started(prefix, "bridge-b", b_sessions)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        for junk in (b"not json", b"[1]", b'{"kind": "ask"}',
                     encode(Message(ASK, "ref", "bridge-z", "other", session="x" * 65)),
                     encode(Message(LIST, "ref", "bridge-z", "other", limit=MAX_LISTED + 1)),
                     b'{"kind": "listed", "ref": "r", "by": "z", "from": "f", "listing": 1}',
                     b'{"kind": "listed", "ref": "r", "by": "z", "from": "f", "listing": '
                     b'{"instance_id": "z", "total": "2", "clients": []}}',
                     b'{"kind": "ask", "session": 7, "ref": "r", "by": "z", "from": "f"}'):
            assert decode(junk) is None
            await client.publish(a.channel, junk)
        assert await a.disconnect("b-1") == "bridge-b"
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
        assert await a.disconnect("b-1") == "bridge-b"
        await proxy.stop()
        with pytest.raises(Unavailable):
            async with asyncio.timeout(10):
                while True:  # until the reader notices the loss, or the publish fails
                    await a.disconnect("b-2")
                    await asyncio.sleep(0.05)
        with pytest.raises(Unavailable):
            await a.listings(None, 10)
    finally:
        await a.close()
        await b.close()
