"""``callbridge bench SCENARIO``: run a scenario against each target, ``runs`` times, interleaved.

Run ``r`` measures every target before run ``r + 1`` starts, so ratios between targets come
from the same run (same machine state). Results: JSON (``--json FILE``) and a printed table.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import statistics
import sys
from collections.abc import Callable
from typing import Any, Protocol, cast

from bridge.bench import common, proc, report
from bridge.bench.chaos.run import main as chaos_main
from bridge.bench.targets import TARGETS

SCENARIOS = ("callcenter", "chaos", "consumers", "firehose", "idle", "state", "upstream")
#: Scenarios that only make sense for callbridge (they drive its upstream side).
CALLBRIDGE_ONLY = {"callcenter", "consumers", "state", "upstream"}


class Scenario(Protocol):
    """What a scenario module (``bridge.bench.<name>``) provides."""

    #: The result fields the printed table shows.
    HEADLINE: list[str]
    #: The run's parameters from the command-line options (``--smoke`` first); each scenario
    #: takes its own options.
    params: Callable[..., dict[str, Any]]

    def run_once(self, target: str, p: dict[str, Any], opts: common.Options) -> dict[str, Any]:
        """One run against ``target``: its result fields."""


def _module(name: str) -> Scenario:
    # Imported on use: python-socketio (the bench extra) is only needed when a bench runs.
    # Imported by name, so mypy cannot check the module against Scenario; the smoke tests
    # run every one.
    return cast(Scenario, importlib.import_module(f"bridge.bench.{name}"))


def add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("scenario", choices=SCENARIOS,
                       help="what to measure (docs/performance.md describes each)")
    bench.add_argument("--runs", type=int, default=3, help="runs per target (median reported)")
    bench.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness only")
    bench.add_argument("--json", metavar="FILE", help="write the full results here")
    bench.add_argument("--targets", default=",".join(TARGETS),
                       help="comma-separated: callbridge,ceiling,peer")
    bench.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379/0",
                       help="the Redis server the targets and scenarios use")
    bench.add_argument("--workers", type=int, default=2, help="client processes")
    bench.add_argument("--server-workers", type=int, default=1, metavar="N",
                       help="callbridge target: run it as callbridge serve --workers N (its "
                            "CPU and memory summed over its processes); default: %(default)s")
    bench.add_argument("--client-nice", type=int, default=10, metavar="N",
                       help="niceness of the client worker processes, 0 to 19: they stand in "
                            "for remote clients but share this machine, so when both want a "
                            "core the system under test goes first (0: same priority); "
                            "default: %(default)s")
    bench.add_argument("--pool", type=int, help="consumers: worker processes of the group (4)")
    bench.add_argument("--clients", type=int, help="connections (scenario default otherwise)")
    bench.add_argument("--events", type=int,
                       help="firehose: events injected; state: events of the on/off comparison; "
                            "consumers: events in the channel")
    bench.add_argument("--calls", type=int, help="state: active calls (two extensions each)")
    bench.add_argument("--rate", type=float, help="callcenter: upstream events per second")
    bench.add_argument("--duration", type=float,
                       help="callcenter/upstream: seconds of traffic; idle: seconds at rest")
    bench.add_argument("--streams", type=int, help="upstream: upstream streams (accounts)")
    bench.add_argument("--token-lifetime", type=float, help="upstream: token lifetime, seconds")
    bench.add_argument("--apps", type=int,
                       help="upstream: oapi apps the streams use (default: one per 50 "
                            "streams; streams of one app share its token)")
    chaos = bench.add_argument_group(
        "chaos", "load and combined faults on real processes, checked from outside "
                 "(docs/operations.md); --runs, --clients, --duration and --json apply too")
    chaos.add_argument("--profile", choices=("long", "short", "large"),
                       help="chaos: run size, long or short (default: short); callcenter: "
                            "large for 10,000 softphones and 100 supervisors for 60 s")
    chaos.add_argument("--seed", type=int,
                       help="chaos: the first run's seed, to replay a run (default: random)")
    chaos.add_argument("--keep", metavar="DIR",
                       help="chaos: keep each run's configurations, logs and client records")


def scenario_params(args: argparse.Namespace) -> dict[str, Any]:
    name = args.scenario
    scenario = _module(name)
    if name == "firehose":
        return scenario.params(args.smoke, args.clients, args.events)
    if name == "consumers":
        return scenario.params(args.smoke, args.events, args.pool)
    if name == "state":
        return scenario.params(args.smoke, args.calls, args.events)
    if name == "idle":
        return scenario.params(args.smoke, args.clients, args.duration)
    if name == "callcenter":
        return scenario.params(args.smoke, args.clients, args.rate, args.duration, args.profile)
    return scenario.params(args.smoke, args.streams, args.token_lifetime, args.duration,
                           args.apps)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    module = _module(args.scenario)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"callbridge bench: unknown target(s): {', '.join(unknown)}")
    if args.scenario in CALLBRIDGE_ONLY:
        targets = ["callbridge"]
    if args.runs < 1:
        raise SystemExit("callbridge bench: --runs must be at least 1")
    if args.server_workers < 1:
        raise SystemExit("callbridge bench: --server-workers must be at least 1")
    if not 0 <= args.client_nice <= 19:
        raise SystemExit("callbridge bench: --client-nice must be 0 to 19")
    if args.profile is not None and args.scenario != "callcenter":
        raise SystemExit(f"callbridge bench: --profile {args.profile} is for callcenter "
                         "(large) and chaos (long, short)")
    if args.profile not in (None, "large") and args.scenario == "callcenter":
        raise SystemExit("callbridge bench: callcenter has one --profile: large")
    params = scenario_params(args)
    # The servers under test and the client workers inherit it: thousands of sockets each.
    proc.raise_nofile()
    opts = common.Options(redis_url=args.redis, workers=args.workers, smoke=args.smoke,
                          server_workers=args.server_workers, client_nice=args.client_nice)
    per_target: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    for r in range(args.runs):
        for t in targets:
            print(f"[{args.scenario}] run {r + 1}/{args.runs}: {t} ...", file=sys.stderr,
                  flush=True)
            per_target[t].append(module.run_once(t, params, opts))
    command = "callbridge " + " ".join(shlex.quote(a) for a in argv)
    data = report.result(args.scenario, command, params, per_target, module.HEADLINE)
    data["ratios"] = ratios(args.scenario, per_target)
    return data


def ratios(scenario: str, per_target: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Firehose, median of per-run ratios against each other target: callbridge's throughput
    over theirs (``callbridge_over_X``), and callbridge's server CPU per delivered frame over
    theirs (``callbridge_cpu_per_frame_over_X``: 1.0 is as cheap, 2.0 twice the cost)."""
    out: dict[str, float] = {}
    if scenario != "firehose" or "callbridge" not in per_target:
        return out
    ours = per_target["callbridge"]
    for other in ("ceiling", "peer"):
        theirs = per_target.get(other, [])
        for key, name in (("delivered_per_s", f"callbridge_over_{other}"),
                          ("server_cpu_us_per_frame", f"callbridge_cpu_per_frame_over_{other}")):
            pairs = [a[key] / b[key] for a, b in zip(ours, theirs) if b[key] and a[key]]
            if pairs:
                out[name] = statistics.median(pairs)
    return out


def main(args: argparse.Namespace, argv: list[str]) -> int:
    if args.scenario == "chaos":
        if args.profile not in (None, "long", "short"):
            raise SystemExit(f"callbridge bench: chaos has no --profile {args.profile}")
        args.profile = args.profile or "short"
        return chaos_main(args, argv)
    data = run(args, argv)
    print(report.table(data))
    for name, value in data["ratios"].items():
        print(f"{name}: {value:.2f}x")
    if args.json:
        with open(args.json, "wb") as f:
            f.write(report.dumps(data))
    return 0
