"""idle: many authenticated, subscribed connections doing nothing: memory each, CPU at rest.

Memory per connection = (server RSS with the clients connected - RSS before) / connections;
CPU at rest = server CPU seconds over ``rest`` seconds, as a share of one core. Each
callbridge client holds its own extension channel; peer clients join one room each; the ceiling
has no subscriptions. callbridge runs on ``memory://``: nothing is published.
"""

from __future__ import annotations

import time
from typing import Any

from bridge.auth.tokens import mint
from bridge.bench import common, proc
from bridge.bench.clients import Plan, start_workers
from bridge.bench.targets import callbridge_config, launch, new_secret

HEADLINE = ["clients", "connect_failed", "bytes_per_conn", "cpu_at_rest_pct"]


def params(smoke: bool, clients: int | None, rest: float | None) -> dict[str, Any]:
    return {"clients": clients or (50 if smoke else 10_000),
            "rest": rest or (1.0 if smoke else 30.0)}


def run_once(target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
    prefix = common.new_prefix()
    secret = new_secret()
    config = callbridge_config(broker_url="memory://", prefix=prefix, jwt_secret=secret)
    with launch(target, redis_url=opts.redis_url, channels=[prefix + "idle"],
                config=config, server_workers=opts.server_workers) as t:
        subs = [[f"calls:bench:{1000 + i}"] for i in range(p["clients"])]
        token = mint(secret, sub="bench", channels=["calls:bench:*"], ttl=3600)
        time.sleep(0.5)  # let start-up allocations settle
        before = proc.rss_bytes(t.pid, tree=True)
        workers, ready = start_workers(Plan(target, t.client_url, subs, token=token),
                                       opts.workers, timeout=300, nice=opts.client_nice)
        try:
            time.sleep(0.5)
            after = proc.rss_bytes(t.pid, tree=True)
            cpu0, t0 = proc.cpu_seconds(t.pid, tree=True), time.monotonic()
            time.sleep(p["rest"])
            cpu = proc.cpu_seconds(t.pid, tree=True) - cpu0
            elapsed = time.monotonic() - t0
        finally:
            stats = workers.stop()
    return {"clients": ready.opened, "connect_failed": ready.failed,
            "closed_early": stats.closed_early, "rss_before": before, "rss_after": after,
            "bytes_per_conn": (after - before) / max(1, ready.opened),
            "cpu_at_rest_pct": 100 * cpu / elapsed, "errors": ready.errors + stats.errors}
