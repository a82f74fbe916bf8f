"""Why a Redis connection failed, in a few words a user can act on.

One wording for every place that reports it (``serve`` at start, ``check --online``): where
(``host:port``, never a credential), why, and what to check next.
"""

from __future__ import annotations

import errno
import re
import socket
from urllib.parse import urlsplit

from redis.exceptions import AuthenticationError
from redis.exceptions import TimeoutError as RedisTimeout

from bridge.common.redact import redact
from bridge.redisconn.url import parse_cluster_url

PASSWORD_REFUSED = "password refused"

# redis-py keeps only the text of the socket's error ("Error 111 connecting to ..."), so its
# errno is read from there.
_ERRNO = re.compile(r"^Error (-?\d+) connecting")
_NAME_ERRORS = (socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", -5))
_NEXT = {"connection refused": "is redis-server running there?",
         "host not found": "is the host name right?"}


def where(url: str) -> str:
    """``host:port`` of a Redis URL (every node of a cluster's), without its credentials."""
    if url.startswith("redis-cluster://"):
        nodes, _, _ = parse_cluster_url(url)
        return ", ".join(f"{host}:{port}" for host, port in nodes)
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def why(error: BaseException) -> str:
    """The root cause of a connection failure, following the exception's causes (redacted)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    deepest = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        deepest = cause
        if isinstance(cause, AuthenticationError):
            return PASSWORD_REFUSED
        if isinstance(cause, (TimeoutError, RedisTimeout)):
            return "timed out"
        if isinstance(cause, socket.gaierror):
            return "host not found"
        text = str(cause)
        match = _ERRNO.search(text)
        code = int(match.group(1)) if match else getattr(cause, "errno", None)
        if code == errno.ECONNREFUSED or isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if code in _NAME_ERRORS or "not known" in text or "nodename" in text:
            return "host not found"
        cause = cause.__cause__ or cause.__context__
    return redact(str(deepest))[:120] or type(deepest).__name__


def unreachable(address: str, reason: str) -> str:
    """``Redis at host:port is unreachable (reason): what to check``."""
    if reason == PASSWORD_REFUSED:
        return (f"Redis at {address} refused the password: check the user and password in "
                "[broker] url (or CALLBRIDGE__BROKER__URL)")
    step = _NEXT.get(reason, "is the host up and the port open?")
    return f"Redis at {address} is unreachable ({reason}): {step} check [broker] url"
