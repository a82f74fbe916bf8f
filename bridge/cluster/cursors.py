"""Durable cursors for pollers: where a poller stopped, so a restart neither loses nor repeats.

``memory://`` brokers keep cursors in the process; Redis brokers keep them under
``<prefix>cursor:<name>``, so any instance (and a restarted one) continues where the last left.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from redis.exceptions import RedisError

from bridge.brokers.base import BrokerError
from bridge.common.redact import redact
from bridge.redisconn.clients import command_client


class CursorStore(ABC):
    @abstractmethod
    async def get(self, name: str) -> str | None:
        """The saved cursor, or None. Raises BrokerError when the store is unreachable."""

    @abstractmethod
    async def set(self, name: str, value: str) -> None:
        """Save a cursor. Raises BrokerError when the store is unreachable."""

    async def close(self) -> None:
        return None


class MemoryCursors(CursorStore):
    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, name: str) -> str | None:
        return self._values.get(name)

    async def set(self, name: str, value: str) -> None:
        self._values[name] = value


class RedisCursors(CursorStore):
    def __init__(self, url: str, *, prefix: str, timeout: float = 5.0) -> None:
        self._client = command_client(url, timeout=timeout)
        self._prefix = prefix

    async def get(self, name: str) -> str | None:
        try:
            value = await self._client.get(f"{self._prefix}cursor:{name}")
        except (RedisError, OSError) as exc:
            raise BrokerError(redact(f"cursor {name}: {exc}")) from None
        return value.decode() if value is not None else None

    async def set(self, name: str, value: str) -> None:
        try:
            await self._client.set(f"{self._prefix}cursor:{name}", value)
        except (RedisError, OSError) as exc:
            raise BrokerError(redact(f"cursor {name}: {exc}")) from None

    async def close(self) -> None:
        await self._client.aclose()
