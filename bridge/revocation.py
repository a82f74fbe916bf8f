"""Token revocation: refuse a token id (``jti``) until its expiry, on every instance, at once.

:class:`Revocations` is the contract. :meth:`~Revocations.revoke` marks a token id revoked
until ``until`` (unix seconds, normally the token's ``exp``: after it the token is refused
anyway); :meth:`~Revocations.is_revoked` answers for new connections and renewals; callbacks
registered with :meth:`~Revocations.on_revoke` learn of every revocation, made here or (Redis) by
any other instance, so open connections holding the token are closed at once.

A notification can be missed (Redis), so :meth:`~Revocations.on_resync` callbacks are also
called whenever the store may have missed some: they check the token ids they hold with
:meth:`~Revocations.revoked_among`.

- :class:`MemoryRevocations`: one process.
- :class:`RedisRevocations`: keys ``<prefix>revoked:<jti>`` expiring at ``until``, and a
  notification on the pub/sub channel ``<prefix>control:revoked`` read by one owned task that
  re-subscribes with backoff after a connection loss. Notifications published while it was
  away are lost, the keys are not: after every subscribe the resync callbacks run (one owned
  task, never two at once), so connections holding a token revoked meanwhile are closed then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from typing import Awaitable, Callable, Iterable

from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.redact import redact
from bridge.redis_client import command_client, pubsub_client
from bridge.redis_listener import ChannelListener

log = logging.getLogger(__name__)

RevokeCallback = Callable[[str], None]
ResyncCallback = Callable[[], Awaitable[None]]
#: Token ids are opaque strings; this bound keeps keys and messages small.
MAX_TOKEN_ID = 200
#: Keys checked per pipelined round trip by :meth:`RedisRevocations.revoked_among`.
CHUNK = 500


class Revocations(ABC):
    def __init__(self) -> None:
        self._callbacks: list[RevokeCallback] = []
        self._resync_callbacks: list[ResyncCallback] = []

    def on_revoke(self, callback: RevokeCallback) -> Callable[[], None]:
        """Call ``callback(token_id)`` on the event loop for every revocation; must not block.

        Returns a function that removes the callback.
        """
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def on_resync(self, callback: ResyncCallback) -> Callable[[], None]:
        """Await ``callback()`` whenever revocations may have been missed (for Redis: after
        each subscribe of the listener); it should check its token ids with
        :meth:`revoked_among`. Never called by a store that cannot miss one (memory).

        Returns a function that removes the callback.
        """
        self._resync_callbacks.append(callback)
        return (lambda: self._resync_callbacks.remove(callback)
                if callback in self._resync_callbacks else None)

    def _notify(self, token_id: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(token_id)
            except Exception as exc:
                log.error("revocation callback failed: %s", redact(repr(exc)))

    async def start(self) -> None:
        """Connect and start listening for revocations made elsewhere."""

    async def close(self) -> None:
        """Stop listening. Idempotent."""

    @abstractmethod
    async def revoke(self, token_id: str, until: float) -> None:
        """Refuse ``token_id`` until the unix time ``until``, and notify every listener."""

    @abstractmethod
    async def is_revoked(self, token_id: str) -> bool:
        """True when ``token_id`` is revoked now."""

    @abstractmethod
    async def revoked_among(self, token_ids: Iterable[str]) -> set[str]:
        """The ids of ``token_ids`` that are revoked now."""


def _check(token_id: str) -> None:
    if not isinstance(token_id, str) or not token_id or len(token_id) > MAX_TOKEN_ID:
        raise ValueError(f"token id must be a non-empty string of at most {MAX_TOKEN_ID} chars")


class MemoryRevocations(Revocations):
    def __init__(self) -> None:
        super().__init__()
        self._until: dict[str, float] = {}

    async def revoke(self, token_id: str, until: float) -> None:
        _check(token_id)
        now = time.time()
        # Forget lapsed entries so the map stays bounded by the live revocations.
        self._until = {k: v for k, v in self._until.items() if v > now}
        if until > now:
            self._until[token_id] = max(until, self._until.get(token_id, 0.0))
        self._notify(token_id)

    async def is_revoked(self, token_id: str) -> bool:
        return self._until.get(token_id, 0.0) > time.time()

    async def revoked_among(self, token_ids: Iterable[str]) -> set[str]:
        now = time.time()
        return {t for t in token_ids if self._until.get(t, 0.0) > now}


class RedisRevocations(Revocations):
    """Revocations shared by every instance on one Redis. Every Redis call has a timeout."""

    def __init__(self, url: str, *, prefix: str = "callbridge:", timeout: float = 5.0) -> None:
        super().__init__()
        self._redis = command_client(url, timeout=timeout)
        self._sub = pubsub_client(url, timeout=timeout)
        self._prefix = prefix
        self._channel = f"{prefix}control:revoked"
        self._timeout = timeout
        self._listener = ChannelListener(self._sub, self._channel,
                                         lambda data: self._notify(data.decode()),
                                         what="revocations", timeout=timeout,
                                         on_listening=self._resync_soon)
        self._resync: asyncio.Task[None] | None = None
        #: Set when a subscribe happened while a resync ran: it runs once more after.
        self._resync_again = False

    def _key(self, token_id: str) -> str:
        return f"{self._prefix}revoked:{token_id}"

    async def start(self) -> None:
        """Start listening; return once it listens (or after ``timeout``, still retrying)."""
        await self._listener.start()

    async def close(self) -> None:
        await self._listener.close()
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
            self._resync = None
        await self._redis.aclose()
        await self._sub.aclose()

    async def revoke(self, token_id: str, until: float) -> None:
        """Raises :class:`redis.exceptions.RedisError` or TimeoutError when Redis fails."""
        _check(token_id)
        ttl_ms = math.ceil((until - time.time()) * 1000)
        async with asyncio.timeout(self._timeout):
            if ttl_ms > 0:
                await self._redis.set(self._key(token_id), b"1", px=ttl_ms)
            await self._redis.publish(self._channel, token_id.encode())
        # Local listeners also hear it through the reader; calling them now does not wait
        # for the round trip (closing a connection twice is harmless).
        self._notify(token_id)

    async def is_revoked(self, token_id: str) -> bool:
        """Raises :class:`redis.exceptions.RedisError` or TimeoutError when Redis fails."""
        async with asyncio.timeout(self._timeout):
            return bool(await self._redis.exists(self._key(token_id)))

    async def revoked_among(self, token_ids: Iterable[str]) -> set[str]:
        """One pipelined EXISTS per key, :data:`CHUNK` keys per round trip, each chunk within
        the timeout (one key per command, so it also routes on a cluster).

        Raises :class:`redis.exceptions.RedisError` or TimeoutError when Redis fails.
        """
        ids = list(dict.fromkeys(token_ids))
        revoked: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            async with asyncio.timeout(self._timeout):
                try:
                    found = await self._exists(chunk)
                except RedisConnectionError:
                    # This runs just after the subscription came back, so a pooled connection
                    # that died with it (Redis restarted, or cut) fails its first command;
                    # the failure drops it and the second try connects afresh.
                    found = await self._exists(chunk)
            revoked.update(t for t, n in zip(chunk, found) if n)
        return revoked

    async def _exists(self, token_ids: list[str]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for token_id in token_ids:
            pipe.exists(self._key(token_id))
        return list(await pipe.execute())

    def _resync_soon(self) -> None:
        """The listener subscribed: run the resync callbacks in the owned task, at most one
        run at a time (a subscribe during a run asks for one more run after it)."""
        if not self._resync_callbacks:
            return
        if self._resync is not None and not self._resync.done():
            self._resync_again = True
            return
        self._resync = asyncio.create_task(self._run_resync(), name="revocations resync")

    async def _run_resync(self) -> None:
        while True:
            self._resync_again = False
            for callback in list(self._resync_callbacks):
                try:
                    await callback()
                except Exception as exc:
                    log.error("revocation resync callback failed: %s", redact(repr(exc)))
            if not self._resync_again:
                return
