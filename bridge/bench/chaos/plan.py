"""What a chaos run does: its size (a profile) and its faults, drawn from a seed. No I/O.

The same profile and seed give the same schedule, so a failing run can be replayed
(``callbridge bench chaos --seed N``). Faults start every few seconds and last up to several,
so they overlap: a reconnect storm during a Redis outage, revocations during a storm, an
instance killed while another hands its stream over.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Every kind of fault, with what it does:
KINDS = {
    "redis_kill": "Redis killed, restarted empty after `seconds`",
    "redis_restart": "Redis shut down saving its data, restarted with it after `seconds`",
    "pubsub_kill": "every pub/sub connection killed by Redis (CLIENT KILL TYPE pubsub)",
    "instance_kill": "instance `target` SIGKILLed, started again after `seconds`",
    "instance_term": "instance `target` stopped with SIGTERM (hand-over), started again",
    "storm": "every client's connection dropped at once; all reconnect and resume, while "
             "tokens are revoked and expired tokens try to connect",
    "slow": "a tenth of the clients stop reading for `seconds`",
    "upstream_drop": "the simulator drops every upstream signal connection",
    "token_fault": "the simulator's token endpoint fails the next requests (503)",
    "bad_input": "malformed and out-of-range requests to every HTTP endpoint and to /ws",
}


@dataclass(frozen=True)
class Profile:
    name: str
    clients: int
    #: Share of the clients on the tenant channel; the others hold one extension channel each.
    tenant_share: float
    extensions: int
    instances: int
    workers: int
    #: Seconds of traffic while faults are injected.
    duration: float
    calls_per_second: float
    #: Seconds between the starts of two faults (uniform in this range).
    fault_gap: tuple[float, float]
    lease_ttl: float
    token_lifetime: float
    #: Server buffer per client: small, so that slow clients are closed with 4008.
    client_queue_bytes: int


PROFILES = {
    "short": Profile("short", clients=200, tenant_share=0.1, extensions=40, instances=2,
                     workers=1, duration=75.0, calls_per_second=2.0, fault_gap=(3.0, 6.0),
                     lease_ttl=3.0, token_lifetime=30.0, client_queue_bytes=65_536),
    "long": Profile("long", clients=1000, tenant_share=0.1, extensions=200, instances=3,
                    workers=2, duration=300.0, calls_per_second=4.0, fault_gap=(3.0, 9.0),
                    lease_ttl=3.0, token_lifetime=30.0, client_queue_bytes=65_536),
}


@dataclass(frozen=True)
class Fault:
    #: Seconds after the traffic started.
    at: float
    kind: str
    #: Instance index for instance faults, else -1.
    target: int
    #: How long the fault lasts (an outage, a pause, the time before a restart).
    seconds: float


def schedule(profile: Profile, seed: int) -> list[Fault]:
    """The faults of a run: every kind at least once (in a shuffled order), then random ones,
    until ``profile.duration`` less a quiet tail in which the last faults end."""
    rng = random.Random(seed)
    first = list(KINDS)
    rng.shuffle(first)
    faults: list[Fault] = []
    at = rng.uniform(*profile.fault_gap)
    while at < profile.duration - 15.0:
        kind = first.pop() if first else rng.choice(list(KINDS))
        faults.append(Fault(round(at, 3), kind, _target(kind, profile, rng),
                            round(_seconds(kind, profile, rng), 3)))
        at += rng.uniform(*profile.fault_gap)
    return faults


def _target(kind: str, profile: Profile, rng: random.Random) -> int:
    return rng.randrange(profile.instances) if kind.startswith("instance_") else -1


def _seconds(kind: str, profile: Profile, rng: random.Random) -> float:
    if kind in ("redis_kill", "redis_restart"):
        # Sometimes longer than the lease ttl: the standby takes the streams meanwhile.
        return rng.uniform(0.5, 2.5 * profile.lease_ttl)
    if kind == "instance_kill":
        return rng.uniform(1.0, 3.0 * profile.lease_ttl)
    if kind == "instance_term":
        return rng.uniform(0.5, 4.0)
    if kind == "slow":
        return rng.uniform(3.0, 12.0)
    return 0.0
