"""Token revocation: refuse a token id (``jti``) until its expiry, on every instance, at once.

Every instance decides from a copy of the revoked ids it keeps in memory (:class:`RevokedIds`):
checking a connection costs no Redis round trip, so a reconnect storm costs Redis nothing, and
a Redis outage decides from the last copy instead of failing open or locking everyone out.

:class:`Revocations` is the contract. :meth:`~Revocations.revoke` marks a token id revoked
until ``until`` (unix seconds, normally the token's ``exp``: after it the token is refused
anyway); :meth:`~Revocations.is_revoked` answers from the local copy, and raises
:class:`NotSynced` while there is none yet; callbacks registered with
:meth:`~Revocations.on_revoke` learn of every id that becomes revoked here, whether revoked on
this instance, heard from another, or found at a resync, so open connections holding the token
are closed at once.

- :class:`MemoryRevocations`: one process; always in sync.
- :class:`RedisRevocations`: the revoked ids live in Redis
  (:mod:`bridge.cluster.revocation_wire`); a notice on ``<prefix>control:revoked`` tells every instance at once. Notices sent while an
  instance's subscription was away are lost, so after every subscribe (at start and after each lost
  connection) the instance reads the whole list again and merges it into its copy (one owned
  task, retried with backoff until it succeeds). Until the first read succeeds the instance
  has no copy: :meth:`~Revocations.is_revoked` raises :class:`NotSynced` and connections are
  refused with a code that tells the client to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from typing import Callable, Iterator

from bridge.cluster import revocation_wire as wire
from bridge.common.backoff import backoff
from bridge.common.redact import redact
from bridge.redisconn.clients import command_client, pubsub_client
from bridge.redisconn.keeper import Keeper

log = logging.getLogger(__name__)

RevokeCallback = Callable[[str], None]
#: Token ids are opaque strings; this bound keeps keys and messages small.
MAX_TOKEN_ID = wire.MAX_TOKEN_ID


class NotSynced(Exception):
    """This instance has not loaded the revoked ids yet: a token cannot be checked."""


class RevokedIds:
    """The local copy: revoked token ids and the unix time each stays revoked until. No I/O.

    Merging only ever adds ids or extends their time: a revocation is never taken back, and
    one that lapsed is forgotten by :meth:`prune`.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        #: Set by the first complete load (:meth:`loaded`); before it nothing can be decided.
        self.synced = False

    def __len__(self) -> int:
        return len(self._until)

    def add(self, token_id: str, until: float) -> bool:
        """Revoke ``token_id`` until ``until``; True when it was not revoked here before."""
        known = self._until.get(token_id)
        if known is None or known < until:
            self._until[token_id] = until
        return known is None or known <= time.time()

    def merge(self, entries: dict[str, float], now: float) -> list[str]:
        """Add every live entry; return the ids that were not revoked here before."""
        return [t for t, until in entries.items() if until > now and self.add(t, until)]

    def loaded(self) -> None:
        self.synced = True

    def contains(self, token_id: str, now: float) -> bool:
        return self._until.get(token_id, 0.0) > now

    def live(self, now: float) -> Iterator[tuple[str, float]]:
        return ((t, u) for t, u in self._until.items() if u > now)

    def prune(self, now: float) -> None:
        """Forget lapsed ids, so the copy stays bounded by the live revocations."""
        if any(u <= now for u in self._until.values()):
            self._until = {t: u for t, u in self._until.items() if u > now}


