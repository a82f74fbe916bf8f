"""The verification store matching the broker URL: this process's, or Redis's."""

from __future__ import annotations

from bridge.providers.kompaas.redis_store import RedisStore
from bridge.providers.kompaas.store import MemoryStore, PendingStore


def open_store(broker_url: str, prefix: str, tenant: str, *, capacity: int) -> PendingStore:
    """The store matching the broker: Redis (shared by every instance) or this process."""
    if broker_url.startswith("memory:"):
        return MemoryStore(capacity)
    return RedisStore(broker_url, prefix=prefix, tenant=tenant, capacity=capacity)
