"""``redis://``: Redis pub/sub for live delivery, one Redis Stream per channel for history.

Key names, scripts and the frame format are in :mod:`bridge.brokers.redis.wire` and
docs/brokers.md. One publish is one round trip: a Lua script marks the event id (de-duplication
across every process sharing the prefix), reads or creates each channel's epoch, appends to each
stream, applies the event's :class:`~bridge.calls.change.Change` to each channel's live state
(:mod:`bridge.brokers.redis.state`) and publishes each channel's
:func:`bridge.events.event.envelope` frame. A replay is one script too, so its epoch check, trim
check and read see one consistent state; so is a snapshot (epoch, newest offset, records).

Live delivery uses one pub/sub connection read by one owned task, kept alive (reconnect, liveness
probe, re-subscribe) by :class:`bridge.redisconn.keeper.Keeper`; what was published while it was
away is caught up from history by :class:`bridge.brokers.continuity.Continuity`
(:class:`bridge.brokers.redis.pubsub.Subscriptions` connects the two).
Commands are not retried by the client library (a retried publish could append an event
twice); a failed command raises :class:`BrokerError`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.brokers.base import Broker, BrokerError, Replay
from bridge.brokers.continuity import Continuity
from bridge.brokers.redis import state, wire
from bridge.brokers.redis.pubsub import Subscriptions
from bridge.calls.change import Change
from bridge.common import redact
from bridge.events.channels import is_valid_channel
from bridge.redisconn.clients import IO_ERRORS
from bridge.redisconn.keeper import Keeper
from bridge.redisconn.probe import Probe

log = logging.getLogger(__name__)



class RedisBroker(state.SnapshotReads, Broker):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "callbridge:",
        history_length: int = 1000,
        dedup_window: float = 600.0,
        probe_interval: float | None = 5.0,
        probe_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        client_name: str = "callbridge",
        max_connections: int = 64,
    ) -> None:
        """``probe_interval=None`` turns the liveness probe off."""
        super().__init__()
        if history_length < 0 or dedup_window <= 0 or probe_timeout <= 0:
            raise ValueError("history_length must be >= 0, dedup_window and probe_timeout > 0")
        parts = urlsplit(url)
        if parts.password:
            redact.register(unquote(parts.password))
        self.display_url = wire.display_url(url)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self._prefix = prefix
        self._history_length = history_length
        self._dedup_ms = max(1, round(dedup_window * 1000))
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._pool_size = max_connections
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=connect_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            client_name=client_name,
            # No library retries: our reader owns reconnects, and a publish must not repeat.
            retry=Retry(NoBackoff(), 0, supported_errors=()),
        )
        self._client = aioredis.Redis.from_pool(pool)
        self._script = self._client.register_script(wire.PUBLISH_SCRIPT)
        self._history_script = self._client.register_script(wire.HISTORY_SCRIPT)
        self._replay_script = self._client.register_script(wire.REPLAY_SCRIPT)
        self._position_script = self._client.register_script(wire.POSITION_SCRIPT)
        self._snapshot_script = self._client.register_script(state.SNAPSHOT_SCRIPT)
        self._closed = False
        #: Redis commands that failed (connection refused, timeout, error reply), for metrics.
        self.errors = 0
        self.continuity = Continuity(self._deliver, self._deliver_gap, self.position,
                                     self.replay,
                                     read_timeout=self._connect_timeout + self._socket_timeout)
        self._subs = Subscriptions(self.continuity, lambda _channel: self._keeper,
                                   prefix=prefix, where=f"redis at {self._where}",
                                   timeout=socket_timeout, logger=log)
        self._probe = Probe(probe_interval, probe_timeout)
        self._keeper = Keeper(
            self._client, name=self.display_url, timeout=socket_timeout,
            on_message=self._subs.heard, on_subscribed=self._subs.confirmed,
            on_lost=self._subs.lost, probe=self._probe,
            probe_channel=wire.probe_channel(prefix, secrets.token_hex(8)).encode(), logger=log,
        )

    @property
    def state(self) -> str:
        """"connected" once started, "reconnecting" before start and while the pub/sub
        connection is being re-established."""
        return self._keeper.state

    @property
    def reconnects(self) -> int:
        """How many times the pub/sub connection was re-established after being lost."""
        return self._keeper.reconnects

    @property
    def malformed(self) -> int:
        """Pub/sub messages on our channels that were not envelope frames (dropped)."""
        return self._subs.malformed

    def __repr__(self) -> str:
        return f"RedisBroker({self.display_url!r}, state={self.state!r})"

    def _error(self, doing: str, exc: BaseException) -> BrokerError:
        self.errors += 1
        if isinstance(exc, RedisConnectionError) and str(exc) == "No connection available.":
            # The pool's own wording says nothing of the pool: name it and its setting.
            reason = (f"connection pool exhausted (pool_size {self._pool_size}): every "
                      f"connection stayed busy for {self._connect_timeout:g}s")
        else:
            reason = redact.redact(str(exc)) or type(exc).__name__
        return BrokerError(f"redis at {self._where}: {doing} failed: {reason}")

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "probe_failures": self._probe.failures,
            "last_probe_ok": self._probe.last_ok,
            "subscriptions": len(self._subs.placed),
            "catching_up": self.continuity.suspended,
            **self.continuity.counts,
        }

    async def start(self) -> None:
        if self._closed:
            raise BrokerError("broker is closed")
        if self._keeper.running:
            return
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                await self._client.ping()
                await self._keeper.connect()
        except IO_ERRORS as exc:
            raise self._error("connect", exc) from None
        self._keeper.run()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._keeper.close()
        self._subs.close()
        await self.continuity.close()
        await self._client.aclose()

    async def _run(self, doing: str, call: Any) -> Any:
        """Await one command; any failure becomes a redacted :class:`BrokerError`."""
        try:
            return await call
        except IO_ERRORS as exc:
            raise self._error(doing, exc) from None

    async def publish(
        self, channels: Sequence[str], event_json: bytes, *, event_id: str | None = None,
        change: Change | None = None,
    ) -> list[str] | None:
        if not channels and event_id is None:
            return []
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name {channel!r}")
        keys, args = wire.publish_keys_and_args(
            self._prefix, channels, event_json, history_length=self._history_length,
            event_id=event_id, dedup_ms=self._dedup_ms, change=change,
        )
        ids = await self._run("publish", self._script(keys=keys, args=args))
        if ids is None:
            return None  # a duplicate of an event id seen within the window
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Returns once Redis confirmed the subscription.

        Raises :class:`BrokerError` when no confirmation came within ``socket_timeout`` (Redis
        unreachable); the subscription then stays registered and is made on reconnect.
        """
        await self._subs.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._subs.unsubscribe(channel)

    async def epoch(self, channel: str) -> str:
        fresh = wire.new_epoch()
        key = wire.epoch_key(self._prefix, channel)
        old = await self._run("epoch", self._client.set(key, fresh, nx=True, get=True))
        return fresh if old is None else old.decode()

    async def history(
        self, channel: str, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        if limit <= 0:
            return []
        keys, args = wire.channel_keys(self._prefix, channel), wire.history_args(after, limit)
        reply = await self._run("history", self._history_script(keys=keys, args=args))
        return wire.parse_history(channel, reply)

    async def replay(
        self, channel: str, *, epoch: str, after: str, limit: int, max_age: float | None = None
    ) -> Replay:
        oldest = None if max_age is None else int((time.time() - max_age) * 1000)
        args = wire.replay_args(epoch, after, limit, oldest)
        keys = wire.channel_keys(self._prefix, channel)
        reply = await self._run("replay", self._replay_script(keys=keys, args=args))
        return wire.parse_replay(channel, reply, limit)

    async def position(self, channel: str) -> tuple[str, str]:
        keys, args = wire.channel_keys(self._prefix, channel), [wire.new_epoch()]
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                reply = await self._position_script(keys=keys, args=args)
        except IO_ERRORS as exc:
            raise self._error("position", exc) from None
        return wire.parse_position(reply)

    async def _snapshot_reply(self, channel: str) -> Any:
        keys, args = wire.snapshot_keys(self._prefix, channel), [wire.new_epoch()]
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                return await self._snapshot_script(keys=keys, args=args)
        except IO_ERRORS as exc:
            raise self._error("snapshot", exc) from None

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                await self._client.ping()
        except IO_ERRORS as exc:
            raise self._error("PING", exc) from None
