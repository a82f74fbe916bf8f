"""One target's delivery loop against real HTTP receivers (uvicorn on loopback): order per
channel through failures, retries, dead letters in Redis, and a dead target beside a live one."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import orjson
import pytest

from bridge.push.record import DeadLetters, Outcome
from bridge.push.signature import verify
from bridge.push.target import TargetPusher
from tests.push.conftest import REDIS, SCALE, SECRET, FakeSource, delivery, target

CHANNELS = ["calls:acme", "presence:acme"]


async def _collect(outcomes: list[Outcome], outcome: Outcome) -> None:
    outcomes.append(outcome)


async def test_every_event_arrives_once_in_order_through_a_receiver_failing_for_a_while(receiver):
    # 500 for the first 6 requests (those of the first event of each channel, retried), 200 on.
    rec = await receiver(lambda n: 500 if n <= 6 else 200)
    items = [delivery(ch, n) for n in range(10) for ch in CHANNELS]
    source, dead = FakeSource(items), []
    async with httpx.AsyncClient() as http:
        pusher = TargetPusher(target("crm", rec.url, CHANNELS, timeout=2.0), http,
                              dead=lambda o: _collect(dead, o), retry_initial=0.02,
                              retry_max=0.1)
        async with asyncio.timeout(20 * SCALE):
            await pusher.run(source)
    assert dead == []
    for channel in CHANNELS:
        got = [e for e in rec.delivered() if e["channel"] == channel]
        sent = [orjson.loads(d.envelope.frame) for d in items if d.channel == channel]
        assert got == sent, f"{channel}: every event once, in order, exactly as published"
    assert sorted(source.acked, key=id) == sorted(items, key=id)
    assert pusher.log.counts == {"delivered": 20, "retried": 6, "dead": 0}
    for headers, body, at in rec.requests:
        assert verify(body, headers["callbridge-signature"], [SECRET.encode()], now=at)
        envelope = orjson.loads(body)
        assert headers["content-type"] == "application/json"
        assert headers["callbridge-event-id"] == envelope["event"]["id"]
        assert headers["callbridge-channel"] == envelope["channel"]
        assert headers["callbridge-offset"] == envelope["offset"]


async def test_the_next_event_of_a_channel_waits_for_the_previous_one(receiver):
    rec = await receiver(lambda n: 503 if n <= 3 else 200)
    items = [delivery("calls:acme", n) for n in range(3)]
    async with httpx.AsyncClient() as http:
        pusher = TargetPusher(target("crm", rec.url, ["calls:acme"]), http,
                              dead=lambda o: _collect([], o), retry_initial=0.02,
                              retry_max=0.05)
        async with asyncio.timeout(20 * SCALE):
            await pusher.run(FakeSource(items))
    ids = [orjson.loads(body)["event"]["id"] for _, body, _ in rec.requests]
    assert ids == ["calls:acme-ev0"] * 4 + ["calls:acme-ev1", "calls:acme-ev2"]


async def test_a_target_that_never_answers_is_dead_lettered_while_another_keeps_receiving(
        receiver, silent_url, prefix, caplog):
    caplog.set_level(logging.INFO, logger="bridge")
    rec = await receiver()
    letters = DeadLetters(REDIS, prefix=prefix)
    items = [delivery("calls:acme", n) for n in range(2)]
    down_source = FakeSource(items)
    live_items = [delivery("calls:acme", n) for n in range(30)]
    live_source = FakeSource(live_items, endless=True)
    try:
        async with httpx.AsyncClient() as down_http, httpx.AsyncClient() as live_http:
            down = TargetPusher(target("down", silent_url, ["calls:acme"], timeout=0.2,
                                       retry_for=1.0), down_http, dead=letters.add,
                                retry_initial=0.05, retry_max=0.2)
            live = TargetPusher(target("live", rec.url, ["calls:acme"]), live_http,
                                dead=letters.add)
            started, wall = time.monotonic(), time.time()
            live_task = asyncio.create_task(live.run(live_source))
            async with asyncio.timeout(20 * SCALE):
                await down.run(down_source)
                elapsed = time.monotonic() - started
                while len(rec.delivered()) < 30:
                    await asyncio.sleep(0.01)
            live_task.cancel()
            await asyncio.wait([live_task])
        assert 2.0 <= elapsed < 2.0 + 3 * SCALE, "two events, each dead after retry_for"
        # The live target had everything long before the dead one gave its first event up.
        assert rec.requests[-1][2] - wall < 1.0
        assert live.log.counts == {"delivered": 30, "retried": 0, "dead": 0}
        assert down.log.counts["dead"] == 2 and down.log.counts["delivered"] == 0
        assert down_source.acked == items, "a dead letter is acknowledged: the channel moves on"
        records = await letters.read("down")
        assert [r["event_id"] for r in records] == ["calls:acme-ev1", "calls:acme-ev0"]
        first = records[-1]
        assert first["target"] == "down" and first["channel"] == "calls:acme"
        assert first["offset"] == "1000-0" and first["outcome"] == "dead"
        assert int(first["attempts"]) >= 2 and first["status"] == ""
        assert first["error"] == "no answer within 0.2s"
        assert "dead-lettered after" in caplog.text
        assert SECRET not in caplog.text and silent_url not in caplog.text
        assert await letters.read("live") == []
    finally:
        await letters.close()


async def test_a_redelivered_event_is_acknowledged_not_pushed_again(receiver):
    rec = await receiver()
    first, second = delivery("calls:acme", 0), delivery("calls:acme", 1)
    async with httpx.AsyncClient() as http:
        pusher = TargetPusher(target("crm", rec.url, ["calls:acme"]), http,
                              dead=lambda o: _collect([], o))
        await pusher.run(FakeSource([first, second]))
        source = FakeSource([first, second, delivery("calls:acme", 2)])
        await pusher.run(source)
    assert [e["event"]["n"] for e in rec.delivered()] == [0, 1, 2]
    assert len(source.acked) == 3
    # A new epoch (the channel's history was lost) starts again from its first offset.
    async with httpx.AsyncClient() as http:
        pusher._http = http
        await pusher.run(FakeSource([delivery("calls:acme", 0, epoch="ep2")]))
    assert [e["event"]["n"] for e in rec.delivered()] == [0, 1, 2, 0]


@pytest.mark.parametrize("answer, error", [(404, "HTTP 404"), (302, "HTTP 302")])
async def test_non_2xx_answers_are_failures_and_redirects_are_not_followed(
        receiver, answer, error):
    rec = await receiver(lambda n: answer)
    dead: list[Outcome] = []
    async with httpx.AsyncClient(follow_redirects=False) as http:
        pusher = TargetPusher(target("crm", rec.url, ["calls:acme"], retry_for=0.2), http,
                              dead=lambda o: _collect(dead, o), retry_initial=0.02,
                              retry_max=0.05)
        await pusher.run(FakeSource([delivery("calls:acme", 0)]))
    (outcome,) = dead
    assert (outcome.status, outcome.error, outcome.outcome) == (answer, error, "dead")
    assert pusher.log.snapshot()["recent"][0]["outcome"] == "dead"


async def test_a_refused_connection_is_described_without_the_url():
    dead: list[Outcome] = []
    url = "http://127.0.0.1:9/hook?token=do-not-log-me"
    async with httpx.AsyncClient() as http:
        pusher = TargetPusher(target("crm", url, ["calls:acme"], retry_for=0.1), http,
                              dead=lambda o: _collect(dead, o), retry_initial=0.02)
        await pusher.run(FakeSource([delivery("calls:acme", 0)]))
    (outcome,) = dead
    assert outcome.error is not None and outcome.error.startswith("ConnectError")
    assert "do-not-log-me" not in outcome.error
