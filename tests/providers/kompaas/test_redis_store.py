"""Kompaas verifications on Redis: shared by instances, kept across restarts, claimed once.

Each "instance" is its own provider object with its own HTTP server (real uvicorn), all on the
shared Redis under a unique key prefix (dropped afterwards), against the Kompaas fake over real
HTTP. Restarts are new provider objects on the same Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.config.providers import KompaasAccount
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.base import ProviderContext
from bridge.providers.kompaas import outcome as oc
from bridge.providers.kompaas.pending import FINISHED, PENDING, UNKNOWN, Held, Pending
from bridge.providers.kompaas.provider import KompaasProvider
from bridge.providers.kompaas.redis_store import RedisStore
from bridge.redisconn.clients import drop_prefix
from bridge.simulator.kompaas import KompaasFake
from tests.scenarios.conftest import JWT_SECRET, eventually, start_bridge, watch  # noqa: F401
from tests.support.redis_cluster import binaries_missing, redis_cluster
from tests.support.redis_server import private_redis

REDIS = "redis://127.0.0.1:6379/0"
JWT = secrets.token_urlsafe(32)
TOKEN = "kp-redis-token-" + secrets.token_hex(8)
SECRET = "kp-redis-hook-" + secrets.token_hex(8)
TENANT = "kpr"
PHONE = "421222202999"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = f"cbtest-kp-{secrets.token_hex(4)}:"
    yield value
    await drop_prefix(REDIS, value)


class Instance:
    """One callbridge instance's Kompaas side: a provider, its timer task, its HTTP server."""

    def __init__(self, provider: KompaasProvider, server: AppServer, events: list[Event],
                 task: asyncio.Task[None] | None) -> None:
        self.provider, self.server, self.events, self.task = provider, server, events, task

    @property
    def hook(self) -> str:
        return f"{self.server.url}/webhooks/kompaas/{TENANT}?secret={SECRET}"

    async def stop(self) -> None:
        await self.server.close()
        if self.task is not None:
            self.task.cancel()  # its finally closes the store
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        else:
            await self.provider.store.close()


class Deployment:
    """The Kompaas fake and any number of instances on one Redis and prefix."""

    def __init__(self, fake: KompaasFake, fake_url: str, http: httpx.AsyncClient,
                 broker_url: str, prefix: str) -> None:
        self.fake, self.fake_url, self.http = fake, fake_url, http
        self.broker_url, self.prefix = broker_url, prefix
        self.instances: list[Instance] = []

    async def instance(self, *, timeout: float = 60.0, max_pending: int = 10_000,
                       sweep: bool = True) -> Instance:
        """A new instance; ``sweep=False``: its timer never runs (as if it died at once)."""
        account = KompaasAccount(tenant=TENANT, api_url=self.fake_url, api_token=TOKEN,
                                 webhook_secret=SECRET, verification_timeout=timeout)
        events: list[Event] = []
        context = ProviderContext(submit=lambda e: events.append(e) or True, http=self.http,
                                  cursors=MemoryCursors(), broker_url=self.broker_url,
                                  prefix=self.prefix)
        provider = KompaasProvider(account, context, max_pending=max_pending)
        server = AppServer(Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT,
                                                       leeway=5)))
        await server.start()
        task = asyncio.create_task(provider.run()) if sweep else None
        instance = Instance(provider, server, events, task)
        self.instances.append(instance)
        return instance

    async def start(self, instance: Instance, phone: str = PHONE) -> httpx.Response:
        token = mint_api(JWT, sub="test", scopes=["verifications:write"], tenants=[TENANT])
        return await self.http.post(
            f"{instance.server.url}/api/v1/kompaas/{TENANT}/verifications",
            json={"phone_number": phone}, headers={"authorization": f"Bearer {token}"})

    def events(self) -> list[Event]:
        return [e for i in self.instances for e in i.events]


@contextlib.asynccontextmanager
async def deployment(prefix: str, broker_url: str = REDIS) -> AsyncIterator[Deployment]:
    fake = KompaasFake(TOKEN)
    async with AppServer(fake.build_app()) as fake_server, \
            httpx.AsyncClient(trust_env=False, timeout=10) as http:
        d = Deployment(fake, fake_server.url, http, broker_url, prefix)
        try:
            yield d
        finally:
            for instance in d.instances:
                await instance.stop()


async def _deadlines_left(prefix: str) -> int:
    client = aioredis.Redis.from_url(REDIS)
    try:
        return int(await client.zcard(f"{prefix}kompaas:{{{TENANT}}}:deadlines"))
    finally:
        await client.aclose()


# -- across instances ---------------------------------------------------------------------------

