"""``redis://``: Redis pub/sub for live delivery, one Redis Stream per channel for history.

Naming, with the configurable ``prefix`` (default ``callbridge:``):

- channel ``c`` is published on the Redis pub/sub channel ``<prefix><c>``;
- its history is the stream ``<prefix>stream:<c>``, field ``e`` = the event JSON, trimmed with
  ``MAXLEN ~ history_length`` (so at least ``history_length`` entries are kept, a little more
  until Redis can drop a whole stream node);
- an offset is the stream entry id (``<ms>-<seq>``).

One publish is one round trip: a Lua script appends to every stream and publishes each
channel's :func:`bridge.events.envelope` frame, built in Lua byte for byte as Python builds it.

Live delivery uses one pub/sub connection read by one owned task. When that connection drops,
the task reconnects with :func:`bridge.backoff.backoff` and re-subscribes every channel; it
never ends before :meth:`RedisBroker.close`. Commands are not retried by the client library (a
retried publish could append an event twice); a failed command raises :class:`BrokerError`.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any, Iterator, Sequence
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bridge import redact
from bridge.backoff import backoff
from bridge.brokers.base import Broker, BrokerError, offset_key
from bridge.channels import is_valid_channel
from bridge.brokers.redis_wire import PUBLISH_SCRIPT, display_url, frame_offset
from bridge.events import envelope

log = logging.getLogger("bridge.brokers.redis")

_IO_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def _reader_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        text = "".join(traceback.format_exception(task.exception()))
        log.critical("pub/sub reader stopped: %s", redact.redact(text))


class RedisBroker(Broker):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "callbridge:",
        history_length: int = 1000,
        connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        client_name: str = "callbridge",
        max_connections: int = 32,
    ) -> None:
        super().__init__()
        if history_length < 0:
            raise ValueError("history_length must not be negative")
        parts = urlsplit(url)
        if parts.password:
            redact.register(unquote(parts.password))
        self.display_url = display_url(url)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self._prefix = prefix
        self._prefix_b = prefix.encode()
        self._history_length = history_length
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
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
        self._script = self._client.register_script(PUBLISH_SCRIPT)
        self._channels: set[str] = set()
        self._acks: dict[str, int] = {}  # SUBSCRIBE commands not yet confirmed, per channel
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        #: "connected" once started, "reconnecting" before start and while the pub/sub
        #: connection is being re-established.
        self.state = "reconnecting"
        #: How many times the pub/sub connection was re-established after being lost.
        self.reconnects = 0
        #: Pub/sub messages on our channels that were not envelope frames (dropped).
        self.malformed = 0

    def __repr__(self) -> str:
        return f"RedisBroker({self.display_url!r}, state={self.state!r})"

    def _error(self, doing: str, exc: BaseException) -> BrokerError:
        reason = redact.redact(str(exc)) or type(exc).__name__
        return BrokerError(f"redis at {self._where}: {doing} failed: {reason}")

    async def start(self) -> None:
        if self._closed:
            raise BrokerError("broker is closed")
        if self._reader is not None:
            return
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                await self._client.ping()
                await self._open_pubsub()
        except _IO_ERRORS as exc:
            await self._drop_pubsub()
            raise self._error("connect", exc) from None
        self._reader = asyncio.create_task(self._read_loop(), name="redis-broker-reader")
        self._reader.add_done_callback(_reader_done)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader}, timeout=self._socket_timeout)
        await self._drop_pubsub()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)  # a pending subscribe() returns; nothing is delivered
        self._waiters.clear()
        self._channels.clear()
        await self._client.aclose()

    async def publish(self, channels: Sequence[str], event_json: bytes) -> list[str]:
        if not channels:
            return []
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name {channel!r}")
        keys = [f"{self._prefix}stream:{c}" for c in channels]
        args: list[Any] = [self._history_length, event_json, self._prefix, *channels]
        try:
            ids = await self._script(keys=keys, args=args)
        except _IO_ERRORS as exc:
            raise self._error("publish", exc) from None
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Returns once Redis confirmed the subscription.

        Raises :class:`BrokerError` when no confirmation came within ``socket_timeout`` (Redis
        unreachable); the subscription then stays registered and is made on reconnect.
        """
        if channel not in self._channels:
            self._channels.add(channel)
            self._waiters[channel] = asyncio.get_running_loop().create_future()
            if self._pubsub is not None:
                await self._send_subscribe(self._pubsub, [channel])
        waiter = self._waiters.get(channel)
        if waiter is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._socket_timeout)
        except asyncio.TimeoutError:
            raise BrokerError(
                f"redis at {self._where}: subscribe to {channel} not confirmed within "
                f"{self._socket_timeout}s; it will be made when the connection is back"
            ) from None

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        # Delivery stops now: the reader drops messages of channels not in the set.
        self._channels.discard(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                await pubsub.execute_command("UNSUBSCRIBE", self._prefix + channel)
            except _IO_ERRORS as exc:  # the reader sees the broken connection too
                log.debug("unsubscribe %s: %s", channel, redact.redact(str(exc)))

    async def history(
        self, channel: str, after: str | None, limit: int
    ) -> list[tuple[str, bytes]]:
        if limit <= 0 or self._history_length == 0:
            return []  # with 0, approximate trimming still leaves a few entries: hide them
        if after is not None:
            offset_key(after)  # ValueError on a malformed offset, as in every backend
        start = "-" if after is None else "(" + after
        try:
            entries = await self._client.xrange(
                f"{self._prefix}stream:{channel}", min=start, max="+", count=limit
            )
        except _IO_ERRORS as exc:
            raise self._error("history", exc) from None
        out = []
        for raw_id, fields in entries:
            event_json = fields.get(b"e")
            if event_json is not None:
                offset = raw_id.decode()
                out.append((offset, envelope(channel, offset, event_json)))
        return out

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                await self._client.ping()
        except _IO_ERRORS as exc:
            raise self._error("PING", exc) from None

    # -- the pub/sub connection ---------------------------------------------------------------

    async def _send_subscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        for channel in channels:
            self._acks[channel] = self._acks.get(channel, 0) + 1
        try:
            await pubsub.execute_command("SUBSCRIBE", *(self._prefix + c for c in channels))
        except _IO_ERRORS as exc:  # the reader reconnects and re-subscribes
            log.debug("subscribe: %s", redact.redact(str(exc)))

    async def _open_pubsub(self) -> PubSub:
        """Connect, subscribe every channel, and wait until Redis confirmed them all."""
        pubsub = self._client.pubsub()
        try:
            await pubsub.connect()
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub
        self._acks.clear()
        channels = sorted(self._channels)
        if channels:
            await self._send_subscribe(pubsub, channels)
            async with asyncio.timeout(self._socket_timeout):
                while any(self._acks.get(c) for c in channels):
                    self._on_response(await pubsub.parse_response(block=True))
        self.state = "connected"
        return pubsub

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._acks.clear()
        self.state = "reconnecting"
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except _IO_ERRORS:
                pass  # already broken; nothing more to release

    async def _read_loop(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            try:
                pubsub = self._pubsub
                if pubsub is None:
                    pubsub = await self._open_pubsub()
                    self.reconnects += 1
                    delays = None
                    log.info("pub/sub connection to %s re-established", self.display_url)
                # The poll timeout is the seam for a later liveness probe.
                response = await pubsub.parse_response(block=False, timeout=self._socket_timeout)
                if response is not None:
                    self._on_response(response)
            except Exception as exc:  # the reader must outlive any failure
                log.warning(
                    "pub/sub connection to %s lost: %s",
                    self.display_url,
                    redact.redact(f"{type(exc).__name__}: {exc}"),
                )
                await self._drop_pubsub()
                delays = delays or backoff(maximum=10.0)
                await asyncio.sleep(next(delays))

    def _on_response(self, response: Any) -> None:
        if not response:
            return
        kind = response[0]
        if kind == b"message":
            self._on_message(response[1], response[2])
        elif kind == b"subscribe":
            channel = response[1][len(self._prefix_b) :].decode()
            left = self._acks.get(channel, 0) - 1
            if left > 0:
                self._acks[channel] = left
                return
            self._acks.pop(channel, None)
            waiter = self._waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _on_message(self, raw_channel: bytes, frame: bytes) -> None:
        if not raw_channel.startswith(self._prefix_b):
            return
        name = raw_channel[len(self._prefix_b) :]
        channel = name.decode()
        if channel not in self._channels:
            return  # unsubscribed while the UNSUBSCRIBE was in flight
        offset = frame_offset(frame, name)
        if offset is None:
            self.malformed += 1
            log.warning("dropped a message on %s that is not an event envelope", channel)
            return
        try:
            self._deliver(channel, offset, frame)
        except Exception as exc:
            text = "".join(traceback.format_exception(exc))
            log.error("message handler failed on %s: %s", channel, redact.redact(text))
