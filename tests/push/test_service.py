"""The service owns the pusher: started with it, shown in ``/readyz``'s body, its leases
released at shutdown. Needs ``bridge.consumer.groups`` (see tests/push/test_pusher.py)."""

from __future__ import annotations

import secrets

import orjson
import redis.asyncio as aioredis

from bridge.config.model import AuthConfig, BrokerConfig, Config
from bridge.core.service import Service
from tests.push.conftest import REDIS, target
from tests.scenarios.conftest import eventually


async def test_the_service_pushes_its_targets_and_releases_their_leases_at_shutdown(
        prefix, receiver):
    rec = await receiver()
    config = Config(auth=AuthConfig(jwt_secret=secrets.token_urlsafe(32)),
                    broker=BrokerConfig(url=REDIS, prefix=prefix),
                    webhook=[target("crm", rec.url, ["calls:acme"])])
    redis = aioredis.Redis.from_url(REDIS)
    try:
        async with Service(config) as service:
            await eventually(lambda: service.pusher.runners[0].held, 10, "the lease")
            await eventually(lambda: redis.exists(f"{prefix}{{calls:acme}}:stream"), 10,
                             "the consumer group")
            await service.broker.publish(["calls:acme"], orjson.dumps({"id": "e1"}))
            await eventually(lambda: len(rec.delivered()) == 1, 10, "the push")
            _, body = await service.readiness()
            (crm,) = body["webhooks"]
            assert crm["name"] == "crm" and crm["delivered"] == 1
            assert crm["lease"]["state"] == "held"
            assert crm["recent"][0]["event_id"] == "e1"
            assert await redis.exists(f"{prefix}lease:webhook:crm")
        assert not await redis.exists(f"{prefix}lease:webhook:crm"), "released at shutdown"
    finally:
        await redis.aclose()
