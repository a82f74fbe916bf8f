"""Upstream stream ownership across instances: one Redis lease per stream.

Several callbridge processes may share one Redis; each upstream stream (tenant + account) must
be run by exactly one of them, or every event would be received twice. A stream's lease is the
key ``<prefix>lease:<stream>`` holding ``<instance id>:<random>``:

- acquire: ``SET key value NX PX ttl``;
- renew every ttl/3: a compare-and-set script extends the key only while it still holds our
  value (or re-creates it when it vanished, e.g. Redis restarted empty);
- release at graceful shutdown: compare-and-delete, so another instance takes over at once.

An instance that does not hold a stream tries again every ttl/3 (with jitter), so a dead holder's
streams are taken over within the ttl. When renewal answers "another instance holds it", the
stream is stopped at once. When Redis cannot be reached the holder keeps its streams running:
losing events is worse than receiving them twice, and the broker's de-duplication by event id
drops the second copy once Redis is back (docs/operations.md).

With ``memory://`` there is one process by definition: :class:`LocalLeases` always grants.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from bridge.brokers.base import BrokerError
from bridge.redact import redact
from bridge.redis_client import command_client

log = logging.getLogger("bridge.lease")

# KEYS[1] lease key; ARGV[1] our value, ARGV[2] ttl ms. 1: ours (extended or re-created), 0: not.
RENEW_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LeaseStore:
    """Lease operations on Redis. Every call raises :class:`BrokerError` when Redis fails."""

    def __init__(self, url: str, *, prefix: str, ttl: float, instance_id: str,
                 timeout: float = 2.0) -> None:
        self.instance_id = instance_id or default_instance_id()
        self.ttl = ttl
        self._prefix = prefix
        self._value = f"{self.instance_id}:{secrets.token_hex(8)}"
        self._client = command_client(url, timeout=timeout)
        self._renew = self._client.register_script(RENEW_SCRIPT)
        self._release = self._client.register_script(RELEASE_SCRIPT)

    def key(self, stream: str) -> str:
        return f"{self._prefix}lease:{stream}"

    async def _call(self, doing: str, coro: Awaitable[Any]) -> Any:
        try:
            result = await coro
        except (RedisError, OSError) as exc:
            raise BrokerError(redact(f"lease {doing}: {exc}")) from None
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # redis.asyncio can complete a command and swallow a cancel that arrived meanwhile.
            raise asyncio.CancelledError
        return result

    async def acquire(self, stream: str) -> bool:
        ms = int(self.ttl * 1000)
        return bool(await self._call("acquire", self._client.set(
            self.key(stream), self._value, nx=True, px=ms)))

    async def renew(self, stream: str) -> bool:
        ms = int(self.ttl * 1000)
        return bool(await self._call("renew", self._renew(
            keys=[self.key(stream)], args=[self._value, ms])))

    async def release(self, stream: str) -> bool:
        return bool(await self._call("release", self._release(
            keys=[self.key(stream)], args=[self._value])))

    async def holder(self, stream: str) -> str | None:
        """The instance id holding ``stream``, or None."""
        value = await self._call("read", self._client.get(self.key(stream)))
        if value is None:
            return None
        return value.decode().rpartition(":")[0]

    async def close(self) -> None:
        await self._client.aclose()


class LocalLeases:
    """One process, no sharing: every lease is granted and never lost."""

    def __init__(self, instance_id: str = "", ttl: float = 10.0) -> None:
        self.instance_id = instance_id or default_instance_id()
        self.ttl = ttl

    async def acquire(self, stream: str) -> bool:
        return True

    async def renew(self, stream: str) -> bool:
        return True

    async def release(self, stream: str) -> bool:
        return True

    async def holder(self, stream: str) -> str | None:
        return self.instance_id

    async def close(self) -> None:
        return None


class LeasedRunner:
    """Runs ``start()`` (one stream's loop) only while this instance holds its lease.

    :meth:`run` loops until cancelled: in ``standby`` it tries to acquire every ttl/3 with
    jitter; once ``held`` it starts the stream task and renews every ttl/3; it stops the stream
    as soon as renewal says another instance holds the lease. Cancelling :meth:`run` stops the
    stream; :meth:`release` then gives the lease up.
    """

    def __init__(self, store: LeaseStore | LocalLeases, stream: str,
                 start: Callable[[], Awaitable[None]], *, rng: random.Random | None = None
                 ) -> None:
        self.store = store
        self.stream = stream
        self._start = start
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self.state = "standby"
        self.held_by: str | None = None
        self.confirmed_at = 0.0
        self.last_error: str | None = None
        self.takeovers = 0

    @property
    def held(self) -> bool:
        return self.state == "held"

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "held_by": self.held_by,
                "confirmed_at": round(self.confirmed_at, 3) or None,
                "last_error": self.last_error}

    def _interval(self) -> float:
        third = self.store.ttl / 3
        return third * (0.8 + 0.2 * self._rng.random())

    async def run(self) -> None:
        try:
            while True:
                await self._step()
                await asyncio.sleep(self._interval())
        finally:
            await self._stop_stream()

    async def _step(self) -> None:
        store = self.store
        try:
            if self.held:
                ok = await store.renew(self.stream)
            else:
                ok = await store.acquire(self.stream)
            self.last_error = None
        except BrokerError as exc:
            # Redis unreachable: a holder keeps running (see module docstring).
            self.last_error = str(exc)
            return
        if ok:
            self.confirmed_at = time.time()
            self.held_by = store.instance_id
            if not self.held:
                self.state = "held"
                self.takeovers += 1
                log.info("lease %s acquired by %s", self.stream, store.instance_id)
                self._task = asyncio.create_task(self._start(), name=f"stream {self.stream}")
            return
        if self.held:
            log.warning("lease %s lost to another instance: stopping the stream", self.stream)
            self.state = "standby"
            await self._stop_stream()
        try:
            self.held_by = await store.holder(self.stream)
        except BrokerError as exc:
            self.last_error = str(exc)

    async def _stop_stream(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # wait() rather than await: our own cancellation must propagate, the stream's must not.
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error("stream %s ended with an error: %r", self.stream, task.exception())

    async def release(self) -> None:
        """Stop the stream (if running) and give the lease up so another instance takes over."""
        await self._stop_stream()
        if self.state != "held":
            return
        self.state = "standby"
        self.held_by = None
        try:
            async with asyncio.timeout(self.store.ttl):
                await self.store.release(self.stream)
            log.info("lease %s released", self.stream)
        except (BrokerError, TimeoutError) as exc:
            log.warning("lease %s not released (expires in %.0fs): %s",
                        self.stream, self.store.ttl, exc)
