"""callcenter: softphones on their own extension channel, supervisors on the tenant channel.

Sizes: the default (1,000 softphones, 10 supervisors, 200 events/s for 30 s) and ``--profile
large`` (10,000 softphones, 100 supervisors, 200 events/s for 60 s); ``--smoke`` shrinks
either. Memory per connection is measured before any traffic: server RSS once the clients are
connected and subscribed, minus RSS before they connected, over the connections.

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
from bridge.upstream.kazoo import GREGORIAN_OFFSET

HEADLINE = ["latency_p50_ms", "latency_p99_ms", "latency_max_ms", "lost", "unexpected",
            "server_cpu_s", "server_cpu_us_per_frame", "clients_cpu_s", "bytes_per_conn"]
#: Seconds to let the server's memory settle before each RSS reading.
SETTLE = 0.5
#: Seconds the client workers may take to connect and subscribe (10,100 at the large size).
CONNECT_TIMEOUT = 300.0
APP, SECRET, ACCOUNT = "bench-app", "bench-app-secret-0123456789", "acct-bench"
#: (softphones, supervisors, events/s, seconds) by profile, full size and ``--smoke``.
SIZES: dict[str, dict[bool, tuple[int, int, float, float]]] = {
    "default": {False: (1000, 10, 200.0, 30.0), True: (20, 2, 20.0, 2.0)},
    "large": {False: (10_000, 100, 200.0, 60.0), True: (200, 2, 20.0, 1.0)},
}


def params(smoke: bool, clients: int | None, rate: float | None, duration: float | None,
           profile: str | None = None) -> dict[str, Any]:
    softphones, supervisors, default_rate, default_duration = SIZES[profile or "default"][smoke]
    return {"profile": profile or "default", "softphones": clients or softphones,
            "supervisors": supervisors, "rate": rate or default_rate,
            "duration": duration or default_duration}


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    return common.run_isolated(_run, p, opts)


def payload(seq: int, extension: str) -> dict[str, Any]:
    """A call starting now: a leg older than ``[state] max_call_age`` would be closed by the
    state's sweep, a ``call.ended`` more for every client of the call."""
    return {"Event-Category": "call_event", "Event-Name": "CHANNEL_CREATE",
            "Call-ID": stamp(seq), "Call-Direction": "inbound", "Msg-ID": f"m{seq}",
            "Caller-ID-Number": extension, "Callee-ID-Number": "5550100",
            "Presence-ID": f"{extension}@bench.local",
            "Timestamp": int(time.time()) + GREGORIAN_OFFSET,
            "Custom-Channel-Vars": {"Account-ID": ACCOUNT, "Username": extension}}


async def _run(p: dict[str, Any], opts: common.Options, prefix: str) -> dict[str, Any]:
    extensions = [str(10000 + i) for i in range(p["softphones"])]
    settings = SimulatorSettings(apps={APP: SECRET}, accounts=[ACCOUNT], extensions=extensions,
                                 traffic=False, dialects=("kazoo-json",))
    async with bridge_on_simulator(settings, broker_url=opts.redis_url, prefix=prefix,
                                   server_workers=opts.server_workers) as (sim, t, _):
        token = mint(t.jwt_secret, sub="bench", channels=[f"calls:{TENANT}",
                                                          f"calls:{TENANT}:*"], ttl=3600)
        subs = [[f"calls:{TENANT}:{e}"] for e in extensions]
        subs += [[f"calls:{TENANT}"]] * p["supervisors"]
        await asyncio.sleep(SETTLE)  # start-up allocations settle before the baseline
        rss_before = proc.rss_bytes(t.pid, tree=True)
        workers, ready = await asyncio.to_thread(
            start_workers, Plan("callbridge", t.client_url, subs, token=token), opts.workers,
            timeout=CONNECT_TIMEOUT, nice=opts.client_nice)
        try:
            await asyncio.sleep(SETTLE)
            rss_after = proc.rss_bytes(t.pid, tree=True)
            count = int(p["rate"] * p["duration"])
            meter = common.CpuMeter(t.pid, workers.pids)
            meter.start()
            started = time.time()

            async def send(i: int) -> None:
                sim.emit(ACCOUNT, "CHANNEL_CREATE", payload(i, extensions[i % len(extensions)]))

            await common.paced(count, p["rate"], send)
            expected = count * (1 + p["supervisors"])
            await asyncio.to_thread(common.wait_delivered, workers, expected, quiet=3.0,
                                    limit=60.0)
            meter.stop()
        finally:
            stats = await asyncio.to_thread(workers.stop)
    out = common.delivery_metrics(stats, expected, started)
    out.update(meter.fields(stats.received), injected=count, errors=stats.errors,
               rss_before=rss_before, rss_after=rss_after,
               bytes_per_conn=(rss_after - rss_before) / max(1, ready.opened))
    return out
