"""Lease notices: the pub/sub channel ``<prefix>lease-events`` that makes a hand-over quick.

Leases alone move a stream at the pace of the standby instances' attempts (every ttl/3), and
the stream receives nothing upstream meanwhile. Two notices close that window at a graceful
shutdown (docs/operations.md, "Graceful shutdown"):

- ``released``: an instance gave these streams' leases up: their standby runners try to take
  them at once instead of at their next attempt;
- ``live``: the instance that took a stream is subscribed upstream: the previous holder, which
  kept its own copy running meanwhile, stops it.

A notice only wakes someone up: the lease key stays the truth, and a waiter also reads it on
its own, so a notice lost while a subscription reconnects costs time, never an event.
:meth:`LeaseNotices.publish` answers how many *other* instances listen (Redis counts the
receivers), so a lone instance knows at once that nobody will take its streams over.

Messages are JSON: ``{"kind": ..., "streams": [...], "by": <instance id>, "from": <token>}``;
``from`` is random per process, so an instance ignores its own notices even when two share an
instance id. :func:`encode` and :func:`decode` hold the format; the class holds the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from redis.exceptions import RedisError

from bridge.cluster.broadcast import decode_object
from bridge.common.redact import redact
from bridge.redisconn.clients import pubsub_client
from bridge.redisconn.keeper import Keeper

log = logging.getLogger("bridge.cluster.leases")

RELEASED = "released"
LIVE = "live"
KINDS = (RELEASED, LIVE)
#: Streams per message: a shutdown of many streams sends a few messages, each of bounded size.
CHUNK = 200


@dataclass(frozen=True)
class Notice:
    kind: str
    streams: tuple[str, ...]
    by: str
    sender: str


def encode(kind: str, streams: Sequence[str], by: str, sender: str) -> bytes:
    return orjson.dumps({"kind": kind, "streams": list(streams), "by": by, "from": sender})


def decode(data: bytes | str) -> Notice | None:
    """The notice in ``data``, or None when it is not one (ignored, never an error)."""
    message = decode_object(data, KINDS)
    if message is None:
        return None
    streams, by = message.get("streams"), message.get("by")
    if not (isinstance(streams, list) and all(isinstance(s, str) for s in streams)
            and isinstance(by, str)):
        return None
    return Notice(message["kind"], tuple(streams), by, message["from"])


Handler = Callable[[Notice], None]


class LeaseNotices:
    """Publishes and hears lease notices on Redis; one owned reader task.

    Publishing and listening use the same server (the first node of a cluster URL): Redis
    counts a notice's receivers on the node it is published to.
    """

    def __init__(self, url: str, *, prefix: str, instance_id: str,
                 timeout: float = 2.0) -> None:
        self.channel = f"{prefix}lease-events"
        self._instance_id = instance_id
        self._sender = secrets.token_hex(8)
        self._client = pubsub_client(url, timeout=timeout)
        self._timeout = timeout
        self._handlers: list[Handler] = []
        # While it listens, this instance counts among a notice's receivers.
        self._keeper = Keeper(self._client, name="lease notices", timeout=timeout,
                              channels=[self.channel.encode()], on_message=self._dispatch,
                              logger=log)

    def on_notice(self, handler: Handler) -> None:
        """Call ``handler(notice)`` on the event loop for every other instance's notice; it
        must not block."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Start listening; return once it listens (or after the timeout, still retrying)."""
        self._keeper.run()
        await self._keeper.wait_connected(self._timeout)

    async def close(self) -> None:
        await self._keeper.close()
        await self._client.aclose()

    async def publish(self, kind: str, streams: Sequence[str]) -> int:
        """Tell the other instances; return how many heard it (0 when Redis fails: a notice
        is a wake-up, its loss is never an error)."""
        heard = 0
        try:
            for start in range(0, len(streams), CHUNK):
                message = encode(kind, streams[start:start + CHUNK], self._instance_id,
                                 self._sender)
                async with asyncio.timeout(self._timeout):
                    receivers = await self._client.publish(self.channel, message)
                heard = max(heard, int(receivers) - (1 if self._keeper.connected.is_set() else 0))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("lease notice %r not sent: %s", kind, redact(str(exc) or repr(exc)))
        return max(heard, 0)

    def _dispatch(self, _channel: bytes, data: bytes) -> None:
        notice = decode(data)
        if notice is None or notice.sender == self._sender:
            return
        for handler in list(self._handlers):
            try:
                handler(notice)
            except Exception:
                log.exception("lease notice handler failed")


class LocalNotices:
    """One process (``memory://``): nobody else to tell, nobody to wait for."""

    def on_notice(self, handler: Handler) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, kind: str, streams: Sequence[str]) -> int:
        return 0
