"""Keeping one Redis pub/sub subscription alive: the reader task and its liveness probe.

:class:`Subscriber` owns one pub/sub connection and the one task that reads it. When the
connection drops, or a liveness probe published on the command connection does not come back on
it (a subscription that died silently), the task tears it down, reconnects with
:func:`bridge.common.backoff.backoff` and re-subscribes every channel; it never ends before
:meth:`Subscriber.close`. :class:`Probe` is the probe's clock, with no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import traceback
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge.brokers.base import BrokerError
from bridge.brokers.continuity import Continuity
from bridge.brokers.redis import wire
from bridge.common import redact
from bridge.common.backoff import RESUBSCRIBE_MAX, backoff

# The broker's logger: operators configure one name for the whole redis:// backend.
log = logging.getLogger("bridge.brokers.redis.broker")

_IO_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class Probe:
    """The liveness probe's clock (sans-I/O): when to send a probe, when one is overdue.

    The reader asks :meth:`step` before each read. ``("send", payload)``: publish ``payload`` on
    the probe channel, then call :meth:`sent`. ``("fail", 0)``: the last probe did not come back
    in time; the subscription is dead. ``("wait", seconds)``: nothing to do for that long. Feed
    every message of the probe channel to :meth:`received`.
    """

    def __init__(self, interval: float | None, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.failures = 0
        #: Unix time of the last probe that came back, None before the first.
        self.last_ok: float | None = None
        self._seq = 0
        self._sent_at: float | None = None
        self._next = 0.0

    def reset(self, now: float) -> None:
        """A new connection: forget the probe in flight, probe it at once."""
        self._sent_at = None
        self._next = now

    def step(self, now: float) -> tuple[str, Any]:
        if self.interval is None:
            return "wait", float("inf")
        if self._sent_at is not None:
            left = self._sent_at + self.timeout - now
            if left > 0:
                return "wait", left
            self._sent_at = None
            self.failures += 1
            return "fail", 0.0
        if now < self._next:
            return "wait", self._next - now
        self._next = now + self.interval
        self._seq += 1
        return "send", str(self._seq).encode()

    def sent(self, now: float) -> None:
        self._sent_at = now

    def activity(self, now: float) -> None:
        """Some other message arrived: the subscription is alive, only busy.

        Under load the probe's echo can queue behind seconds of events; counting the timeout
        from the latest message means only a connection that delivers nothing at all fails.
        """
        if self._sent_at is not None:
            self._sent_at = now

    def received(self, payload: bytes) -> None:
        if self._sent_at is not None and payload == str(self._seq).encode():
            self._sent_at = None
            self.last_ok = time.time()


class _ProbeLost(Exception):
    """The liveness probe did not come back on the pub/sub connection."""


def _reader_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        text = "".join(traceback.format_exception(task.exception()))
        log.critical("pub/sub reader stopped: %s", redact.redact(text))


class Subscriber:
    """The subscriptions of one broker on one Redis, delivered through ``continuity``.

    ``client`` runs the probe's PUBLISH and opens the pub/sub connection; ``where`` names the
    server in error messages. Call :meth:`connect`, then :meth:`run`; :meth:`close` once.
    A new channel is anchored (its position read) before its SUBSCRIBE is sent; a lost
    connection suspends every channel, and each SUBSCRIBE confirmed on the next one starts that
    channel's catch-up (:class:`~bridge.brokers.continuity.Continuity`).
    """

    def __init__(self, client: aioredis.Redis, continuity: Continuity, *,
                 prefix: str, where: str, display_url: str, socket_timeout: float,
                 probe: Probe) -> None:
        self._client = client
        self._continuity = continuity
        self._deliver = continuity.live
        self._prefix = prefix
        self._prefix_b = prefix.encode()
        self._where = where
        self._display_url = display_url
        self._socket_timeout = socket_timeout
        self.probe = probe
        self._probe_name = wire.probe_channel(prefix, secrets.token_hex(8)).encode()
        self.channels: set[str] = set()
        self._acks: dict[bytes, int] = {}  # SUBSCRIBEs not yet confirmed, per Redis channel
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        #: "connected" once connected, "reconnecting" before and while the pub/sub connection
        #: is being re-established.
        self.state = "reconnecting"
        #: How many times the pub/sub connection was re-established after being lost.
        self.reconnects = 0
        #: Pub/sub messages on our channels that were not envelope frames (dropped).
        self.malformed = 0

    @property
    def running(self) -> bool:
        return self._reader is not None

    def run(self) -> None:
        """Start the owned reader task."""
        self._reader = asyncio.create_task(self._read_loop(), name="redis-broker-reader")
        self._reader.add_done_callback(_reader_done)

    async def close(self) -> None:
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            # Cancel again until it ends: Python 3.11's wait_for(), used inside the client
            # library, swallows a cancellation that races with the completion of a command.
            deadline = asyncio.get_running_loop().time() + self._socket_timeout
            while not reader.done() and asyncio.get_running_loop().time() < deadline:
                reader.cancel()
                await asyncio.wait({reader}, timeout=0.05)
        await self.drop()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)  # a pending subscribe() returns; nothing is delivered
        self._waiters.clear()
        self.channels.clear()

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Returns once Redis confirmed the subscription.

        Raises :class:`BrokerError` when the channel's position cannot be read (nothing is
        registered then), or when no confirmation came within ``socket_timeout`` (Redis
        unreachable); the subscription then stays registered and is made on reconnect.
        """
        if channel not in self.channels and not self._continuity.known(channel):
            await self._continuity.anchor(channel)
        if channel not in self.channels:
            self.channels.add(channel)
            self._waiters[channel] = asyncio.get_running_loop().create_future()
            if self._pubsub is not None:
                await self._send_subscribe(self._pubsub, [self._raw(channel)])
            else:  # made on reconnect: what is published until then is caught up from history
                self._continuity.suspend([channel])
        waiter = self._waiters.get(channel)
        if waiter is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._socket_timeout)
        except TimeoutError:
            raise BrokerError(
                f"redis at {self._where}: subscribe to {channel} not confirmed within "
                f"{self._socket_timeout}s; it will be made when the connection is back"
            ) from None

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self.channels:
            return
        # Delivery stops now: the reader drops messages of channels not in the set.
        self.channels.discard(channel)
        self._continuity.forget(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                await pubsub.execute_command("UNSUBSCRIBE", self._raw(channel))
            except _IO_ERRORS as exc:  # the reader sees the broken connection too
                log.debug("unsubscribe %s: %s", channel, redact.redact(str(exc)))

    def _raw(self, channel: str) -> bytes:
        return wire.pubsub_channel(self._prefix, channel).encode()

    async def _send_subscribe(self, pubsub: PubSub, names: list[bytes]) -> None:
        for name in names:
            self._acks[name] = self._acks.get(name, 0) + 1
        try:
            await pubsub.execute_command("SUBSCRIBE", *names)
        except _IO_ERRORS as exc:  # the reader reconnects and re-subscribes
            log.debug("subscribe: %s", redact.redact(str(exc)))

    async def connect(self) -> PubSub:
        """Connect, subscribe the probe and every channel, and wait until Redis confirmed all.

        After a failure call :meth:`drop`.
        """
        pubsub = self._client.pubsub()
        try:
            await pubsub.connect()
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub
        self._acks.clear()
        names = [self._probe_name, *(self._raw(c) for c in sorted(self.channels))]
        await self._send_subscribe(pubsub, names)
        async with asyncio.timeout(self._socket_timeout):
            while any(self._acks.get(name) for name in names):
                self._on_response(await pubsub.parse_response(block=True))
        self.probe.reset(asyncio.get_running_loop().time())
        self.state = "connected"
        return pubsub

    async def drop(self) -> None:
        """Close the pub/sub connection, if any; the reader opens a new one."""
        pubsub, self._pubsub = self._pubsub, None
        self._acks.clear()
        self.state = "reconnecting"
        if pubsub is not None:
            # What is published from now until each channel is subscribed again is missed.
            self._continuity.suspend(self.channels)
            try:
                await pubsub.aclose()
            except _IO_ERRORS:
                pass  # already broken; nothing more to release

    async def _probe_step(self) -> float:
        """Run the probe's due step; seconds until it needs attention again."""
        loop = asyncio.get_running_loop()
        action, value = self.probe.step(loop.time())
        if action == "fail":
            raise _ProbeLost(f"no liveness probe came back within {self.probe.timeout}s")
        if action == "wait":
            return float(value)
        try:
            async with asyncio.timeout(self.probe.timeout):
                await self._client.publish(self._probe_name, value)
        except _IO_ERRORS as exc:  # Redis unreachable: commands and /readyz report that
            log.debug("probe publish: %s", redact.redact(f"{type(exc).__name__}: {exc}"))
            return self.probe.interval or 0.0
        self.probe.sent(loop.time())
        return self.probe.timeout

    async def _read_loop(self) -> None:
        delays: Iterator[float] | None = None
        while not self._closed:
            try:
                pubsub = self._pubsub
                if pubsub is None:
                    pubsub = await self.connect()
                    self.reconnects += 1
                    delays = None
                    log.info("pub/sub connection to %s re-established", self._display_url)
                wait = min(await self._probe_step(), self._socket_timeout)
                response = await pubsub.parse_response(block=False, timeout=max(wait, 0.001))
                if response is not None:
                    self._on_response(response)
            except Exception as exc:  # the reader must outlive any failure
                log.warning("pub/sub connection to %s lost: %s", self._display_url,
                            redact.redact(f"{type(exc).__name__}: {exc}"))
                await self.drop()
                delays = delays or backoff(initial=0.2, maximum=RESUBSCRIBE_MAX)
                await asyncio.sleep(next(delays))

    def _on_response(self, response: Any) -> None:
        if not response:
            return
        kind = response[0]
        if kind == b"message":
            self._on_message(response[1], response[2])
        elif kind == b"subscribe":
            name = response[1]
            left = self._acks.get(name, 0) - 1
            if left > 0:
                self._acks[name] = left
                return
            self._acks.pop(name, None)
            channel = name[len(self._prefix_b) :].decode()
            if channel in self.channels:
                self._continuity.confirmed(channel)
            waiter = self._waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _on_message(self, raw_channel: bytes, frame: bytes) -> None:
        if raw_channel == self._probe_name:
            self.probe.received(frame)
            return
        self.probe.activity(asyncio.get_running_loop().time())
        channel = wire.channel_of(self._prefix_b, raw_channel)
        if channel not in self.channels:
            return  # not ours, or unsubscribed while the UNSUBSCRIBE was in flight
        offset = wire.frame_offset(frame, channel.encode())
        if offset is None:
            self.malformed += 1
            log.warning("dropped a message on %s that is not an event envelope", channel)
            return
        try:
            self._deliver(channel, offset, frame)
        except Exception as exc:
            text = "".join(traceback.format_exception(exc))
            log.error("message handler failed on %s: %s", channel, redact.redact(text))
