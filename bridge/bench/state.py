"""state: live call state at call-centre size, through Redis.

A run fills one tenant with ``calls`` active calls (two legs each, on ``2 * calls`` distinct
extensions, every leg created and answered and the A-leg bridged), then measures, all in the
same run:

- **publish throughput with state tracking on and off**: the same events (hold and unhold of
  the active legs) published through :class:`~bridge.brokers.redis.broker.RedisBroker` with
  their state change and without, in alternating blocks so both modes see the same machine;
- **snapshot latency and size, server side**: ``snapshot`` of ``calls:<tenant>`` plus the
  call and extension views, encoded as the ``state`` message;
- **snapshot latency, end to end**: a websocket client of a running ``callbridge serve``
  subscribing with ``"state": true``, from the ``subscribe`` sent to the ``state`` message
  received.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bridge.auth.tokens import mint
from bridge.bench import common
from bridge.bench.report import percentile
from bridge.bench.targets import callbridge_config, launch, new_secret
from bridge.brokers.redis.broker import RedisBroker
from bridge.calls import view
from bridge.calls.legs import change_for
from bridge.core.pipeline import channels_for
from bridge.events.event import Event, EventType, Party
from bridge.redisconn.clients import drop_prefix

TENANT = "bench"
CHANNEL = f"calls:{TENANT}"
HEADLINE = ["active_calls", "extensions", "publish_on_per_s", "publish_off_per_s",
            "on_over_off", "snapshot_p50_ms", "snapshot_p99_ms", "ws_state_p50_ms",
            "ws_state_p99_ms", "state_bytes"]
#: Events per alternating block of the on/off comparison.
BLOCK = 500


def params(smoke: bool, calls: int | None, events: int | None) -> dict[str, Any]:
    return {"calls": calls or (50 if smoke else 5000),
            "events": events or (400 if smoke else 20_000),
            "snapshots": 5 if smoke else 50}


def _event(kind: EventType, call: int, leg: str, second: int) -> Event:
    a_leg = leg == "a"
    extension = f"{2 * call + (0 if a_leg else 1):05d}"
    other = f"c{call}-{'b' if a_leg else 'a'}"
    return Event(
        id=f"st-{kind}-{call}-{leg}-{second}", type=kind, provider="bench", tenant=TENANT,
        occurred_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + ".000Z",
        call_id=f"c{call}-{leg}", other_leg_id=other, bridge_id=f"c{call}-a",
        extension=extension, direction="outgoing" if a_leg else "incoming",
        leg_direction="inbound" if a_leg else "outbound",
        caller=Party(f"{2 * call:05d}", None), callee=Party(f"{2 * call + 1:05d}", None))


async def _publish(broker: RedisBroker, event: Event, *, state: bool) -> None:
    await broker.publish(channels_for(event), event.to_json(), event_id=event.id,
                         change=change_for(event) if state else None)


async def _fill(broker: RedisBroker, calls: int) -> None:
    base = int(time.time()) - 60
    steps = [(EventType.CREATED, "a"), (EventType.CREATED, "b"), (EventType.ANSWERED, "b"),
             (EventType.ANSWERED, "a"), (EventType.BRIDGED, "a")]
    events = [_event(kind, call, leg, base + n) for call in range(calls)
              for n, (kind, leg) in enumerate(steps)]
    await common.paced(len(events), 0, lambda i: _publish(broker, events[i], state=True))


async def _throughput(broker: RedisBroker, calls: int, count: int) -> tuple[float, float]:
    """Events per second published with state on and off, in alternating blocks."""
    spent = {True: 0.0, False: 0.0}
    done = {True: 0, False: 0}
    second = int(time.time())
    for block in range(max(2, count // BLOCK)):
        state = block % 2 == 0
        kind = EventType.HELD if block % 4 < 2 else EventType.UNHELD
        events = [_event(kind, (block * BLOCK + i) % calls, "b", second + block)
                  for i in range(BLOCK)]

        async def send(i: int, block_events: list[Event] = events, on: bool = state) -> None:
            await _publish(broker, block_events[i], state=on)

        started = time.perf_counter()
        await common.paced(len(events), 0, send)
        spent[state] += time.perf_counter() - started
        done[state] += len(events)
    return done[True] / spent[True], done[False] / spent[False]


async def _snapshots(broker: RedisBroker, rounds: int) -> tuple[list[float], int]:
    latencies, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        snap = await broker.snapshot(CHANNEL)
        active = view.calls(snap.records)
        message = orjson.dumps({"type": "state", "id": None, "channel": CHANNEL,
                                "epoch": snap.epoch, "offset": snap.offset, "calls": active,
                                "extensions": view.extensions(snap.records, active=active)})
        latencies.append((time.perf_counter() - started) * 1000)
        size = len(message)
    return sorted(latencies), size


async def _ws_states(url: str, token: str, rounds: int) -> list[float]:
    latencies = []
    async with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await _next(ws, "welcome")
        for n in range(rounds):
            started = time.perf_counter()
            await ws.send(orjson.dumps({"type": "subscribe", "id": f"s{n}", "channels": [CHANNEL],
                                        "state": True}).decode())
            await _next(ws, "state")
            latencies.append((time.perf_counter() - started) * 1000)
            await ws.send(orjson.dumps({"type": "unsubscribe", "id": f"u{n}",
                                        "channels": [CHANNEL]}).decode())
            await _next(ws, "unsubscribed")
    return sorted(latencies)


async def _next(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] == kind:
                return message
            if message["type"] == "error":
                raise RuntimeError(f"callbridge refused: {message}")


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    prefix = common.new_prefix()
    secret = new_secret()
    config = callbridge_config(broker_url=opts.redis_url, prefix=prefix, jwt_secret=secret)
    try:
        async def measure() -> dict[str, Any]:
            broker = RedisBroker(opts.redis_url, prefix=prefix, probe_interval=None)
            await broker.start()
            try:
                await _fill(broker, p["calls"])
                on, off = await _throughput(broker, p["calls"], p["events"])
                local, size = await _snapshots(broker, p["snapshots"])
            finally:
                await broker.close()
            return {"publish_on_per_s": on, "publish_off_per_s": off, "on_over_off": on / off,
                    "snapshot_p50_ms": percentile(local, 0.5),
                    "snapshot_p99_ms": percentile(local, 0.99), "state_bytes": size}

        out = asyncio.run(measure())
        with launch(target, redis_url=opts.redis_url, channels=[], config=config,
                    server_workers=opts.server_workers) as t:
            token = mint(secret, sub="bench", channels=[CHANNEL], ttl=3600)
            remote = asyncio.run(_ws_states(t.client_url, token, p["snapshots"]))
        out.update(active_calls=p["calls"], extensions=2 * p["calls"],
                   ws_state_p50_ms=percentile(remote, 0.5),
                   ws_state_p99_ms=percentile(remote, 0.99))
        return out
    finally:
        asyncio.run(drop_prefix(opts.redis_url, prefix))
