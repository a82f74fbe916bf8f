"""``callbridge tail`` as a real process: JSON lines, the table, --from, --since, --group."""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from bridge.consumer.items import Gap
from bridge.consumer.tail import parse_since, render
from tests.consumer.processes import Process
from tests.consumer.publishing import REDIS_URL, event, publish


def tail(prefix: str, *args: str) -> list[str]:
    return ["-m", "bridge", "tail", *args, "--redis", REDIS_URL, "--prefix", prefix]


async def test_json_lines_from_the_first_then_live(prefix: str, client: aioredis.Redis) -> None:
    offsets = [await publish(client, prefix, "calls:acme:101", n) for n in range(3)]
    proc = await Process.start(tail(prefix, "calls:acme:101", "--from", "0"))
    try:
        await proc.read(3)
        offsets.append(await publish(client, prefix, "calls:acme:101", 3))
        lines = await proc.read(4)
    finally:
        assert await proc.stop() == 0
    frames = [orjson.loads(line) for line in lines]
    assert [f["offset"] for f in frames] == offsets
    assert [f["event"]["n"] for f in frames] == [0, 1, 2, 3]
    assert {f["type"] for f in frames} == {"event"}
    assert {f["channel"] for f in frames} == {"calls:acme:101"}


async def test_table_after_an_offset(prefix: str, client: aioredis.Redis) -> None:
    offsets = [await publish(client, prefix, "calls:acme:101", n) for n in range(3)]
    proc = await Process.start(tail(prefix, "calls:acme:101", "--from", offsets[0],
                                    "--format", "table"))
    try:
        lines = await proc.read(3)
    finally:
        assert await proc.stop() == 0
    assert lines[0].split() == ["time", "channel", "type", "ext", "call", "id", "parties"]
    assert lines[1].split() == ["2024-05-01", "10:00:00.000", "calls:acme:101", "call.created",
                                "101", "c1", "Ann", "<+15550100>", "->", "101"]
    assert lines[2].split()[5] == "c2"


async def test_since_starts_at_that_time(prefix: str, client: aioredis.Redis) -> None:
    stream, now = f"{prefix}{{calls:acme}}:stream", int(time.time() * 1000)
    await publish(client, prefix, "calls:acme", 0)  # creates the epoch; then backdated entries
    await client.delete(stream)
    await client.xadd(stream, {"e": event(1)}, id=f"{now - 20 * 60_000}-0")
    await client.xadd(stream, {"e": event(2)}, id=f"{now - 5 * 60_000}-0")
    await publish(client, prefix, "calls:acme", 3)
    proc = await Process.start(tail(prefix, "calls:acme", "--since", "10m"))
    try:
        lines = await proc.read(2)
    finally:
        assert await proc.stop() == 0
    assert [orjson.loads(line)["event"]["n"] for line in lines] == [2, 3]


async def test_bad_arguments_exit_2(prefix: str) -> None:
    for args in (["calls:acme", "--since", "soon"], ["calls:acme", "--from", "x-1"],
                 ["bad channel!"]):
        proc = await Process.start(tail(prefix, *args))
        assert await proc.stop(0) == 2  # signal 0: only wait


def test_render_gap_and_durations() -> None:
    gap = Gap("calls:acme", "trimmed", "abc123abc123")
    assert orjson.loads(render(gap, "json")) == {
        "type": "gap", "channel": "calls:acme", "reason": "trimmed", "epoch": "abc123abc123"}
    assert "trimmed" in render(gap, "table")
    assert [parse_since(t) for t in ("30s", "10m", "2h", "1d", "5")] == [30, 600, 7200, 86400, 5]


async def test_group_reads_and_acknowledges(prefix: str, client: aioredis.Redis) -> None:
    proc = await Process.start(tail(prefix, "calls:acme", "--group", "printers"))
    try:
        # The group is created when the worker starts; publish until it prints.
        for n in range(50):
            await publish(client, prefix, "calls:acme", n)
            try:
                await proc.read(1, timeout=0.2)
                break
            except TimeoutError:
                pass
        assert orjson.loads(proc.lines[0])["channel"] == "calls:acme"
    finally:
        assert await proc.stop() == 0
