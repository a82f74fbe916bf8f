"""Fixtures of the consumer tests: a fresh key prefix on the shared Redis (its keys dropped
after the test), and a client of that Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bridge.redisconn.clients import drop_prefix
from tests.consumer.publishing import REDIS_URL


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}:"
    yield name
    await drop_prefix(REDIS_URL, name)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(REDIS_URL)
    yield redis
    await redis.aclose()
