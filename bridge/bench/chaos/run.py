"""``callbridge bench chaos``: one or more seeded runs, each checked, and a report.

A run: the rig starts (:mod:`bridge.bench.chaos.rig`), every client subscribes, call traffic starts,
the scheduled faults are done as they come due (:mod:`bridge.bench.chaos.faults`), traffic stops,
everything is brought back up, the clients are given time to receive what is still on its
way, and then what they received is checked (:mod:`bridge.bench.chaos.check`) together with what
the probes found and with the instances' logs searched for every secret of the run. Exit
status 0 only when every run has no violation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any, cast

import orjson

from bridge.bench.chaos import check, faults
from bridge.bench.chaos.plan import PROFILES, Fault, Profile, schedule
from bridge.bench.chaos.records import Run
from bridge.bench.chaos.rig import Rig
from bridge.common import redact

#: Seconds without a new frame anywhere after which the clients are taken to have it all.
QUIET = 4.0
_JWT = re.compile(rb"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")


async def run_once(profile: Profile, seed: int, directory: str) -> dict[str, Any]:
    plan = schedule(profile, seed)
    rng = random.Random(seed)
    rig = Rig(profile, seed, directory)
    began = time.time()
    async with rig.running():
        ready = await rig.start_clients()
        if ready.subscribed < ready.clients:
            raise RuntimeError(f"only {ready.subscribed} of {ready.clients} clients subscribed")
        rig.simulator.start_traffic()
        traffic_start = time.time()
        tasks = [asyncio.create_task(_at(rig, fault, traffic_start, rng), name=fault.kind)
                 for fault in plan]
        await asyncio.sleep(profile.duration)
        await rig.simulator.stop_traffic()
        traffic_end = time.time()
        await asyncio.gather(*tasks)
        recovered = await rig.wait_ready(90.0)
        frames = await _quiesce(rig)
    records = _records(rig)
    run_input = _run_input(rig, records, traffic_end)
    with open(os.path.join(directory, "signals.json"), "wb") as f:  # for a post-mortem
        f.write(orjson.dumps({k: v for k, v in run_input.items() if k != "clients"}))
    report = check.check(run_input)
    secrets_found = _secrets_in_logs(rig)
    violations: list[dict[str, Any]] = [*map(asdict, report.violations),
                                        *rig.tally.violations]
    counts = {k: n for k, n in report.counts.items() if n}
    for v in rig.tally.violations:
        counts[v["kind"]] = counts.get(v["kind"], 0) + 1
    if secrets_found:
        violations.append({"kind": "secret_in_log", "detail": ", ".join(secrets_found)})
        counts["secret_in_log"] = len(secrets_found)
    if not recovered:
        violations.append({"kind": "not_ready", "detail": "an instance was not ready 90 s "
                                                          "after the last fault"})
        counts["not_ready"] = 1
    return {
        "seed": seed, "profile": profile.name, "seconds": round(time.time() - began, 1),
        "clients": profile.clients, "instances": profile.instances,
        "faults": [{"at": f.at, "kind": f.kind, "target": f.target, "seconds": f.seconds}
                   for f in plan],
        "done": rig.log, "frames_received": frames, "stats": report.as_dict()["stats"],
        "probes": rig.tally.checked, "uncovered_upstream": _uncovered(rig),
        "violation_counts": counts, "violations": violations[:200], "ok": not counts,
    }


async def _at(rig: Rig, fault: Fault, start: float, rng: random.Random) -> None:
    await asyncio.sleep(max(0.0, start + fault.at - time.time()))
    try:
        await faults.do(rig, fault, random.Random(rng.random()))
    except Exception as exc:  # a fault that failed is a finding about the harness, noted
        rig.note(fault.kind, fault.target, time.time(), f"failed: {redact.redact(repr(exc))}")


async def _quiesce(rig: Rig, limit: float = 90.0) -> int:
    """Wait until no client received a frame for :data:`QUIET` seconds; the frame count."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        frames = (await rig.summary()).frames
        if frames != last:
            last, since = frames, time.monotonic()
        elif time.monotonic() - since >= QUIET:
            break
        await asyncio.sleep(0.5)
    return last


def _records(rig: Rig) -> list[dict[str, Any]]:
    out = []
    for worker in rig.workers:
        with open(worker.out_path, "rb") as f:
            out += [orjson.loads(line) for line in f if line.strip()]
    return out


def _run_input(rig: Rig, records: list[dict[str, Any]], traffic_end: float) -> Run:
    journal = [(t, call_id, msg_id) for t, _, call_id, msg_id, _ in rig.simulator.sent]
    return cast(Run, {"clients": records, "journal": journal,
                            "loss_windows": _upstream_loss(rig),
                            "buffer_loss_windows": _buffer_loss(rig),
                            "data_losses": [(e["start"], e["end"]) for e in rig.log
                                            if e["kind"] == "redis_kill"
                                            and not e["detail"].startswith("skipped")],
                            "traffic_end": traffic_end})


#: Faults after which upstream signals may be lost, as docs/operations.md and docs/upstream.md
#: say, with how long before the fault (in flight) and after it (until some instance has
#: subscribed upstream again) a signal may be.
_UPSTREAM_LOSS = {"instance_kill": (1.0, 60.0), "upstream_drop": (0.2, 30.0),
                  "token_fault": (0.0, 60.0)}


