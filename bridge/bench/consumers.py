"""consumers: how fast back-end consumers read a channel from Redis.

A run appends ``events`` events to one channel's stream (the publish script, as the pipeline
does), then measures in the same run:

- **one consumer** (:class:`~bridge.consumer.follow.Consumer`) reading the channel from its
  first event, as a process restarted far behind would: events per second from its start to
  the last event;
- **a worker pool** of ``workers`` (4) processes sharing one consumer group
  (:class:`~bridge.consumer.groups.GroupConsumer`, ``start="all"``), each acknowledging every
  delivery: events per second from the pool's first acknowledgement to its last.

Every figure includes the decoding of each envelope's event (what a consumer does first).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

import redis.asyncio as aioredis

from bridge.bench import common
from bridge.brokers.redis import wire
from bridge.consumer.follow import Consumer
from bridge.consumer.groups import GroupConsumer
from bridge.consumer.items import Envelope
from bridge.redisconn.clients import drop_prefix

CHANNEL = "calls:bench"
GROUP = "bench-pool"
HEADLINE = ["events", "one_consumer_per_s", "pool_workers", "pool_per_s"]


def params(smoke: bool, events: int | None, workers: int | None) -> dict[str, Any]:
    return {"events": events or (300 if smoke else 100_000), "pool": workers or 4}


async def _fill(url: str, prefix: str, count: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        batch = 500
        for start in range(0, count, batch):
            pipe = client.pipeline(transaction=False)
            for n in range(start, min(count, start + batch)):
                keys, args = wire.publish_keys_and_args(
                    prefix, [CHANNEL], common.bench_event(n), history_length=count,
                    event_id=None, dedup_ms=0)
                pipe.eval(wire.PUBLISH_SCRIPT, len(keys), *keys, *args)
            await pipe.execute()
    finally:
        await client.aclose()


async def _one(url: str, prefix: str, count: int) -> float:
    started = time.perf_counter()
    seen = 0
    async with Consumer(url, [CHANNEL], prefix=prefix, start="earliest") as consumer:
        async for item in consumer:
            if isinstance(item, Envelope):
                item.event  # noqa: B018  (decoded, as a consumer would)
                seen += 1
                if seen == count:
                    break
        elapsed = time.perf_counter() - started  # to the last event, not the close after it
    return count / elapsed


def _worker(url: str, prefix: str, name: str, done: Any, stop: Any) -> None:
    async def run() -> None:
        async with GroupConsumer(url, [CHANNEL], group=GROUP, consumer=name, prefix=prefix,
                                 start="all", batch=200, block=0.2) as pool:
            iterator = pool.__aiter__()
            while not stop.is_set():
                try:
                    delivery = await asyncio.wait_for(iterator.__anext__(), 0.5)
                except TimeoutError:
                    continue
                delivery.envelope.event  # noqa: B018  (decoded, as a worker would)
                await pool.ack(delivery)
                with done.get_lock():
                    done.value += 1

    asyncio.run(run())


def _pool(url: str, prefix: str, count: int, workers: int) -> float:
    context = multiprocessing.get_context("spawn")
    done = context.Value("q", 0)
    stop = context.Event()
    procs = [context.Process(target=_worker, args=(url, prefix, f"w{i}", done, stop),
                             daemon=True) for i in range(workers)]
    for proc in procs:
        proc.start()
    deadline = time.perf_counter() + 600
    first: float | None = None  # the processes' start-up is not the pool's speed
    try:
        while done.value < count and time.perf_counter() < deadline:
            if first is None and done.value:
                first = time.perf_counter()
            time.sleep(0.001)
        elapsed = time.perf_counter() - (first or deadline)
    finally:
        stop.set()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    if done.value < count:
        raise RuntimeError(f"the pool acknowledged {done.value} of {count} events in 600 s")
    return count / elapsed


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    prefix = common.new_prefix()
    try:
        asyncio.run(_fill(opts.redis_url, prefix, p["events"]))
        one = asyncio.run(_one(opts.redis_url, prefix, p["events"]))
        pool = _pool(opts.redis_url, prefix, p["events"], p["pool"])
        return {"events": p["events"], "one_consumer_per_s": one, "pool_workers": p["pool"],
                "pool_per_s": pool}
    finally:
        asyncio.run(drop_prefix(opts.redis_url, prefix))
