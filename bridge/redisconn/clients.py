"""Redis clients for callbridge's side services (leases, revocations), for either URL kind.

``redis://`` / ``rediss://`` give a plain client. ``redis-cluster://h:p[,h:p...]`` gives a
cluster client for key commands and scripts (each call touches one key, so it routes to that
key's node), and, for pub/sub, a plain client to the first node: a cluster propagates a plain
PUBLISH to every node, so a subscriber on any one node hears it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from bridge.redisconn.url import parse_cluster_url

#: What a Redis call raises when the server or the network fails (retry, or report).
IO_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def _is_cluster(url: str) -> bool:
    return url.startswith("redis-cluster://")


def command_client(url: str, *, timeout: float, pool_size: int = 8) -> Any:
    """A client for key commands and single-key scripts.

    At most ``pool_size`` connections (per node on a cluster): a caller beyond them waits up
    to ``timeout`` for one, then gets a ``ConnectionError`` (never an unbounded pool).
    """
    if not _is_cluster(url):
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout)
        return aioredis.Redis.from_pool(pool)
    nodes, username, password = parse_cluster_url(url)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                        username=username, password=password, max_connections=pool_size,
                        socket_timeout=timeout, socket_connect_timeout=timeout)


async def drop_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` on a plain Redis (never anything else)."""
    client = aioredis.Redis.from_url(url)
    try:
        batch = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(batch), 500):
            await client.delete(*batch[i:i + 500])
    finally:
        await client.aclose()


def pubsub_client(url: str, *, timeout: float) -> aioredis.Redis:
    """A plain client whose pub/sub hears every PUBLISH of the deployment."""
    if not _is_cluster(url):
        return aioredis.Redis.from_url(url, socket_timeout=timeout,
                                       socket_connect_timeout=timeout)
    nodes, username, password = parse_cluster_url(url)
    host, port = nodes[0]
    return aioredis.Redis(host=host, port=port, username=username, password=password,
                          socket_timeout=timeout, socket_connect_timeout=timeout)