async def test_started_on_one_instance_completed_on_another(prefix: str) -> None:
    async with deployment(prefix) as d:
        a, b = await d.instance(), await d.instance()
        d.fake.outcomes[PHONE] = None  # delivered below, to b
        started = await d.start(a)
        assert started.status_code == 201, started.text
        uuid = started.json()["verification_call_uuid"]
        assert a.provider.snapshot()["store"] == "redis"
        response = await d.fake.deliver(d.fake.calls[0], 17, "CANCEL", url=b.hook)
        assert response.json() == {"result": "emitted", "outcome": "busy"}
        assert a.events == [] and len(b.events) == 1
        event = b.events[0]
        assert event.call_id == uuid and event.detail is not None
        # what a recorded at the start reaches b through Redis
        assert event.detail["phone_number"] == PHONE and event.detail["login_did"] == "7777777777"
        assert event.detail["started_at"].endswith("Z")
        again = await d.fake.deliver(d.fake.calls[0], 17, "CANCEL", url=a.hook)
        assert again.json()["result"] == "duplicate"
        assert len(d.events()) == 1


async def test_outcome_overtaking_the_start_answer_on_another_instance(prefix: str) -> None:
    async with deployment(prefix) as d:
        a, b = await d.instance(), await d.instance()
        # The fake posts the outcome to b as soon as it answers a: b may get it before a has
        # recorded the verification. Either order yields one event.
        d.fake.webhook_url = b.hook
        assert (await d.start(a)).status_code == 201
        await eventually(lambda: d.fake.calls[0].delivered == [200], 5, "the webhook")
        await eventually(lambda: len(d.events()) == 1, 5, "the outcome event")
        detail = d.events()[0].detail
        assert detail is not None and detail["outcome"] == "answered"
        assert detail["phone_number"] == PHONE
        assert await _deadlines_left(prefix) == 0


async def test_same_webhook_delivered_to_both_instances_yields_one_event(prefix: str) -> None:
    async with deployment(prefix) as d:
        a, b = await d.instance(), await d.instance()
        d.fake.outcomes[PHONE] = None
        for _ in range(5):
            assert (await d.start(a)).status_code == 201
        results = []
        for call in d.fake.calls:
            answers = await asyncio.gather(
                d.fake.deliver(call, 16, "ANSWER", url=a.hook),
                d.fake.deliver(call, 16, "ANSWER", url=b.hook))
            results.append(sorted(r.json()["result"] for r in answers))
        assert results == [["duplicate", "emitted"]] * 5
        events = d.events()
        assert len(events) == 5 and {e.call_id for e in events} == {c.uuid for c in d.fake.calls}
        assert a.provider.counts["emitted"] + b.provider.counts["emitted"] == 5


# -- restarts -----------------------------------------------------------------------------------

async def test_restart_keeps_pending_verifications(prefix: str) -> None:
    async with deployment(prefix) as d:
        first = await d.instance()
        d.fake.outcomes[PHONE] = None
        uuid = (await d.start(first)).json()["verification_call_uuid"]
        await first.stop()
        d.instances.remove(first)
        second = await d.instance()  # the restarted process: new objects, same Redis
        response = await d.fake.deliver(d.fake.calls[0], 16, "CANCEL", url=second.hook)
        assert response.json() == {"result": "emitted", "outcome": "not_answered"}
        assert len(second.events) == 1 and second.events[0].call_id == uuid
        assert second.events[0].detail is not None
        assert second.events[0].detail["phone_number"] == PHONE


async def test_restart_keeps_timeouts(prefix: str) -> None:
    async with deployment(prefix) as d:
        # The first instance never runs its timer: it died before the deadline.
        first = await d.instance(timeout=0.3, sweep=False)
        d.fake.outcomes[PHONE] = None
        uuid = (await d.start(first)).json()["verification_call_uuid"]
        await first.stop()
        second = await d.instance(timeout=0.3)
        await eventually(lambda: len(second.events) == 1, 10, "the timed-out event")
        event = second.events[0]
        assert event.call_id == uuid and event.detail is not None
        assert event.detail["outcome"] == "timed_out" and event.detail["phone_number"] == PHONE
        late = await d.fake.deliver(d.fake.calls[0], 16, "ANSWER", url=second.hook)
        assert late.json()["result"] == "late"
        assert first.events == [] and len(second.events) == 1


