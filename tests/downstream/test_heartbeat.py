"""The shared heartbeat timer: every registered link beats once per interval, spread over it."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from bridge.downstream.heartbeat import Heartbeats
from bridge.downstream.link import ClientLink
from tests.downstream.conftest import SCALE
from tests.downstream.harness import client, token


def drain(link: ClientLink) -> list[dict]:
    frames = link._frames or ()
    out = [orjson.loads(frame) for frame, _ in frames]
    link._frames = None
    link.queued_bytes = 0
    return out


async def test_every_link_beats_once_per_interval_in_its_own_slot() -> None:
    beats = Heartbeats(0.5, tick=0.5, rng=random.Random(7))  # one slot: all beat together
    assert beats._tick == 0.5
    spread = Heartbeats(4.0, tick=1.0, rng=random.Random(7))
    links = [ClientLink(4096) for _ in range(40)]
    for link in links:
        spread.add(link)
        spread.add(link)  # idempotent
    assert len(spread) == 40
    used = {slot for slot in spread._slot_of.values()}
    assert len(used) == 4  # 40 links over 4 one-second slots: all slots used
    together = [ClientLink(4096) for _ in range(10)]
    for link in together:
        beats.add(link)
    await asyncio.sleep(0.5 * 2.5)
    for link in together:
        got = drain(link)
        assert [m["type"] for m in got] == ["heartbeat", "heartbeat"], got
        assert got[0]["ts"] < got[1]["ts"]
    for link in links:
        spread.discard(link)
    for link in together:
        beats.discard(link)
    assert len(spread) == 0 and spread._timer is None and beats._timer is None


async def test_a_slot_is_served_once_per_interval_and_closed_links_get_nothing() -> None:
    beats = Heartbeats(2.0, tick=1.0, rng=random.Random(1))  # two slots, 1 s apart
    live, closed = ClientLink(4096), ClientLink(4096)
    closed.close(4008)
    beats.add(live)
    beats.add(closed)
    async with asyncio.timeout(5 * SCALE):  # the first beat comes within one interval
        while not live._frames:
            await asyncio.sleep(0.02)
    assert [m["type"] for m in drain(live)] == ["heartbeat"]
    await asyncio.sleep(1.5)  # less than an interval: the other slot beats, not this one
    assert drain(live) == []
    assert drain(closed) == []
    beats.discard(live)
    beats.discard(closed)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="heartbeat interval"):
        Heartbeats(0)


async def test_a_silent_client_stays_connected_by_default(bridge) -> None:
    # No idle timeout unless configured: a client that only listens keeps its connection and
    # keeps receiving heartbeats.
    async with bridge(heartbeat=0.1) as b, client(b.url, token("calls:acme")) as (ws, welcome):
        assert welcome["idle_timeout"] == 0
        types = []
        async with asyncio.timeout(5 * SCALE):
            while len(types) < 8:
                types.append(orjson.loads(await ws.recv())["type"])
        assert set(types) == {"heartbeat"}


async def test_ten_thousand_links_are_spread_thin() -> None:
    # Each tick is one callback on the event loop: at the default interval a tick serves a
    # few dozen links, not hundreds, so no event waits behind a burst of heartbeats.
    beats = Heartbeats(25.0, rng=random.Random(3))
    assert len(beats._slots) == 500 and beats._tick == pytest.approx(0.05)
    links = [ClientLink(4096) for _ in range(10_000)]
    for link in links:
        beats.add(link)
    assert max(len(slot) for slot in beats._slots) < 50
    for link in links:
        beats.discard(link)
    assert beats._timer is None
