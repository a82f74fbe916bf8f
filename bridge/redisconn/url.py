"""Reading the ``redis-cluster://`` URL: the node list and credentials, no I/O."""

from __future__ import annotations

from urllib.parse import unquote


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``(nodes, username, password)`` of ``redis-cluster://[user:pass@]h:p[,h:p...]``.

    Raises ValueError when ``url`` is not a ``redis-cluster://`` URL or names no node.
    """
    scheme, sep, rest = url.partition("://")
    if scheme != "redis-cluster" or not sep:
        raise ValueError("broker url: expected redis-cluster://host:port[,host:port...]")
    userinfo, _, hosts = rest.split("/", 1)[0].rpartition("@")
    user, _, password = userinfo.partition(":")
    nodes = []
    for item in filter(None, hosts.split(",")):
        host, _, port = item.rpartition(":")
        nodes.append((host.strip("[]") or "127.0.0.1", int(port or 6379)))
    if not nodes:
        raise ValueError("broker url: redis-cluster:// names no node")
    return nodes, unquote(user) or None, unquote(password) or None
