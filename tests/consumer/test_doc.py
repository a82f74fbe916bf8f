"""The consumer example of docs/consumers.md, run as written, killed and restarted."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.consumer.position import FileStore
from tests.consumer.processes import ROOT, Process
from tests.consumer.publishing import REDIS_URL, publish

DOC = Path(ROOT) / "docs" / "consumers.md"


def example() -> str:
    """The first Python block of the doc."""
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None
    return match[1]


@pytest.mark.timeout(180)
async def test_killed_consumer_misses_nothing_and_repeats_nothing_after_its_commit(
        prefix: str, tmp_path: Path) -> None:
    assert len(example().strip().splitlines()) <= 25
    (tmp_path / "follow.py").write_text(example())
    args = ["follow.py", REDIS_URL, prefix, "calls:acme"]
    client = aioredis.Redis.from_url(REDIS_URL)
    published: list[str] = []

    async def publisher() -> None:
        for n in range(150):
            published.append(await publish(client, prefix, "calls:acme", n))
            await asyncio.sleep(0.01)

    try:
        first = await Process.start(args, cwd=str(tmp_path))
        feed = asyncio.create_task(publisher())
        await first.read(40)
        await first.stop(signal.SIGKILL)  # mid-stream: events are still being published
        before = [line.split()[1] for line in await first.drain()]
        committed = (await FileStore(tmp_path / "positions.json").load())["calls:acme"]

        second = await Process.start(args, cwd=str(tmp_path))
        await feed
        after_commit = published[published.index(committed.offset) + 1:]
        await second.read(len(after_commit))
        await asyncio.sleep(0.5)  # time to print a repeat, were there one
        await second.stop()
        after = [line.split()[1] for line in await second.drain()]
    finally:
        await client.aclose()
    # The first run handled a prefix of the events and committed all but at most the last one
    # it printed (killed between its print and its commit).
    assert before == published[:len(before)]
    assert committed.offset in before[-2:]
    # The second run starts right after the commit: nothing missed, nothing up to it again.
    assert after == after_commit
    assert set(before) | set(after) == set(published)


def section_example(heading: str) -> str:
    """The first Python block after ``heading`` in the doc."""
    text = DOC.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match is not None, heading
    return match[1]


async def test_the_worker_pool_example_handles_and_acknowledges_every_event(
        prefix: str) -> None:
    code = section_example("## Worker pools (consumer groups)")
    code = code.replace('"redis://redis:6379/0"', repr(REDIS_URL))
    code = code.replace('prefix="callbridge:"', f"prefix={prefix!r}")
    imports = [line for line in code.splitlines() if line.startswith(("from ", "import "))]
    body = [line for line in code.splitlines() if line and line not in imports]
    assert len(imports) + len(body) <= 10
    source = "\n".join(imports + ["async def pool(send):"] + ["    " + line for line in body])
    namespace: dict[str, object] = {}
    exec(compile(source, "docs/consumers.md", "exec"), namespace)
    handled: list[int] = []

    async def send(event: dict[str, object]) -> None:
        handled.append(int(str(event["n"])))

    client = aioredis.Redis.from_url(REDIS_URL)
    worker = asyncio.create_task(namespace["pool"](send))  # type: ignore[operator]
    stream = f"{prefix}{{calls:acme}}:stream"
    try:
        async with asyncio.timeout(10):
            while not await client.exists(stream):
                await asyncio.sleep(0.05)  # the group is created when the pool starts
        for n in range(5):
            await publish(client, prefix, "calls:acme", n)
        async with asyncio.timeout(10):
            while len(handled) < 5:
                await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            while (await client.xpending(stream, f"{prefix}webhooks"))["pending"]:
                await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await client.aclose()
    assert handled == [0, 1, 2, 3, 4]
