"""Keeping a set of Redis pub/sub channels subscribed: one connection, one owned reader task.

:class:`Keeper` is callbridge's one mechanism for a subscription that must stay up: the
``redis://`` broker's channels, each node's share of the ``redis-cluster://`` broker's
channels, and the control channels (revocations, lease notices). It reports each SUBSCRIBE
Redis confirmed, each message and each lost connection, so a caller that must not miss
anything suspends on a loss and catches up once the confirmation came (the brokers do, through
:class:`bridge.brokers.continuity.Continuity`). After a loss it reconnects with
:func:`bridge.common.backoff.backoff` and subscribes every channel again; an optional liveness
probe (:class:`bridge.redisconn.probe.Probe`) finds a subscription that died silently. The
reader never ends before :meth:`Keeper.close`.

Channel names are the Redis names, as bytes; callers map them to their own channels. Which
reply means what is :class:`bridge.redisconn.channelset.ChannelSet`'s business (no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from bridge.common.backoff import RESUBSCRIBE_MAX, backoff
from bridge.common.redact import redact
from bridge.redisconn.channelset import ChannelSet
from bridge.redisconn.clients import IO_ERRORS
from bridge.redisconn.probe import Probe

log = logging.getLogger(__name__)


#: ``on_message(name, data)``: a message on a channel of the set.
MessageHandler = Callable[[bytes, bytes], None]
#: ``on_subscribed(name)``: Redis confirmed the SUBSCRIBE of a channel of the set.
SubscribedHandler = Callable[[bytes], None]
#: ``on_lost(names)``: the connection is gone; what is published to ``names`` is missed until
#: each is confirmed again.
LostHandler = Callable[[frozenset[bytes]], None]


class SubscriptionLost(Exception):
    """The subscription ended while the socket may still be open: the liveness probe did not
    come back, or a node gave a sharded channel's slot away."""


