"""``callbridge tail``: print channels' events as they come, or from a position.

Each item is printed as one line as soon as it arrives: ``json`` prints the envelope exactly as
Redis and ``/ws`` carry it (a gap as ``/ws``'s ``gap`` message), ``table`` a readable row (time,
channel, type, extension, call id, parties). Where it starts: new events only (default),
``--from OFFSET`` (the events after that offset of the channel's current epoch; ``0``: every event
history holds), ``--since 10m`` (those published in the last ten minutes). A start that history no
longer covers prints a ``trimmed`` gap first, then the oldest events history holds. With
``--group NAME`` it reads as one worker of a consumer group instead and acknowledges each event
once printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import orjson

from bridge.brokers.redis import wire
from bridge.consumer.follow import Consumer, Item, Start
from bridge.consumer.groups import GroupConsumer
from bridge.consumer.items import Gap, Position
from bridge.redisconn.clients import command_client

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Columns of the table: (title, width).
COLUMNS = (("time", 23), ("channel", 22), ("type", 16), ("ext", 6), ("call id", 14),
           ("parties", 0))


def parse_since(text: str) -> float:
    """Seconds of ``10m``, ``30s``, ``2h``, ``1d`` or a plain number of seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 10m, 2h, 1d")
    return float(match[1]) * _UNITS[match[2] or "s"]


def _party(value: Any) -> str:
    if not isinstance(value, dict):
        return "?"
    number, name = value.get("number") or "?", value.get("name")
    return f"{name} <{number}>" if name else str(number)


def header() -> str:
    """The table's title row."""
    return " ".join(title.ljust(width) for title, width in COLUMNS).rstrip()


def render(item: Item, fmt: str) -> str:
    """One item as one output line, in ``json`` or ``table`` format."""
    if isinstance(item, Gap):
        if fmt == "json":
            return orjson.dumps({"type": "gap", "channel": item.channel, "reason": item.reason,
                                 "epoch": item.epoch}).decode()
        return f"-- gap on {item.channel}: {item.reason} (epoch {item.epoch}) --"
    if fmt == "json":
        return item.frame.decode()
    event = item.event
    parties = ""
    if "caller" in event or "callee" in event:
        parties = f"{_party(event.get('caller'))} -> {_party(event.get('callee'))}"
    when = str(event.get("occurred_at", "")).replace("T", " ").rstrip("Z")
    cells = (when, item.channel, event.get("type"), event.get("extension"), event.get("call_id"),
             parties)
    return " ".join(str(cell or "-").ljust(width)
                    for cell, (_, width) in zip(cells, COLUMNS)).rstrip()


async def starts(url: str, prefix: str, channels: Sequence[str], *, offset: str | None = None,
                 since: float | None = None) -> Start:
    """The consumer's ``start`` for ``--from``/``--since``: positions in each channel's current
    epoch ("earliest" for ``--from 0``, "latest" without either)."""
    if offset is None and since is None:
        return "latest"
    if offset in ("0", "0-0"):
        return "earliest"
    if offset is None:
        offset = f"{max(0, int((time.time() - (since or 0.0)) * 1000))}-0"
    elif "-" not in offset:
        offset += "-0"
    Position("0", offset)  # ValueError on a malformed offset
    client = command_client(url, timeout=5.0, pool_size=2)
    try:
        found: dict[str, Position] = {}
        for channel in channels:
            # No epoch: the channel has no history, and "latest" (the consumer's start for
            # channels not given) is its first event.
            epoch = await client.get(wire.epoch_key(prefix, channel))
            if epoch is not None:
                found[channel] = Position(epoch.decode(), offset)
        return found
    finally:
        await client.aclose()


async def tail(url: str, channels: Sequence[str], *, prefix: str = "callbridge:",
               start: Start = "latest", fmt: str = "json", group: str | None = None,
               out: TextIO, stop: asyncio.Event) -> int:
    """Print ``channels``' items to ``out`` until ``stop`` is set; the exit status."""

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    if fmt == "table":
        emit(header())
    reader = (_group(url, channels, prefix, group, fmt, emit) if group is not None
              else _follow(url, channels, prefix, start, fmt, emit))
    task = asyncio.ensure_future(reader)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, waiter):
            pending.cancel()
        await asyncio.wait([task, waiter], timeout=10.0)
    if task.done() and not task.cancelled():
        task.result()  # the reader's failure, if it failed
    return 0


async def _follow(url: str, channels: Sequence[str], prefix: str, start: Start, fmt: str,
                  emit: Callable[[str], None]) -> None:
    async with Consumer(url, channels, prefix=prefix, start=start) as consumer:
        await _print(consumer, fmt, emit)


async def _print(consumer: Consumer, fmt: str, emit: Callable[[str], None]) -> None:
    async for item in consumer:
        emit(render(item, fmt))


async def _group(url: str, channels: Sequence[str], prefix: str, group: str, fmt: str,
                 emit: Callable[[str], None]) -> None:
    name = f"tail-{socket.gethostname()}-{os.getpid()}"
    async with GroupConsumer(url, list(channels), group=group, consumer=name,
                             prefix=prefix) as members:
        async for delivery in members:
            emit(render(delivery.envelope, fmt))
            await members.ack(delivery)
