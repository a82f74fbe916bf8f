"""The running parts of one chaos run, owned together: :class:`Rig`.

It starts Redis, the simulators, the instances and the client workers, keeps the run's own
records (what was done when, when Redis was down, when an upstream account had nobody
subscribed at the simulator) and stops everything on exit, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bridge.auth.tokens import mint, mint_api
from bridge.bench.chaos.clients import ClientSpec, Summary, WorkerPlan, start_worker
from bridge.bench.chaos.cluster import (
    Instance,
    RecordingSimulator,
    Redis,
    free_port,
    instance_config,
    write_config,
)
from bridge.bench.chaos.plan import Profile
from bridge.bench.chaos.probes import Tally
from bridge.http.serving import AppServer
from bridge.simulator.app import SimulatorSettings
from bridge.simulator.suite import ProviderFakes

TENANT = "chaos"
ACCOUNTS = ("acct-a", "acct-b")
APP_ID = "chaos-app"


@dataclass
class Worker:
    proc: Any
    pipe: Connection
    out_path: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def ask(self, message: tuple[Any, ...], timeout: float = 60.0) -> Any:
        async with self.lock:
            self.pipe.send(message)
            ready = await asyncio.to_thread(self.pipe.poll, timeout)
            if not ready:
                raise TimeoutError(f"a client worker did not answer {message[0]!r}")
            return self.pipe.recv()


class Rig:
    def __init__(self, profile: Profile, seed: int, directory: str) -> None:
        self.profile = profile
        self.seed = seed
        self.directory = directory
        self.prefix = f"chaos-{secrets.token_hex(4)}:"
        self.jwt_secret = secrets.token_urlsafe(32)
        self.app_secret = secrets.token_urlsafe(24)
        self.redis = Redis(os.path.join(directory, "redis"), password=secrets.token_urlsafe(18))
        self.instances: list[Instance] = []
        self.workers: list[Worker] = []
        self.simulator = RecordingSimulator(SimulatorSettings(
            apps={APP_ID: self.app_secret}, accounts=list(ACCOUNTS),
            extensions=[str(2000 + n) for n in range(profile.extensions)],
            calls_per_second=profile.calls_per_second, token_lifetime=profile.token_lifetime,
            expiry_policy="disconnect", time_scale=0.2, seed=seed, traffic=False,
            queue_limit=5000))
        self.fakes = ProviderFakes(TENANT)
        self.admin_token = mint_api(self.jwt_secret, sub="chaos-admin", scopes=["admin"])
        self.api_token = mint_api(self.jwt_secret, sub="chaos-api",
                                  scopes=["calls:read", "calls:dial"])
        self.client_tokens: list[str] = []
        #: {"kind", "target", "start", "end", "detail"} for every fault done.
        self.log: list[dict[str, Any]] = []
        #: [start, end or None] of every time Redis was down.
        self.redis_down: list[list[float | None]] = []
        #: [account, start, end or None]: no socket subscribed for the account at the simulator.
        self.uncovered: list[list[Any]] = []
        self.tally = Tally()
        self._sim_server: AppServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Rig]:
        os.makedirs(os.path.join(self.directory, "redis"), exist_ok=True)
        async with contextlib.AsyncExitStack() as stack:
            await self.redis.start()
            stack.push_async_callback(self.redis.kill)
            self._sim_server = await stack.enter_async_context(
                AppServer(self.simulator.build_app()))
            await stack.enter_async_context(self.fakes.running())
            stack.push_async_callback(self._stop_instances)
            for n in range(self.profile.instances):
                self.instances.append(self._instance(n))
            await asyncio.gather(*(i.start() for i in self.instances))
            await self.wait_ready(120.0)
            stack.push_async_callback(self._stop_workers)
            monitor = asyncio.create_task(self._watch_upstream(), name="upstream coverage")
            stack.callback(monitor.cancel)
            yield self

    def _instance(self, n: int) -> Instance:
        assert self._sim_server is not None
        sim = self._sim_server.url
        antbuddy = [{"tenant": TENANT, "oapi_url": sim, "ws_url": sim.replace("http", "ws", 1),
                     "dialect": "kazoo-json", "app_id": APP_ID, "app_secret": self.app_secret,
                     "account_id": account} for account in ACCOUNTS]
        fakes = self.fakes.config()
        name = f"chaos-{n}"
        config = instance_config(
            name=name, port=free_port(), redis_url=self.redis.url, prefix=self.prefix,
            jwt_secret=self.jwt_secret, antbuddy=antbuddy,
            providers={"quickom": fakes["quickom"], "kompaas": fakes["kompaas"]},
            client_queue_bytes=self.profile.client_queue_bytes, lease_ttl=self.profile.lease_ttl)
        path = os.path.join(self.directory, f"{name}.toml")
        write_config(path, config)
        return Instance(name, config["server"]["port"], path,
                        os.path.join(self.directory, f"{name}.log"))

    async def _stop_instances(self) -> None:
        await asyncio.gather(*(i.terminate(10.0) for i in self.instances))

    async def wait_ready(self, timeout: float) -> bool:
        """True once every instance answers /readyz with 200 (False after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answers = await asyncio.gather(*(i.readyz() for i in self.instances))
            if all(a is not None and a[0] == 200 for a in answers):
                return True
            await asyncio.sleep(0.5)
        return False

    # -- clients -------------------------------------------------------------------------------

    def client_specs(self) -> list[ClientSpec]:
        specs = []
        tenant_clients = round(self.profile.clients * self.profile.tenant_share)
        for n in range(self.profile.clients):
            channel = (f"calls:{TENANT}" if n < tenant_clients
                       else f"calls:{TENANT}:{2000 + n % self.profile.extensions}")
            token = mint(self.jwt_secret, sub=f"chaos-client-{n}", channels=[channel],
                         ttl=4 * 3600, token_id=f"client-{n}-{secrets.token_hex(4)}")
            self.client_tokens.append(token)
            specs.append(ClientSpec(f"c{n}", [channel], token))
        return specs

    async def start_clients(self, timeout: float = 180.0) -> Summary:
        specs = self.client_specs()
        urls = [i.ws_url for i in self.instances]
        count = self.profile.workers
        for w in range(count):
            out = os.path.join(self.directory, f"clients-{w}.jsonl")
            plan = WorkerPlan(urls, specs[w::count], out, seed=self.seed * 1000 + w)
            proc, pipe = start_worker(plan)
            self.workers.append(Worker(proc, pipe, out))
        deadline = time.monotonic() + timeout
        while True:
            total = await self.summary()
            if total.subscribed == total.clients or time.monotonic() > deadline:
                return total
            await asyncio.sleep(0.5)

    async def summary(self) -> Summary:
        total = Summary()
        for part in await asyncio.gather(*(w.ask(("count",)) for w in self.workers)):
            total.clients += part.clients
            total.subscribed += part.subscribed
            total.frames += part.frames
            total.connections += part.connections
            total.errors.update(part.errors)
        return total

    async def _stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(TimeoutError, OSError, EOFError):
                await worker.ask(("stop",), timeout=120.0)
            await asyncio.to_thread(worker.proc.join, 30)
            if worker.proc.is_alive():
                worker.proc.kill()

    # -- what the run records ------------------------------------------------------------------

    def note(self, kind: str, target: int, start: float, detail: str = "") -> None:
        self.log.append({"kind": kind, "target": target, "start": start, "end": time.time(),
                         "detail": detail})

    def redis_back(self, after: float) -> float:
        """When Redis was last back up, if it was down at any time after ``after``."""
        back = after
        for start, end in self.redis_down:
            if end is None:
                return float("inf")
            if end >= after:
                back = max(back, end)
        return back

    async def _watch_upstream(self) -> None:
        open_gaps: dict[str, list[Any]] = {}
        while True:
            now = time.time()
            for account in ACCOUNTS:
                covered = self.simulator.hub.subscribers(account) > 0
                gap = open_gaps.get(account)
                if not covered and gap is None:
                    open_gaps[account] = gap = [account, now, None]
                    self.uncovered.append(gap)
                elif covered and gap is not None:
                    gap[2] = now
                    del open_gaps[account]
            await asyncio.sleep(0.02)
