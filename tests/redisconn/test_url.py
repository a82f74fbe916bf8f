"""Reading redis-cluster:// URLs."""

from __future__ import annotations

import pytest

from bridge.redisconn.url import parse_cluster_url


def test_parse_cluster_url_reads_every_node_and_the_password() -> None:
    nodes, user, password = parse_cluster_url(
        "redis-cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001")
    assert nodes == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (user, password) == ("app", "s@cret")
    with pytest.raises(ValueError):
        parse_cluster_url("redis://127.0.0.1:6379")
