"""What ``[broker] url`` selects: the broker and the cluster coordination that goes with it.

``memory://`` runs one instance alone: leases, lease notices, revocations, cursors and admin
requests about clients live in the process. A Redis URL (``redis://``, ``rediss://``,
``redis-cluster://``) shares all of them between the instances of one deployment, under
``[broker] prefix``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bridge.brokers.base import Broker
from bridge.brokers.memory import MemoryBroker
from bridge.brokers.redis.broker import RedisBroker
from bridge.brokers.redis.cluster import RedisClusterBroker
from bridge.cluster.clients import ClusterClients, LocalClients
from bridge.cluster.cursors import CursorStore, MemoryCursors, RedisCursors
from bridge.cluster.leases import LeaseStore, LocalLeases
from bridge.cluster.notices import LeaseNotices, LocalNotices
from bridge.cluster.revocations import MemoryRevocations, RedisRevocations, Revocations
from bridge.config.model import Config


@dataclass
class Coordination:
    """The shared state one instance needs besides the broker."""

    leases: LeaseStore | LocalLeases
    notices: LeaseNotices | LocalNotices
    revocations: Revocations
    cursors: CursorStore
    clients: ClusterClients | LocalClients


def from_url(url: str, **options: Any) -> Broker:
    """``memory://``, ``redis://[:password@]host:port/db`` (``rediss://`` for TLS), or
    ``redis-cluster://[:password@]host:port[,host:port...]``.

    ``options`` are the chosen backend's keyword arguments (an unknown one raises TypeError).
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker(**options)
    if scheme in ("redis", "rediss"):
        return RedisBroker(url, **options)
    if scheme == "redis-cluster":
        return RedisClusterBroker(url, **options)
    raise ValueError(f"broker url: unsupported scheme {scheme!r} "
                     "(use memory://, redis:// or redis-cluster://)")


def broker_for(config: Config) -> Broker:
    """The broker ``[broker]`` describes (not started)."""
    return from_url(
        config.broker.url,
        **_broker_options(config),
        history_length=config.broker.history_length,
        dedup_window=config.broker.dedup_window,
    )


def coordination_for(config: Config) -> Coordination:
    """Leases, notices, revocations, cursors and admin requests about clients for
    ``[broker] url`` (none started)."""
    url, prefix, lease = config.broker.url, config.broker.prefix, config.lease
    if url.startswith("memory:"):
        return Coordination(LocalLeases(lease.instance_id, lease.ttl), LocalNotices(),
                            MemoryRevocations(), MemoryCursors(), LocalClients())
    leases = LeaseStore(url, prefix=prefix, ttl=lease.ttl, instance_id=lease.instance_id)
    return Coordination(
        leases=leases,
        notices=LeaseNotices(url, prefix=prefix, instance_id=leases.instance_id),
        revocations=RedisRevocations(url, prefix=prefix),
        cursors=RedisCursors(url, prefix=prefix),
        clients=ClusterClients(url, prefix=prefix, instance_id=leases.instance_id),
    )


def _broker_options(config: Config) -> dict[str, Any]:
    """Backend-specific constructor options from ``[broker]``."""
    url = config.broker.url
    if url.startswith("memory:"):
        return {}
    options: dict[str, Any] = {"prefix": config.broker.prefix,
                               "max_connections": config.broker.pool_size}
    if not url.startswith("redis-cluster:"):
        # The cluster backend watches each node's link instead of probing.
        options["probe_interval"] = config.broker.probe_interval
    return options
