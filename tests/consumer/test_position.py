"""Position stores: a JSON file written atomically, a Redis hash; both merge on save."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from bridge.consumer.follow import Consumer
from bridge.consumer.items import Position
from bridge.consumer.position import FileStore, PositionStore, RedisStore
from bridge.redisconn.clients import drop_prefix
from tests.consumer.publishing import REDIS_URL

A, B = Position("abcabcabcabc", "1-0"), Position("abcabcabcabc", "2-5")


async def check_store(store: PositionStore, again: PositionStore) -> None:
    assert await store.load() == {}
    await store.save({"calls:acme": A, "calls:acme:101": A})
    await store.save({"calls:acme": B})
    assert await again.load() == {"calls:acme": B, "calls:acme:101": A}
    await store.close()
    await again.close()


async def test_file_store_merges_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    await check_store(FileStore(tmp_path / "p.json"), FileStore(tmp_path / "p.json"))
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


async def test_file_store_keeps_the_old_file_when_a_write_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "p.json")
    await store.save({"calls:acme": A})

    def broken(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken)
    with pytest.raises(OSError):
        await store.save({"calls:acme": B})
    monkeypatch.undo()
    assert await FileStore(tmp_path / "p.json").load() == {"calls:acme": A}
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


async def test_redis_store_merges() -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    try:
        await check_store(RedisStore(REDIS_URL, prefix + "positions"),
                          RedisStore(REDIS_URL, prefix + "positions"))
    finally:
        await drop_prefix(REDIS_URL, prefix)


async def test_close_ends_an_iteration_waiting_for_events() -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    consumer = Consumer(REDIS_URL, ["calls:acme"], prefix=prefix, block=30.0)
    try:
        waiting = asyncio.create_task(anext(consumer))
        await asyncio.sleep(0.3)
        async with asyncio.timeout(10):
            await consumer.close()
            with pytest.raises(StopAsyncIteration):
                await waiting
    finally:
        await drop_prefix(REDIS_URL, prefix)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Consumer(REDIS_URL, [])
    with pytest.raises(ValueError):
        Consumer(REDIS_URL, ["bad channel"])
    with pytest.raises(ValueError):
        Consumer(REDIS_URL, ["calls:acme"], commit_every=0)
