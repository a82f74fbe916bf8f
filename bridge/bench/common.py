"""What every scenario shares: run parameters, Redis key clean-up, events, waiting for delivery."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from bridge.bench import proc
from bridge.bench.clients import Stats, Workers, stamp
from bridge.bench.report import percentile
from bridge.events.event import Event
from bridge.redisconn.clients import drop_prefix


@dataclass
class Options:
    redis_url: str = "redis://127.0.0.1:6379/0"
    workers: int = 2
    smoke: bool = False
    #: ``callbridge serve --workers``: processes of the callbridge target (1: the option is
    #: not passed). Its CPU and memory are summed over the process tree.
    server_workers: int = 1
    #: Niceness of the client worker processes (``--client-nice``): they stand in for remote
    #: clients, so when they and the system under test both want a core, it goes first.
    client_nice: int = 10


class CpuMeter:
    """CPU seconds the server (its whole process tree) and the client workers use between
    :meth:`start` and :meth:`stop`: whether a figure is bound by the server or by the clients
    sharing the machine."""

    def __init__(self, server_pid: int, client_pids: list[int]) -> None:
        self._server, self._clients = server_pid, client_pids
        self._s0 = self._c0 = 0.0
        self.server_s = self.clients_s = 0.0

    def start(self) -> None:
        self._s0 = proc.cpu_seconds(self._server, tree=True)
        self._c0 = proc.cpu_seconds_of(self._clients)

    def stop(self) -> None:
        self.server_s = proc.cpu_seconds(self._server, tree=True) - self._s0
        self.clients_s = proc.cpu_seconds_of(self._clients) - self._c0

    def fields(self, delivered: int) -> dict[str, float]:
        """``server_cpu_s``, ``clients_cpu_s`` and the server's CPU microseconds per frame
        delivered (0.0 when nothing was)."""
        return {"server_cpu_s": self.server_s, "clients_cpu_s": self.clients_s,
                "server_cpu_us_per_frame": self.server_s * 1e6 / delivered if delivered else 0.0}


def new_prefix() -> str:
    return f"callbridge-bench:{uuid.uuid4().hex[:10]}:"


def run_isolated(run: Any, p: dict[str, Any], opts: Any) -> dict[str, Any]:
    """``run(p, opts, prefix)`` under a fresh Redis key prefix, whose keys are dropped after."""
    prefix = new_prefix()
    try:
        return asyncio.run(run(p, opts, prefix))
    finally:
        asyncio.run(drop_prefix(opts.redis_url, prefix))


def bench_event(seq: int, tenant: str = "bench", extension: str | None = None) -> bytes:
    """A normalized event whose ``call_id`` carries the injection time."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Event(id=f"evt-{uuid.uuid4().hex}", type="call.created", provider="bench",
                 tenant=tenant, occurred_at=now, call_id=stamp(seq),
                 extension=extension).to_json()


def wait_delivered(workers: Workers, expected: int, *, quiet: float, limit: float) -> int:
    """Poll the clients until ``expected`` frames arrived, nothing came for ``quiet`` seconds,
    or ``limit`` seconds passed; returns the count."""
    start = last_change = time.monotonic()
    seen = -1
    while True:
        count = workers.received()
        now = time.monotonic()
        if count != seen:
            seen, last_change = count, now
        if count >= expected or now - last_change > quiet or now - start > limit:
            return count
        time.sleep(0.1)


def delivery_metrics(stats: Stats, expected: int, started: float) -> dict[str, Any]:
    lat = sorted(stats.latencies_ms)
    span = max(stats.last_rx - started, 1e-9)
    return {
        "clients": stats.opened, "connect_failed": stats.failed,
        "closed_early": stats.closed_early,
        "expected": expected, "delivered": stats.received,
        "lost": max(0, expected - stats.received),
        # frames beyond those expected: events callbridge made itself (a closing), or repeats
        "unexpected": max(0, stats.received - expected),
        "delivered_per_s": stats.received / span if stats.received else 0.0,
        "latency_p50_ms": percentile(lat, 0.50), "latency_p99_ms": percentile(lat, 0.99),
        "latency_max_ms": lat[-1] if lat else 0.0,
    }


async def paced(count: int, rate: float, send: Callable[[int], Any], window: int = 16) -> None:
    """Call ``await send(i)`` for ``i`` in ``range(count)``: ``rate`` per second (0: as fast as
    possible), at most ``window`` in flight."""
    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[Any]] = set()
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(i: int) -> None:
        try:
            await send(i)
        finally:
            slots.release()

    try:
        for i in range(count):
            if rate > 0:
                delay = t0 + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    finally:
        for task in pending:
            task.cancel()
