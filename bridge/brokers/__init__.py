"""Brokers, chosen by URL scheme and imported lazily."""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.brokers.base import Broker, BrokerError


def from_url(url: str, **options: object) -> Broker:
    """``memory://``, ``redis://[:password@]host:port/db`` (``rediss://`` for TLS), or
    ``redis-cluster://[:password@]host:port[,host:port...]``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from bridge.brokers.memory import MemoryBroker

        return MemoryBroker(**options)  # type: ignore[arg-type]
    if scheme in ("redis", "rediss"):
        from bridge.brokers.redis.broker import RedisBroker

        return RedisBroker(url, **options)  # type: ignore[arg-type]
    if scheme == "redis-cluster":
        from bridge.brokers.redis.cluster import RedisClusterBroker

        return RedisClusterBroker(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"broker url: unsupported scheme {scheme!r} (use memory://, redis:// or redis-cluster://)")


__all__ = ["Broker", "BrokerError", "from_url"]