async def test_two_bridges_on_redis(prefix: str, start_bridge) -> None:  # noqa: F811
    """The whole service: started through one bridge's API, the webhook taken by the other,
    the event delivered to a websocket client of the first."""
    fake = KompaasFake(TOKEN)
    async with AppServer(fake.build_app()) as fake_server:
        config = {
            "server": {"host": "127.0.0.1", "port": 0},
            "broker": {"url": REDIS, "prefix": prefix}, "auth": {"jwt_secret": JWT_SECRET},
            "kompaas": [{"tenant": TENANT, "api_url": fake_server.url, "api_token": TOKEN,
                         "webhook_secret": SECRET}]}
        first, bridge_a = await start_bridge(config)
        second, bridge_b = await start_bridge(config)
        fake.webhook_url = f"{bridge_b.url}/webhooks/kompaas/{TENANT}?secret={SECRET}"
        fake.outcomes[PHONE] = (17, "CANCEL")
        api = mint_api(JWT_SECRET, sub="e2e", scopes=["verifications:write"], tenants=[TENANT])
        async with watch(bridge_a, [f"verifications:{TENANT}"]) as watcher, \
                httpx.AsyncClient(trust_env=False, timeout=10) as http:
            response = await http.post(f"{bridge_a.url}/api/v1/kompaas/{TENANT}/verifications",
                                       json={"phone_number": PHONE},
                                       headers={"authorization": f"Bearer {api}"})
            assert response.status_code == 201, response.text
            await eventually(lambda: len(watcher.events) == 1, 10, "the verification event")
            event = watcher.events[0]["event"]
            assert event["call_id"] == response.json()["verification_call_uuid"]
            assert event["detail"]["outcome"] == "busy"
            assert event["detail"]["phone_number"] == PHONE
        emitted = 0
        for service in (first, second):
            provider = (await service.readiness())[1]["providers"][0]
            assert provider["store"] == "redis" and provider["ok"] is True
            emitted += provider["emitted"]
        assert emitted == 1


# -- timeouts claimed once ----------------------------------------------------------------------

async def test_concurrent_sweeps_on_two_instances_yield_one_timed_out_event(prefix: str) -> None:
    async with deployment(prefix) as d:
        a, b = await d.instance(timeout=0.3), await d.instance(timeout=0.3)
        d.fake.outcomes[PHONE] = None
        for i in range(12):
            assert (await d.start(a if i % 2 else b)).status_code == 201
        await eventually(lambda: len(d.events()) >= 12, 10, "every timed-out event")
        # Nothing is left for any sweep to claim, so no further event can come.
        assert await _deadlines_left(prefix) == 0
        events = d.events()
        assert len(events) == 12 and len({e.id for e in events}) == 12
        assert {e.detail["outcome"] for e in events if e.detail} == {"timed_out"}


async def test_store_claims_each_expired_verification_once(prefix: str) -> None:
    stores = [RedisStore(REDIS, prefix=prefix, tenant=TENANT) for _ in range(3)]
    try:
        past = time.time() - 1
        for n in range(150):  # more than one sweep batch
            await stores[n % 3].add(Pending(uuid=f"{n:04x}_1", phone=PHONE, started_at=past,
                                            deadline=past))
        claimed = await asyncio.gather(*(s.expire() for s in stores))
        uuids = [e.uuid for batch in claimed for e in batch]
        assert len(uuids) == 150 and len(set(uuids)) == 150
        assert all(e.phone == PHONE for batch in claimed for e in batch)
        # the webhook now finds them timed out
        state, _, earlier = await stores[0].complete("0000_1", Held(16, "ANSWER", "answered"))
        assert (state, earlier) == (FINISHED, "timed_out")
    finally:
        for store in stores:
            await store.close()


async def test_webhook_racing_the_timeout_yields_one_outcome(prefix: str) -> None:
    hook, sweeper = (RedisStore(REDIS, prefix=prefix, tenant=TENANT) for _ in range(2))
    try:
        past = time.time() - 1
        uuids = [f"race{n:02d}_1" for n in range(40)]
        for uuid in uuids:
            await hook.add(Pending(uuid=uuid, phone=PHONE, started_at=past, deadline=past))
        answers = await asyncio.gather(
            sweeper.expire(),
            *(hook.complete(uuid, Held(16, "ANSWER", "answered")) for uuid in uuids))
        timed_out = {e.uuid for e in answers[0]}
        completed = {u for u, (state, _, _) in zip(uuids, answers[1:]) if state == PENDING}
        assert timed_out.isdisjoint(completed) and timed_out | completed == set(uuids)
        for uuid, (state, _, earlier) in zip(uuids, answers[1:]):
            assert state == PENDING or (state, earlier) == (FINISHED, "timed_out")
    finally:
        await hook.close()
        await sweeper.close()