def _upstream_loss(rig: Rig) -> list[tuple[float, float]]:
    """The signals a fault may have cost: those the simulator sent to a socket that was
    going away (just before the fault), and those it sent to nobody (no socket subscribed
    for the account) until the stream was subscribed again. A signal sent to nobody outside
    those (during a hand-over, say) is not excused."""
    spans = []
    for entry in rig.log:
        if entry["detail"].startswith("skipped"):
            continue
        kind = entry["kind"]
        if kind == "instance_term" and _redis_down_at(rig, entry["start"]):
            kind = "instance_kill"  # no hand-over without Redis: the stream moves after the ttl
        if kind in _UPSTREAM_LOSS:
            before, after = _UPSTREAM_LOSS[kind]
            spans.append((entry["start"], before, after))
    windows = [(start - before, start + 0.5) for start, before, _ in spans]
    for t, _, _, _, delivered in rig.simulator.sent:
        if delivered == 0 and any(s - b <= t <= s + a for s, b, a in spans):
            windows.append((t, t))
    return windows


def _redis_down_at(rig: Rig, t: float) -> bool:
    return any(start is not None and start <= t + 0.5 and (end is None or end >= t - 0.5)
               for start, end in rig.redis_down)


def _buffer_loss(rig: Rig) -> list[tuple[float, float]]:
    """While Redis is down an instance delivers its events provisionally and keeps them; when
    it is killed before it could publish them (a few seconds after Redis is back), they are
    lost for every other client: documented, so excused from its outage's start to the kill."""
    windows = []
    for entry in rig.log:
        if entry["kind"] != "instance_kill" or entry["detail"].startswith("skipped"):
            continue
        killed = entry["start"]
        for start, end in rig.redis_down:
            assert start is not None
            if start < killed and (end is None or end + 5.0 > killed):
                windows.append((start - 1.0, killed + 0.5))
    return windows


def _uncovered(rig: Rig) -> list[dict[str, Any]]:
    """Times an upstream account had nobody subscribed at the simulator (sampled every 20 ms),
    with the fault that began last before: how long streams took to move."""
    out = []
    by_start = sorted(rig.log, key=lambda e: e["start"])
    for account, start, end in rig.uncovered:
        before = [e for e in by_start if e["start"] <= start + 0.05]
        out.append({"account": account, "start": start,
                    "seconds": round((end or time.time()) - start, 3),
                    "after": before[-1]["kind"] if before else None})
    return out


def _secrets_in_logs(rig: Rig) -> list[str]:
    """Which kinds of secret appear in any instance's log (names only, never the value)."""
    named = {"jwt secret": rig.jwt_secret, "redis password": rig.redis.password or "",
             "app secret": rig.app_secret, "admin token": rig.admin_token,
             "api token": rig.api_token,
             "quickom api key": rig.fakes.quickom.api_key,
             "quickom signing secret": rig.fakes.quickom.signing_secret,
             "kompaas token": rig.fakes.kompaas.token,
             "kompaas webhook secret": rig.fakes.kompaas_secret}
    upstream = set(rig.simulator.auth_tokens)
    clients = {t.encode() for t in rig.client_tokens}
    found: set[str] = set()
    for instance in rig.instances:
        with open(instance.log_path, "rb") as f:
            text = f.read()
        found |= {name for name, value in named.items() if value.encode() in text}
        if upstream and any(token.encode() in text for token in upstream):
            found.add("upstream auth token")
        if any(m.group(0) in clients for m in _JWT.finditer(text)):
            found.add("client token")
    return sorted(found)


def main(args: argparse.Namespace, argv: list[str]) -> int:
    profile = PROFILES[args.profile]
    if args.clients:
        profile = Profile(**{**profile.__dict__, "clients": args.clients})
    if args.duration:
        profile = Profile(**{**profile.__dict__, "duration": args.duration})
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    results = []
    for n in range(args.runs):
        print(f"[chaos] run {n + 1}/{args.runs}: profile {profile.name}, seed {seed + n}",
              file=sys.stderr, flush=True)
        if args.keep:
            directory = os.path.join(args.keep, f"seed-{seed + n}")
            os.makedirs(directory, exist_ok=True)
            results.append(asyncio.run(run_once(profile, seed + n, directory)))
        else:
            with tempfile.TemporaryDirectory(prefix="callbridge-chaos-") as directory:
                results.append(asyncio.run(run_once(profile, seed + n, directory)))
        print(summary(results[-1]), flush=True)
    data = {"command": "callbridge " + " ".join(shlex.quote(a) for a in argv),
            "runs": results, "ok": all(r["ok"] for r in results)}
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return 0 if data["ok"] else 1


def summary(result: dict[str, Any]) -> str:
    stats = result["stats"]
    done: dict[str, int] = {}
    for entry in result["done"]:
        key = entry["kind"] + (" (skipped)" if entry["detail"].startswith("skipped") else "")
        done[key] = done.get(key, 0) + 1
    lines = [
        f"seed {result['seed']}: {'OK' if result['ok'] else 'VIOLATIONS'} in "
        f"{result['seconds']}s, {result['clients']} clients on {result['instances']} instances",
        "faults: " + ", ".join(f"{k} x{v}" for k, v in sorted(done.items())),
        "checked: " + ", ".join(f"{k} {v}" for k, v in stats.items()
                                if isinstance(v, (int, float))),
        "probes: " + ", ".join(f"{k} {v}" for k, v in sorted(result["probes"].items())),
        "violations: " + (", ".join(f"{k} x{v}" for k, v in
                                    sorted(result["violation_counts"].items())) or "0"),
    ]
    return "\n".join(lines)
