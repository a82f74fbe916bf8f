"""Fixtures of the cluster tests: a key prefix of each test's own on the shared Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from bridge.redisconn.clients import drop_prefix

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh prefix; its keys are deleted after the test."""
    name = f"cbtest-cluster-{uuid.uuid4().hex}:"
    yield name
    await drop_prefix(REDIS_URL, name)
