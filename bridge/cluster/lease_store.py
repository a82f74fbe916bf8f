"""The lease keys on Redis (and their one-process stand-in): acquire, renew, mark live, release.

The protocol (who holds what, and when) is in :mod:`bridge.cluster.leases`; this module is the
storage side only: one key ``<prefix>lease:<stream>`` per stream, changed by compare-and-set scripts
so that an instance only ever extends, marks or deletes its own value.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisError

from bridge.brokers.base import BrokerError
from bridge.common.redact import redact
from bridge.redisconn.clients import command_client

#: Appended to a holder's value once its stream is subscribed upstream.
LIVE_MARK = "+live"

# KEYS[1] lease key; ARGV[1] our value, ARGV[2] ttl ms, ARGV[3] "1" to mark it live.
# 1: ours (extended, marked or re-created), 0: another instance's.
RENEW_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local live = ARGV[1] .. '+live'
if current == ARGV[1] or current == live then
  if ARGV[3] == '1' and current ~= live then
    redis.call('SET', KEYS[1], live, 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[3] == '1' and live or ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease key; ARGV[1] our value. Deletes it while it is ours, marked live or not.
RELEASE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or current == ARGV[1] .. '+live' then
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

    async def renew(self, stream: str, *, live: bool = False) -> bool:
        """Extend our lease (re-create it when it vanished); ``live``: mark it live too."""
        ms = int(self.ttl * 1000)
        return bool(await self._call("renew", self._renew(
            keys=[self.key(stream)], args=[self._value, ms, "1" if live else "0"])))

    async def release(self, stream: str) -> bool:
        return bool(await self._call("release", self._release(
            keys=[self.key(stream)], args=[self._value])))

    async def holder(self, stream: str) -> str | None:
        """The instance id holding ``stream``, or None."""
        value: bytes | None = await self._call("read", self._client.get(self.key(stream)))
        if value is None:
            return None
        return value.decode().rpartition(":")[0]

    async def successor(self, stream: str) -> tuple[str, bool] | None:
        """``(instance id, live upstream)`` of another instance holding ``stream``; None when
        nobody or this instance holds it."""
        value = await self._call("read", self._client.get(self.key(stream)))
        if value is None:
            return None
        text = value.decode()
        live = text.endswith(LIVE_MARK)
        if (text[:-len(LIVE_MARK)] if live else text) == self._value:
            return None
        return text.rpartition(":")[0], live

    async def close(self) -> None:
        await self._client.aclose()


class LocalLeases:
    """One process, no sharing: every lease is granted and never lost."""

    def __init__(self, instance_id: str = "", ttl: float = 10.0) -> None:
        self.instance_id = instance_id or default_instance_id()
        self.ttl = ttl

    async def acquire(self, stream: str) -> bool:
        return True

    async def renew(self, stream: str, *, live: bool = False) -> bool:
        return True

    async def release(self, stream: str) -> bool:
        return True

    async def holder(self, stream: str) -> str | None:
        return self.instance_id

    async def successor(self, stream: str) -> tuple[str, bool] | None:
        return None

    async def close(self) -> None:
        return None
