"""upstream: many upstream streams with short-lived tokens: refresh rate, CPU, resubscribes.

Each stream is its own simulator account. Accounts are spread over oapi apps, 50 to an app by
default (``--apps N`` sets the number of apps): streams of one app share its token, as an
integrator with one AntBuddy app per customer and many accounts runs. With an app per stream
(``--apps`` = streams) no schedule can meet a low peak: 500 tokens living 60 s need 8.3
refreshes a second on average. The simulator's token store is wrapped to record when each
token was issued:
refreshes are the issues after an app's first; the peak is the busiest one-second window.
Failed resubscribes: streams not ``subscribed`` in /readyz at the end, plus their reconnects.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bridge.bench import common, proc
from bridge.bench.upstream_sim import bridge_on_simulator, readyz
from bridge.simulator.app import SimulatorSettings

HEADLINE = ["streams", "refreshes", "refresh_peak_per_s", "server_cpu_pct",
            "failed_resubscribes"]


def params(smoke: bool, streams: int | None, lifetime: float | None,
           duration: float | None, apps: int | None = None) -> dict[str, Any]:
    n = streams or (5 if smoke else 500)
    return {"streams": n, "apps": min(apps or max(1, n // 50), n),
            "token_lifetime": lifetime or (4.0 if smoke else 60.0),
            "duration": duration or (6.0 if smoke else 300.0)}


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    return common.run_isolated(_run, p, opts)


async def _run(p: dict[str, Any], opts: common.Options, prefix: str) -> dict[str, Any]:
    n = p["streams"]
    apps = {f"bench-app-{i:04d}": f"bench-secret-{i:04d}-0123456789"
            for i in range(p.get("apps", n))}
    settings = SimulatorSettings(apps=apps, accounts=[f"acct-{i:04d}" for i in range(n)],
                                 traffic=False, dialects=("kazoo-json",),
                                 token_lifetime=p["token_lifetime"])
    issued: list[tuple[float, str]] = []
    async with bridge_on_simulator(settings, broker_url=opts.redis_url, prefix=prefix,
                                   ready_timeout=300, server_workers=opts.server_workers
                                   ) as (sim, t, ready_s):
        def recording(app_id: str, token: str) -> None:
            issued.append((time.monotonic(), app_id))

        sim.tokens.on_issue.append(recording)
        cpu0, t0 = proc.cpu_seconds(t.pid, tree=True), time.monotonic()
        await asyncio.sleep(p["duration"])
        cpu, elapsed = proc.cpu_seconds(t.pid, tree=True) - cpu0, time.monotonic() - t0
        _, body = await readyz(t)
    buckets = Counter(int(at - t0) for at, _ in issued)
    streams = body.get("streams", [])
    not_subscribed = sum(1 for s in streams if s.get("state") != "subscribed")
    reconnects = sum(int(s.get("reconnects", 0)) for s in streams)
    return {"streams": len(streams), "ready_s": ready_s, "refreshes": len(issued),
            "refresh_peak_per_s": max(buckets.values(), default=0),
            "rotations": sum(int(s.get("rotations", 0)) for s in streams),
            "server_cpu_pct": 100 * cpu / elapsed, "reconnects": reconnects,
            "not_subscribed": not_subscribed, "failed_resubscribes": not_subscribed + reconnects}