class Revocations(ABC):
    def __init__(self) -> None:
        self._callbacks: list[RevokeCallback] = []
        self.ids = RevokedIds()

    def on_revoke(self, callback: RevokeCallback) -> Callable[[], None]:
        """Call ``callback(token_id)`` on the event loop for every id that becomes revoked
        here (revoked on this instance, heard from another, or found by a resync); must not
        block. Returns a function that removes the callback.
        """
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _notify(self, token_id: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(token_id)
            except Exception as exc:
                log.error("revocation callback failed: %s", redact(repr(exc)))

    def _learn(self, token_id: str, until: float) -> None:
        self.ids.prune(time.time())
        if until > time.time():
            self.ids.add(token_id, until)
        self._notify(token_id)  # closing a connection twice is harmless

    @property
    def synced(self) -> bool:
        """True once the revoked ids are known here (for /readyz)."""
        return self.ids.synced

    async def start(self) -> None:
        """Connect and start listening for revocations made elsewhere."""

    async def close(self) -> None:
        """Stop listening. Idempotent."""

    @abstractmethod
    async def revoke(self, token_id: str, until: float) -> None:
        """Refuse ``token_id`` until the unix time ``until``, and notify every listener."""

    def is_revoked(self, token_id: str) -> bool:
        """True when ``token_id`` is revoked now, from the local copy (no I/O).

        Raises :class:`NotSynced` while the copy has never been loaded.
        """
        if not self.ids.synced:
            raise NotSynced("the revoked token ids are not loaded yet")
        return self.ids.contains(token_id, time.time())


class MemoryRevocations(Revocations):
    def __init__(self) -> None:
        super().__init__()
        self.ids.loaded()

    async def revoke(self, token_id: str, until: float) -> None:
        wire.check_token_id(token_id)
        self._learn(token_id, until)


class RedisRevocations(Revocations):
    """Revocations shared by every instance on one Redis. Every Redis call has a timeout."""

    def __init__(self, url: str, *, prefix: str = "callbridge:", timeout: float = 5.0,
                 pool_size: int = 8) -> None:
        super().__init__()
        self._redis = command_client(url, timeout=timeout, pool_size=pool_size)
        self._sub = pubsub_client(url, timeout=timeout)
        self._keys = wire.Keys(prefix)
        self._timeout = timeout
        # After every confirmed subscribe (the first, and each after a lost connection) the
        # list is read again: anything revoked from then on is heard, so nothing is missed.
        self._keeper = Keeper(self._sub, name="revocations", timeout=timeout,
                              channels=[self._keys.channel.encode()], on_message=self._heard,
                              on_subscribed=self._resync_soon, logger=log)
        self._resync: asyncio.Task[None] | None = None
        #: Set when a subscribe happened while a resync ran: it runs once more after.
        self._resync_again = False
        #: Completed loads of the revoked ids from Redis.
        self.resyncs = 0
        self._synced_event = asyncio.Event()

    async def start(self) -> None:
        """Start listening; return once the revoked ids are loaded, or after ``timeout``
        (still retrying: until then :meth:`is_revoked` raises :class:`NotSynced`)."""
        self._keeper.run()
        await self._keeper.wait_connected(self._timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._synced_event.wait()

    async def close(self) -> None:
        await self._keeper.close()
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
            self._resync = None
        await self._redis.aclose()
        await self._sub.aclose()

    async def revoke(self, token_id: str, until: float) -> None:
        """Raises :class:`redis.exceptions.RedisError` or TimeoutError when Redis fails."""
        wire.check_token_id(token_id)
        now = time.time()
        async with asyncio.timeout(self._timeout):
            if until > now:
                await wire.store(self._redis, self._keys, {token_id: until}, now)
            await self._redis.publish(self._keys.channel, wire.notice(token_id, until))
        # Local listeners also hear it through the reader; applying it now does not wait
        # for the round trip.
        self._learn(token_id, until)

    def _heard(self, _channel: bytes, payload: bytes) -> None:
        parsed = wire.parse_notice(payload, time.time())
        if parsed is None:
            log.warning("revocations: ignored a malformed notice (%d bytes)", len(payload))
            return
        self._learn(*parsed)

    def _resync_soon(self, _channel: bytes) -> None:
        """The channel is subscribed: load the list in the owned task, at most one run at a time
        (a subscribe during a run asks for one more run after it)."""
        if self._resync is not None and not self._resync.done():
            self._resync_again = True
            return
        self._resync = asyncio.create_task(self._run_resync(), name="revocations resync")

    async def _run_resync(self) -> None:
        delays = backoff(initial=0.2, maximum=10.0)
        while True:
            self._resync_again = False
            try:
                await self._load()
            except Exception as exc:  # Redis failed: keep the copy, try again
                log.warning("revocations: loading the revoked ids failed (%s); %s",
                            redact(str(exc) or type(exc).__name__),
                            "deciding from the last copy" if self.ids.synced
                            else "refusing connections until loaded")
                await asyncio.sleep(next(delays))
                self._resync_again = True
            if not self._resync_again:
                return

    async def _load(self) -> None:
        """Read every live revocation from Redis, merge it, close what is newly revoked, and
        write back the ones this instance knows and Redis lost (restarted empty)."""
        now = time.time()
        async with asyncio.timeout(self._timeout):
            stored = await wire.load(self._redis, self._keys, now)
        self.ids.prune(now)
        fresh = self.ids.merge(stored, now)
        missing = {t: u for t, u in self.ids.live(now) if t not in stored}
        if missing:
            async with asyncio.timeout(self._timeout):
                await wire.store(self._redis, self._keys, missing, now)
            log.info("revocations: restored %d revoked token id(s) that Redis had lost",
                     len(missing))
        first = not self.ids.synced
        self.ids.loaded()
        self._synced_event.set()
        self.resyncs += 1
        for token_id in fresh:
            self._notify(token_id)
        if first or fresh:
            log.info("revocations: %d revoked token id(s) loaded, %d new here",
                     len(self.ids), len(fresh))
