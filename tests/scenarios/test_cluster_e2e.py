"""The whole bridge on a Redis Cluster: leases, revocations and delivery across nodes."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.scenarios.conftest import (
    TENANT,
    bridge_config,
    eventually,
    wait_ready,
    watch,
)
from tests.support.redis_cluster import binaries_missing, redis_cluster

pytestmark = pytest.mark.skipif(binaries_missing() is not None,
                                reason=binaries_missing() or "")


@pytest.fixture
async def cluster():
    async with redis_cluster() as running:
        yield running


async def test_bridge_on_a_cluster_delivers_and_holds_its_lease(
        cluster, start_simulator, start_bridge):
    # ``cluster`` comes first so that it is torn down last, after the bridge has closed.
    prefix = f"cbit-{secrets.token_hex(3)}:"
    simulator, sim = await start_simulator(
        extensions=["1001", "1002", "1003"], calls_per_second=5.0, time_scale=0.1, seed=9)
    service, bridge = await start_bridge(bridge_config(
        sim, broker={"url": cluster.url, "prefix": prefix}, lease={"ttl": 3.0}))
    body = await wait_ready(bridge, timeout=20)
    assert body["streams"][0]["state"] == "subscribed"
    channels = [f"calls:{TENANT}", *(f"calls:{TENANT}:{x}" for x in ("1001", "1002"))]
    async with watch(bridge, channels) as watcher:
        simulator.start_traffic()
        await eventually(lambda: {e["channel"] for e in watcher.events} == set(channels),
                         20, "events on channels spread over the cluster's nodes")
        await simulator.stop_traffic()
    ids = [(e["channel"], e["event"]["id"]) for e in watcher.events]
    assert len(ids) == len(set(ids))
    async with httpx.AsyncClient(trust_env=False) as http:
        ready = (await http.get(f"{bridge.url}/readyz")).json()
    assert ready["broker"]["ok"] is True
