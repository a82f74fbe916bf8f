"""What a broker URL selects: the backend by scheme, and the shared state that goes with it."""

from __future__ import annotations

import pytest

from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.redis.cluster import RedisClusterBroker
from bridge.cluster.cursors import MemoryCursors, RedisCursors
from bridge.cluster.leases import LeaseStore, LocalLeases
from bridge.cluster.notices import LeaseNotices, LocalNotices
from bridge.cluster.revocations import MemoryRevocations, RedisRevocations
from bridge.config.model import Config
from bridge.core.backends import broker_for, coordination_for, from_url

SECRET = "s" * 32


def config(url: str) -> Config:
    return Config.model_validate({"auth": {"jwt_secret": SECRET}, "broker": {"url": url}})


@pytest.mark.parametrize(("url", "kind"), [
    ("memory://", MemoryBroker),
    ("redis://127.0.0.1:6379/0", RedisBroker),
    ("rediss://127.0.0.1:6380/0", RedisBroker),
    ("redis-cluster://127.0.0.1:7000,127.0.0.1:7001", RedisClusterBroker),
])
def test_the_scheme_chooses_the_backend(url: str, kind: type) -> None:
    assert type(broker_for(config(url))) is kind


def test_an_unknown_scheme_is_named() -> None:
    with pytest.raises(ValueError, match="unsupported scheme 'nats'"):
        from_url("nats://127.0.0.1:4222")


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError):
        from_url("memory://", prefix_typo="x")


def test_memory_keeps_everything_in_the_process() -> None:
    shared = coordination_for(config("memory://"))
    assert isinstance(shared.leases, LocalLeases)
    assert isinstance(shared.notices, LocalNotices)
    assert isinstance(shared.revocations, MemoryRevocations)
    assert isinstance(shared.cursors, MemoryCursors)


def test_redis_shares_everything_between_instances() -> None:
    shared = coordination_for(config("redis://127.0.0.1:6379/0"))
    assert isinstance(shared.leases, LeaseStore)
    assert isinstance(shared.notices, LeaseNotices)
    assert isinstance(shared.revocations, RedisRevocations)
    assert isinstance(shared.cursors, RedisCursors)
