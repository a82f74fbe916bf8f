"""The Redis brokers' live subscriptions: channels on keepers, delivered through continuity.

Both Redis brokers subscribe the same way and differ only in which pub/sub connection carries
a channel: the one connection of ``redis://``, or the connection to the node owning the
channel's slot for ``redis-cluster://``. Each connection is a
:class:`bridge.redisconn.keeper.Keeper` whose callbacks are :meth:`Subscriptions.heard`,
:meth:`~Subscriptions.confirmed` and :meth:`~Subscriptions.lost`; the broker answers
``keeper_for(channel)``.

A new channel is anchored (its position read) before its SUBSCRIBE is sent; a lost connection
suspends every channel on it, and each SUBSCRIBE confirmed on the next one starts that
channel's catch-up (:class:`~bridge.brokers.continuity.Continuity`).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable

from bridge.brokers.base import BrokerError
from bridge.brokers.continuity import Continuity
from bridge.brokers.redis import wire
from bridge.common import redact
from bridge.redisconn.keeper import Keeper


class Subscriptions:
    """The channels of one broker, each placed on the keeper ``keeper_for(channel)`` names.

    ``where`` starts error messages; ``timeout`` bounds the wait for a confirmation;
    ``sharded``: channels have their sharded pub/sub names (settable until the first
    subscribe).
    """

    def __init__(self, continuity: Continuity, keeper_for: Callable[[str], Keeper], *,
                 prefix: str, where: str, timeout: float, logger: logging.Logger,
                 sharded: bool = False) -> None:
        self._continuity = continuity
        self._keeper_for = keeper_for
        self._prefix = prefix
        self._prefix_b = prefix.encode()
        self._where = where
        self._timeout = timeout
        self._log = logger
        self.sharded = sharded
        #: Each subscribed channel and the keeper that carries it.
        self.placed: dict[str, Keeper] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        #: Pub/sub messages on our channels that were not envelope frames (dropped).
        self.malformed = 0

    def raw(self, channel: str) -> bytes:
        """The Redis pub/sub name of ``channel``."""
        return wire.pubsub_channel(self._prefix, channel, sharded=self.sharded).encode()

    def on(self, keeper: Keeper) -> list[str]:
        """The channels ``keeper`` carries, sorted."""
        return sorted(c for c, k in self.placed.items() if k is keeper)

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Returns once Redis confirmed the subscription.

        Raises :class:`BrokerError` when the channel's position cannot be read (nothing is
        registered then), or when no confirmation came within ``timeout`` (Redis
        unreachable); the subscription then stays registered and is made on reconnect.
        """
        if channel not in self.placed and not self._continuity.known(channel):
            await self._continuity.anchor(channel)  # before SUBSCRIBE: nothing slips by
        if channel not in self.placed:
            self._waiters[channel] = asyncio.get_running_loop().create_future()
            await self.place(channel)
        waiter = self._waiters.get(channel)
        if waiter is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout)
        except TimeoutError:
            raise BrokerError(
                f"{self._where}: subscribe to {channel} not confirmed within "
                f"{self._timeout}s; it will be made when the connection is back"
            ) from None

    async def place(self, channel: str) -> None:
        """Put ``channel`` on the keeper that should carry it now."""
        keeper = self._keeper_for(channel)
        self.placed[channel] = keeper
        if not await keeper.add([self.raw(channel)]):
            # Made on (re)connect: what is published until then is caught up from history.
            self._continuity.suspend([channel])

    async def unsubscribe(self, channel: str) -> Keeper | None:
        """Stop delivering ``channel`` now; the keeper that carried it, if any."""
        keeper = self.placed.pop(channel, None)
        self._continuity.forget(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if keeper is not None:
            await keeper.remove([self.raw(channel)])
        return keeper

    def close(self) -> None:
        """Forget every channel; a pending :meth:`subscribe` returns, delivering nothing."""
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        self.placed.clear()

    # -- the keepers' callbacks -------------------------------------------------------------

    def heard(self, name: bytes, frame: bytes) -> None:
        channel = wire.channel_of(self._prefix_b, name)
        if channel is None or channel not in self.placed:
            return  # not ours, or unsubscribed meanwhile
        offset = wire.frame_offset(frame, channel.encode())
        if offset is None:
            self.malformed += 1
            self._log.warning("dropped a message on %s that is not an event envelope", channel)
            return
        try:
            self._continuity.live(channel, offset, frame)
        except Exception as exc:
            text = "".join(traceback.format_exception(exc))
            self._log.error("message handler failed on %s: %s", channel, redact.redact(text))

    def confirmed(self, name: bytes) -> None:
        channel = wire.channel_of(self._prefix_b, name)
        if channel is None:
            return
        if channel in self.placed:
            self._continuity.confirmed(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def lost(self, names: frozenset[bytes]) -> None:
        channels = (wire.channel_of(self._prefix_b, name) for name in names)
        self._continuity.suspend([c for c in channels if c is not None and c in self.placed])
