"""callcenter: softphones on their own extension channel, supervisors on the tenant channel.

Feeding: the AntBuddy simulator (in the driver process, Kazoo JSON dialect) emits a
``CHANNEL_CREATE`` per event for extension ``i mod softphones``, at ``rate`` per second;
callbridge reads it upstream, normalizes it and publishes through Redis. Latency: the
simulator's ``Call-ID`` carries the emit time; a client records its receive time minus that.
Each event is expected once by its softphone and once by every supervisor.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.auth.tokens import mint
from bridge.bench import common, proc
from bridge.bench.clients import Plan, stamp, start_workers
from bridge.bench.upstream_sim import TENANT, bridge_on_simulator
from bridge.simulator.app import SimulatorSettings

HEADLINE = ["latency_p50_ms", "latency_p99_ms", "latency_max_ms", "lost", "server_cpu_s"]
APP, SECRET, ACCOUNT = "bench-app", "bench-app-secret-0123456789", "acct-bench"


def params(smoke: bool, clients: int | None, rate: float | None,
           duration: float | None) -> dict[str, Any]:
    return {"softphones": clients or (20 if smoke else 1000), "supervisors": 2 if smoke else 10,
            "rate": rate or (20.0 if smoke else 200.0), "duration": duration or (2.0 if smoke else 30.0)}


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    return common.run_isolated(_run, p, opts)


def payload(seq: int, extension: str) -> dict[str, Any]:
    return {"Event-Category": "call_event", "Event-Name": "CHANNEL_CREATE",
            "Call-ID": stamp(seq), "Call-Direction": "inbound", "Msg-ID": f"m{seq}",
            "Caller-ID-Number": extension, "Callee-ID-Number": "5550100",
            "Presence-ID": f"{extension}@bench.local", "Timestamp": 63_900_000_000 + seq,
            "Custom-Channel-Vars": {"Account-ID": ACCOUNT, "Username": extension}}


async def _run(p: dict[str, Any], opts: common.Options, prefix: str) -> dict[str, Any]:
    extensions = [str(10000 + i) for i in range(p["softphones"])]
    settings = SimulatorSettings(apps={APP: SECRET}, accounts=[ACCOUNT], extensions=extensions,
                                 traffic=False, dialects=("kazoo-json",))
    async with bridge_on_simulator(settings, broker_url=opts.redis_url, prefix=prefix) as (
            sim, t, _):
        token = mint(t.jwt_secret, sub="bench", channels=[f"calls:{TENANT}",
                                                          f"calls:{TENANT}:*"], ttl=3600)
        subs = [[f"calls:{TENANT}:{e}"] for e in extensions]
        subs += [[f"calls:{TENANT}"]] * p["supervisors"]
        workers, ready = await asyncio.to_thread(
            start_workers, Plan("callbridge", t.client_url, subs, token=token), opts.workers)
        try:
            count = int(p["rate"] * p["duration"])
            cpu0 = proc.cpu_seconds(t.pid)
            started = time.time()

            async def send(i: int) -> None:
                sim.emit(ACCOUNT, "CHANNEL_CREATE", payload(i, extensions[i % len(extensions)]))

            await common.paced(count, p["rate"], send)
            expected = count * (1 + p["supervisors"])
            await asyncio.to_thread(common.wait_delivered, workers, expected, quiet=3.0,
                                    limit=60.0)
            cpu = proc.cpu_seconds(t.pid) - cpu0
        finally:
            stats = await asyncio.to_thread(workers.stop)
    out = common.delivery_metrics(stats, expected, started)
    out.update(server_cpu_s=cpu, injected=count, errors=stats.errors)
    return out
