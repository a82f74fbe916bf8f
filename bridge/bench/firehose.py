"""firehose: many clients on one channel, events injected as fast as possible.

Feeding: callbridge and the ceiling both get each event from one ``RedisBroker.publish`` (the
pipeline's own publish: Lua script, stream append, PUBLISH of the envelope); callbridge reads it
through its Redis broker, the ceiling by subscribing to the same pub/sub name. The peer gets the
same event (the envelope, as a JSON object) through ``AsyncRedisManager.emit``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bridge.auth.tokens import mint
from bridge.bench import common, peer
from bridge.bench.clients import Plan, start_workers
from bridge.bench.targets import callbridge_config, launch, new_secret
from bridge.brokers.redis import wire as redis_wire
from bridge.brokers.redis.broker import RedisBroker
from bridge.events.event import envelope
from bridge.redisconn.clients import drop_prefix

CHANNEL = "calls:bench"
HEADLINE = ["delivered_per_s", "lost", "clients", "server_cpu_s", "server_cpu_us_per_frame",
            "clients_cpu_s", "latency_p99_ms"]


def params(smoke: bool, clients: int | None, events: int | None) -> dict[str, Any]:
    return {"clients": clients or (20 if smoke else 1000),
            "events": events or (50 if smoke else 2000)}


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    prefix = common.new_prefix()
    secret = new_secret()
    config = callbridge_config(broker_url=opts.redis_url, prefix=prefix, jwt_secret=secret)
    sio_channel = prefix + "socketio"
    names = [redis_wire.pubsub_channel(prefix, CHANNEL)] if target != "peer" else [sio_channel]
    try:
        with launch(target, redis_url=opts.redis_url, channels=names, config=config,
                    server_workers=opts.server_workers) as t:
            token = mint(secret, sub="bench", channels=[CHANNEL], ttl=3600)
            plan = Plan(target, t.client_url, [[CHANNEL]] * p["clients"], token=token)
            workers, ready = start_workers(plan, opts.workers, nice=opts.client_nice)
            try:
                meter = common.CpuMeter(t.pid, workers.pids)
                meter.start()
                started = time.time()
                asyncio.run(_inject(target, p["events"], prefix, sio_channel, opts.redis_url))
                expected = p["events"] * ready.opened
                common.wait_delivered(workers, expected, quiet=3.0, limit=120.0)
                meter.stop()
            finally:
                stats = workers.stop()
            out = common.delivery_metrics(stats, expected, started)
            out.update(meter.fields(stats.received), injected=p["events"], errors=stats.errors)
            return out
    finally:
        asyncio.run(drop_prefix(opts.redis_url, prefix))


async def _inject(target: str, events: int, prefix: str, sio_channel: str,
                  redis_url: str) -> None:
    if target == "peer":
        emitter = peer.emitter(redis_url, sio_channel)

        async def send_sio(i: int) -> None:
            frame = envelope(CHANNEL, "bench", f"0-{i}", common.bench_event(i))
            await emitter.emit("event", orjson.loads(frame), room=CHANNEL)

        try:
            await common.paced(events, 0, send_sio)
        finally:
            client = getattr(emitter, "redis", None)
            if client is not None:  # python-socketio has no close(); its pool must not leak
                await client.aclose()
                await client.connection_pool.disconnect()
        return
    broker = RedisBroker(redis_url, prefix=prefix, probe_interval=None)
    await broker.start()
    try:
        async def send(i: int) -> None:
            await broker.publish([CHANNEL], common.bench_event(i), event_id=f"fh-{i}")

        await common.paced(events, 0, send)
    finally:
        await broker.close()
