"""Doing the faults of :mod:`bridge.bench.chaos.plan` to a :class:`~bridge.bench.chaos.rig.Rig`.

Each fault runs as its own task, so faults overlap as scheduled. One that cannot be done now
(Redis already down, the instance already stopped) is noted as skipped. Every fault ends with
what it broke running again.
"""

from __future__ import annotations

import asyncio
import random
import time

import httpx

from bridge.auth.tokens import mint
from bridge.bench.chaos import probes
from bridge.bench.chaos.inputs import bad_requests
from bridge.bench.chaos.plan import Fault
from bridge.bench.chaos.rig import TENANT, Rig

#: Seconds an instance has to start again (it retries while Redis is down at start).
RESTART_FOR = 90.0


async def do(rig: Rig, fault: Fault, rng: random.Random) -> None:
    start = time.time()
    detail = await _ACTIONS[fault.kind](rig, fault, rng)
    rig.note(fault.kind, fault.target, start, detail or "")


async def _redis_down(rig: Rig, fault: Fault, *, keep: bool) -> str:
    if not rig.redis.running:
        return "skipped: Redis already down"
    down: list[float | None] = [time.time(), None]
    rig.redis_down.append(down)
    await (rig.redis.stop_saving() if keep else rig.redis.kill())
    await asyncio.sleep(fault.seconds)
    await rig.redis.start()
    down[1] = time.time()
    return f"down {fault.seconds:.1f}s, back " + ("with its data" if keep else "empty")


async def _redis_kill(rig: Rig, fault: Fault, rng: random.Random) -> str:
    return await _redis_down(rig, fault, keep=False)


async def _redis_restart(rig: Rig, fault: Fault, rng: random.Random) -> str:
    return await _redis_down(rig, fault, keep=True)


async def _pubsub_kill(rig: Rig, fault: Fault, rng: random.Random) -> str:
    if not rig.redis.running:
        return "skipped: Redis down"
    try:
        reply = await rig.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
    except OSError:
        return "skipped: Redis went down"
    return f"killed {reply.decode().strip().lstrip(':')}"


async def _restart(rig: Rig, index: int) -> str:
    instance = rig.instances[index]
    deadline = time.monotonic() + RESTART_FOR
    while True:
        try:
            await instance.start()
            return ""
        except RuntimeError:  # exits at start while Redis is unreachable: try again
            if time.monotonic() > deadline:
                return f"; {instance.name} did not start again within {RESTART_FOR:.0f}s"
            await asyncio.sleep(1.0)


async def _instance_kill(rig: Rig, fault: Fault, rng: random.Random) -> str:
    instance = rig.instances[fault.target]
    if not instance.running:
        return "skipped: already stopped"
    await instance.kill()
    await asyncio.sleep(fault.seconds)
    return f"{instance.name} killed" + await _restart(rig, fault.target)


async def _instance_term(rig: Rig, fault: Fault, rng: random.Random) -> str:
    instance = rig.instances[fault.target]
    if not instance.running:
        return "skipped: already stopped"
    status = await instance.terminate(timeout=15.0)
    await asyncio.sleep(fault.seconds)
    return f"{instance.name} exited {status}" + await _restart(rig, fault.target)


async def _storm(rig: Rig, fault: Fault, rng: random.Random) -> str:
    dropped = sum(await asyncio.gather(*(w.ask(("storm",)) for w in rig.workers)))
    urls = [i.ws_url for i in rig.instances if i.running]
    expired = mint(rig.jwt_secret, sub="chaos-expired", channels=[f"calls:{TENANT}"],
                   ttl=1, now=time.time() - 120)
    await asyncio.gather(
        probes.revocation(lambda: [i.ws_url for i in rig.instances if i.running],
                          lambda jti: mint(rig.jwt_secret, sub="chaos-revoked",
                                           channels=[f"calls:{TENANT}"], ttl=600, token_id=jti),
                          lambda jti: _revoke(rig, jti), rig.redis_back, rig.tally),
        probes.expired(urls * 3, expired, rig.tally))
    return f"{dropped} clients dropped at once"


async def _revoke(rig: Rig, jti: str) -> float | None:
    """Revoke through the admin API of a running instance, again while Redis is down (503);
    the time the answer came, None when none could for 30 s."""
    deadline = time.monotonic() + 30.0
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        while time.monotonic() < deadline:
            running = [i for i in rig.instances if i.running]
            if running:
                try:
                    reply = await http.post(
                        f"{random.choice(running).url}/admin/tokens/{jti}/revoke",
                        headers={"Authorization": f"Bearer {rig.admin_token}"})
                    if reply.status_code == 200:
                        return time.time()
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.3)
    return None


async def _slow(rig: Rig, fault: Fault, rng: random.Random) -> str:
    per_worker = max(1, rig.profile.clients // 10 // max(1, len(rig.workers)))
    paused = await asyncio.gather(*(w.ask(("slow", per_worker, fault.seconds))
                                    for w in rig.workers))
    await asyncio.sleep(fault.seconds)
    return f"{sum(paused)} clients stopped reading for {fault.seconds:.1f}s"


async def _upstream_drop(rig: Rig, fault: Fault, rng: random.Random) -> str:
    return f"{await rig.simulator.hub.drop()} upstream connections dropped"


async def _token_fault(rig: Rig, fault: Fault, rng: random.Random) -> str:
    rig.simulator.tokens.fail_next(3, 503)
    return "the next 3 token requests fail"


async def _bad_input(rig: Rig, fault: Fault, rng: random.Random) -> str:
    running = [i for i in rig.instances if i.running]
    if not running:
        return "skipped: no instance running"
    instance = rng.choice(running)
    fakes = rig.fakes
    requests = bad_requests(TENANT, quickom_secret=fakes.quickom.signing_secret,
                            kompaas_secret=fakes.kompaas_secret, api_token=rig.api_token,
                            admin_token=rig.admin_token)
    token = mint(rig.jwt_secret, sub="chaos-bad", channels=[f"calls:{TENANT}"], ttl=600)
    await probes.bad_input(instance.url, requests, instance.ws_url, token, rig.tally)
    return f"{len(requests)} requests and {len(probes.BAD_FRAMES)} /ws exchanges"


_ACTIONS = {
    "redis_kill": _redis_kill, "redis_restart": _redis_restart, "pubsub_kill": _pubsub_kill,
    "instance_kill": _instance_kill, "instance_term": _instance_term, "storm": _storm,
    "slow": _slow, "upstream_drop": _upstream_drop, "token_fault": _token_fault,
    "bad_input": _bad_input,
}