async def test_store_holds_an_outcome_until_its_start_is_recorded(prefix: str) -> None:
    a, b = (RedisStore(REDIS, prefix=prefix, tenant=TENANT) for _ in range(2))
    try:
        held = Held(17, "CANCEL", "busy")
        assert await b.complete("early_1", held) == (UNKNOWN, None, None)
        entry = Pending(uuid="early_1", phone=PHONE, started_at=time.time(),
                        deadline=time.time() + 60)
        assert await a.add(entry) == held  # finished at once: the caller emits
        assert await a.next_deadline() is None
        assert await b.complete("early_1", held) == (FINISHED, None, "busy")
    finally:
        await a.close()
        await b.close()


async def test_timeout_reported_after_the_record_expired(prefix: str) -> None:
    store = RedisStore(REDIS, prefix=prefix, tenant=TENANT)
    try:
        # Every instance was down for longer than the grace after the deadline: the record
        # expires at once, the deadline stays.
        long_ago = time.time() - 3600
        await store.add(Pending(uuid="gone_1", phone=PHONE, started_at=long_ago,
                                deadline=long_ago))
        await asyncio.sleep(0.01)
        [entry] = await store.expire()
        assert (entry.uuid, entry.phone, entry.started_at) == ("gone_1", None, None)
        event = oc.verification_event(tenant=TENANT, uuid=entry.uuid, outcome=oc.TIMED_OUT,
                                      occurred_at=time.time(), phone=entry.phone,
                                      started_at=entry.started_at, timeout=60.0)
        assert event.account == "1" and event.callee is None
    finally:
        await store.close()


# -- capacity -----------------------------------------------------------------------------------

async def test_capacity_bound_is_shared_by_the_instances(prefix: str) -> None:
    async with deployment(prefix) as d:
        a, b = await d.instance(max_pending=2), await d.instance(max_pending=2)
        d.fake.outcomes[PHONE] = None
        assert (await d.start(a)).status_code == 201
        assert (await d.start(a)).status_code == 201
        full = await d.start(b)
        assert full.status_code == 503 and full.json()["error"]["code"] == "too_many_pending"
        assert len(d.fake.calls) == 2  # no paid call placed for it
        done = await d.fake.deliver(d.fake.calls[0], 16, "ANSWER", url=b.hook)
        assert done.json()["result"] == "emitted"
        assert (await d.start(b)).status_code == 201
        assert len(d.fake.calls) == 3 and b.provider.snapshot()["pending"] == 2


# -- Redis failures -----------------------------------------------------------------------------

async def test_redis_unreachable_answers_503_and_recovers(prefix: str) -> None:
    async with private_redis() as server, deployment(prefix, broker_url=server.url) as d:
        a = await d.instance()
        d.fake.outcomes[PHONE] = None
        assert (await d.start(a)).status_code == 201
        await server.stop()
        refused = await d.start(a)
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "store_unavailable" and "no call was placed" in error["message"]
        assert len(d.fake.calls) == 1
        hook = await d.fake.deliver(d.fake.calls[0], 16, "ANSWER", url=a.hook)
        assert hook.status_code == 503  # a 5xx: Kompaas may deliver it again
        for text in (refused.text, hook.text, str(a.provider.snapshot())):
            assert TOKEN not in text and SECRET not in text
        await eventually(lambda: a.provider.snapshot()["ok"] is False, 10,
                         "the timer to notice the outage")
        assert a.provider.snapshot()["last_error"]
        await server.start()  # back, empty (no persistence)
        await eventually(lambda: a.provider.snapshot()["ok"] is True, 10, "the recovery")
        assert (await d.start(a)).status_code == 201
        assert a.events == []


# -- Redis Cluster ------------------------------------------------------------------------------

@pytest.mark.skipif(binaries_missing() is not None, reason=binaries_missing() or "")
async def test_on_a_redis_cluster() -> None:
    async with redis_cluster() as cluster, deployment("cbkp:", broker_url=cluster.url) as d:
        a, b = await d.instance(timeout=0.5), await d.instance(timeout=0.5)
        d.fake.outcomes["421222202998"] = None
        assert (await d.start(a)).status_code == 201
        assert (await d.start(a, "421222202998")).status_code == 201
        answered = await d.fake.deliver(d.fake.calls[0], 16, "ANSWER", url=b.hook)
        assert answered.json() == {"result": "emitted", "outcome": "answered"}
        await eventually(lambda: len(d.events()) == 2, 10, "the timed-out event")
        outcomes = sorted(e.detail["outcome"] for e in d.events() if e.detail)
        assert outcomes == ["answered", "timed_out"]
        assert all(i.provider.snapshot()["ok"] for i in d.instances)