class Keeper:
    """Keeps :attr:`channels` (``channels``, then those :meth:`add` gives) subscribed on one
    pub/sub connection of ``client``.

    Call :meth:`run` to start the reader (it connects, and reconnects after every loss), or
    first :meth:`connect` to fail at once when Redis cannot be reached; :meth:`close` once.
    The callbacks run on the reader task (or in :meth:`connect`) and must not block; one that
    has work to do schedules its own task. One that raises is logged, never stops the reader.

    ``sharded``: SSUBSCRIBE (one command per channel, as a node's channels span several slots)
    instead of SUBSCRIBE; an unsolicited SUNSUBSCRIBE (the slot moved) counts as a loss.
    ``probe``: publish a probe on ``probe_channel`` with ``client`` and expect it back on the
    subscription; plain pub/sub only. ``before_reconnect`` runs after the backoff delay,
    before each new connection (the cluster broker moves channels to their new node there);
    it bounds its own waits.
    ``timeout`` bounds connecting and the confirmation of every channel, each probe publish,
    and :meth:`close`. ``logger``: the caller's, so operators configure one name per service.
    """

    def __init__(self, client: aioredis.Redis, *, name: str, timeout: float,
                 on_message: MessageHandler, channels: Iterable[bytes] = (),
                 on_subscribed: SubscribedHandler | None = None,
                 on_lost: LostHandler | None = None,
                 before_reconnect: Callable[[], Awaitable[None]] | None = None,
                 sharded: bool = False, probe: Probe | None = None,
                 probe_channel: bytes = b"", logger: logging.Logger = log) -> None:
        if probe is not None and (sharded or not probe_channel):
            raise ValueError("a probe needs a probe_channel and plain pub/sub")
        self._client = client
        self.name = name
        self._timeout = timeout
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._before_reconnect = before_reconnect
        self._sharded = sharded
        self.probe = probe
        self._probe_channel = probe_channel
        self._log = logger
        self._set = ChannelSet(channels)
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._established = False
        #: Set once a connection's first SUBSCRIBEs are all confirmed; cleared on its loss.
        self.connected = asyncio.Event()
        #: How many times the connection was re-established after being lost.
        self.reconnects = 0

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels kept subscribed (the probe's not among them)."""
        return frozenset(self._set.names)

    @property
    def state(self) -> str:
        """"connected" while :attr:`connected` is set, else "reconnecting"."""
        return "connected" if self.connected.is_set() else "reconnecting"

    @property
    def running(self) -> bool:
        return self._task is not None

    def run(self) -> None:
        """Start the owned reader task (once; not after :meth:`close`)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._read_loop(), name=f"pub/sub {self.name}")
            self._task.add_done_callback(self._reader_done)

    async def wait_connected(self, timeout: float) -> bool:
        """Whether :attr:`connected` got set within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self.connected.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """End the reader within ``timeout`` and close the connection. Idempotent; ``client``
        stays open (its owner closes it)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            # Cancel again until it ends: Python 3.11's wait_for(), used inside the client
            # library, swallows a cancellation that races with the completion of a command.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout
            while not task.done() and loop.time() < deadline:
                task.cancel()
                await asyncio.wait({task}, timeout=0.05)
        await self._drop()
        self._set.names.clear()

    async def add(self, names: Iterable[bytes]) -> bool:
        """Keep ``names`` subscribed too.

        True when they were sent on the current connection (``on_subscribed`` follows for
        each); False when they will be subscribed on the next one: until then the caller
        counts them as lost.
        """
        fresh = self._set.add(names)
        pubsub = self._pubsub
        if pubsub is None:
            self._wake.set()
            return False
        await self._send(pubsub, "SUBSCRIBE", fresh)
        return True

    async def remove(self, names: Iterable[bytes]) -> None:
        """Deliver nothing more of ``names`` (from now on) and unsubscribe them."""
        gone = self._set.remove(names)
        if self._pubsub is not None:
            await self._send(self._pubsub, "UNSUBSCRIBE", gone)

    async def connect(self) -> None:
        """Connect now, unless connected; return once Redis confirmed every channel.

        Raises RedisError, OSError or TimeoutError when that fails within ``timeout``; nothing
        stays open then, and ``on_lost`` has run.
        """
        if self._pubsub is None:
            await self._open()

    async def _open(self) -> PubSub:
        pubsub = self._client.pubsub()
        self._pubsub = pubsub
        self._set.new_connection()
        names = sorted(self._set.names)
        if self.probe is not None:
            names.insert(0, self._probe_channel)
        try:
            async with asyncio.timeout(self._timeout):
                await self._execute(pubsub, "SUBSCRIBE", names)
                while self._set.awaiting(names):
                    self._on_response(await pubsub.parse_response(block=True))
        except BaseException:
            await self._drop()
            raise
        if self.probe is not None:
            self.probe.reset(asyncio.get_running_loop().time())
        if self._established:
            self.reconnects += 1
        self._established = True
        self.connected.set()
        return pubsub

    async def _execute(self, pubsub: PubSub, verb: str, names: list[bytes]) -> None:
        """Send ``verb`` for ``names`` (the pub/sub connection opens on the first command)."""
        self._set.sending(verb, names)
        if self._sharded:
            for name in names:
                await pubsub.execute_command("S" + verb, name)
        elif names:
            await pubsub.execute_command(verb, *names)

    async def _send(self, pubsub: PubSub, verb: str, names: list[bytes]) -> None:
        try:
            await self._execute(pubsub, verb, names)
        except IO_ERRORS as exc:  # the reader sees the broken connection and recovers
            self._log.debug("%s on %s: %s", verb, self.name, redact(str(exc)))

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._set.new_connection()
        self.connected.clear()
        if pubsub is None:
            return
        # What is published from now until each channel is confirmed again is missed.
        self._guarded("on_lost", self._on_lost, frozenset(self._set.names))
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.aclose()
        except IO_ERRORS:
            pass  # already broken; nothing more to release

    async def _read_loop(self) -> None:
        delays: Iterator[float] | None = None
        while not self._closed:
            try:
                pubsub = self._pubsub
                if pubsub is None:
                    if not self._set.names and self.probe is None:
                        await self._idle()
                        continue
                    again = self._established
                    pubsub = await self._open()
                    delays = None
                    self._log.log(logging.INFO if again else logging.DEBUG,
                                  "pub/sub connection to %s %s", self.name,
                                  "re-established" if again else "established")
                wait = min(await self._probe_step(), self._timeout)
                response = await pubsub.parse_response(block=False, timeout=max(wait, 0.001))
                if response is not None:
                    self._on_response(response)
            except Exception as exc:  # the reader must outlive any failure
                self._log.warning("pub/sub connection to %s lost: %s", self.name,
                                  redact(f"{type(exc).__name__}: {exc}"))
                await self._drop()
                delays = delays or backoff(initial=0.2, maximum=RESUBSCRIBE_MAX)
                await asyncio.sleep(next(delays))
                await self._prepare()

    async def _idle(self) -> None:
        """No channel to keep: wait for :meth:`add` rather than hold a useless connection."""
        self._wake.clear()
        if not self._set.names:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await self._wake.wait()

    async def _prepare(self) -> None:
        if self._before_reconnect is None:
            return
        try:
            await self._before_reconnect()  # bounds its own waits: it knows what they are
        except Exception as exc:  # reconnecting where we were is still worth trying
            self._log.warning("pub/sub connection to %s: preparing to reconnect failed: %s",
                              self.name, redact(f"{type(exc).__name__}: {exc}"))

    async def _probe_step(self) -> float:
        """Run the probe's due step; seconds until it needs attention again."""
        if self.probe is None:
            return float("inf")
        loop = asyncio.get_running_loop()
        action, value = self.probe.step(loop.time())
        if action == "fail":
            raise SubscriptionLost(f"no liveness probe came back within {self.probe.timeout}s")
        if action == "wait":
            return float(value)
        try:
            async with asyncio.timeout(self.probe.timeout):
                await self._client.publish(self._probe_channel, value)
        except IO_ERRORS as exc:  # Redis unreachable: commands and /readyz report that
            self._log.debug("probe publish: %s", redact(f"{type(exc).__name__}: {exc}"))
            return self.probe.interval or 0.0
        self.probe.sent(loop.time())
        return self.probe.timeout

    def _on_response(self, response: Any) -> None:
        reply = self._set.reply(response)
        if reply is None:
            return
        kind, name, data = reply
        if kind == "subscribed":
            self._guarded("on_subscribed", self._on_subscribed, name)
        elif kind == "ended":
            raise SubscriptionLost(f"{self.name} ended the subscription to "
                                   f"{name.decode(errors='replace')} (its slot moved)")
        elif self.probe is not None and name == self._probe_channel:
            self.probe.received(data)
        else:
            if self.probe is not None:  # any other message shows the subscription alive
                self.probe.activity(asyncio.get_running_loop().time())
            if name in self._set.names:  # else unsubscribed while the UNSUBSCRIBE was in flight
                self._guarded("on_message", self._on_message, name, data)

    def _guarded(self, what: str, callback: Callable[..., None] | None, *args: Any) -> None:
        """Run a caller's callback; a failing one is logged and the reader goes on."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception as exc:
            self._log.error("pub/sub %s: %s failed: %s", self.name, what,
                            redact("".join(traceback.format_exception(exc))))

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            text = "".join(traceback.format_exception(task.exception()))
            self._log.critical("pub/sub reader of %s stopped: %s", self.name, redact(text))
