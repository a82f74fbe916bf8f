"""``redis-cluster://host:port[,host:port...]``: the Redis broker on a Redis Cluster.

Every key of channel ``c`` carries the hash tag ``{c}``, so a channel lives in one slot:
``<prefix>{c}:stream`` (history), ``<prefix>{c}:epoch`` (its epoch). Live events go on the
shard channel ``<prefix>{c}`` with SPUBLISH when every node runs Redis >= 7.0 (detected once at
start; subscribers use SSUBSCRIBE), else on ``<prefix>c`` with PUBLISH, as ``redis://`` does.
The shard channel carries the hash tag too because a script may only publish to its own slot.

Publish: the de-duplication mark ``<prefix>seen:<event id>`` (``SET NX PX``, in its own slot)
first, then one script call per slot, which creates the epoch if missing, appends to the
stream and publishes the envelope, atomically within the slot. If a later step fails, the mark
is deleted so a retry is not taken for a duplicate.

Sharded subscriptions need a connection to the node owning each channel's slot: one pub/sub
connection per such node, each read by one owned task. When a connection drops, or the node
moves a slot away (MOVED, or its unsolicited SUNSUBSCRIBE), the task refreshes the slot map,
hands channels now owned elsewhere to those nodes' connections, and reconnects with backoff;
what was published meanwhile is caught up from history
(:class:`bridge.brokers.continuity.Continuity`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any

from redis.asyncio.client import PubSub, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from bridge.brokers.base import Broker, BrokerError, Replay
from bridge.brokers.continuity import Continuity
from bridge.brokers.redis import wire
from bridge.brokers.redis.wire import parse_cluster_url as parse_url
from bridge.common import redact
from bridge.common.backoff import RESUBSCRIBE_MAX, backoff
from bridge.events.channels import is_valid_channel

__all__ = ["RedisClusterBroker", "parse_url"]  # parse_url: imported from here by config

log = logging.getLogger("bridge.brokers.redis.cluster")
_IO_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class _Link:
    """One pub/sub connection to one node, the channels subscribed on it, and its reader."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channels: set[str] = set()
        self.pubsub: PubSub | None = None
        self.client: Redis | None = None
        self.task: asyncio.Task[None] | None = None


class _SlotMoved(Exception):
    """The node gave up a subscribed channel's slot."""


class RedisClusterBroker(Broker):
    def __init__(self, url: str, *, prefix: str = "callbridge:", history_length: int = 1000,
                 dedup_window: float = 600.0, connect_timeout: float = 5.0,
                 socket_timeout: float = 5.0, sharded: bool | None = None,
                 max_connections: int = 64) -> None:
        """``sharded``: None detects sharded pub/sub support at start; True/False forces it.
        ``max_connections``: command connections per node."""
        super().__init__()
        if history_length < 0:
            raise ValueError("history_length must not be negative")
        nodes, user, password = parse_url(url)
        redact.register(password)
        self.display_url = "redis-cluster://" + ",".join(f"{h}:{p}" for h, p in nodes)
        self._prefix, self._history_length = prefix, history_length
        self._dedup_ms = max(1, int(dedup_window * 1000))
        self._socket_timeout = socket_timeout
        self._timeout = connect_timeout + socket_timeout
        self._auth: dict[str, Any] = dict(
            username=user, password=password, socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            # No library retries: a retried publish could append an event twice.
            retry=Retry(NoBackoff(), 0))
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes], max_connections=max_connections,
            **self._auth)
        self._publish_script = self._cluster.register_script(wire.PUBLISH_SCRIPT)
        self._history_script = self._cluster.register_script(wire.HISTORY_SCRIPT)
        self._replay_script = self._cluster.register_script(wire.REPLAY_SCRIPT)
        self._position_script = self._cluster.register_script(wire.POSITION_SCRIPT)
        self.continuity = Continuity(self._deliver, self._deliver_gap, self.position,
                                     self.replay, read_timeout=self._timeout)
        self._sharded = sharded
        self._links: dict[str, _Link] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._started = self._closed = False
        #: Pub/sub connections re-established after a loss or a slot move.
        self.reconnects = 0
        #: Pub/sub messages on our channels that were not envelope frames (dropped).
        self.malformed = 0
        #: Redis commands that failed (connection refused, timeout, error reply), for metrics.
        self.errors = 0

    def __repr__(self) -> str:
        return f"RedisClusterBroker({self.display_url!r})"

    def _error(self, doing: str, exc: BaseException) -> BrokerError:
        self.errors += 1
        reason = redact.redact(str(exc)) or type(exc).__name__
        return BrokerError(f"{self.display_url}: {doing} failed: {reason}")

    def _pubname(self, channel: str) -> str:
        return wire.pubsub_channel(self._prefix, channel, sharded=bool(self._sharded))

    async def start(self) -> None:
        if self._closed:
            raise BrokerError("broker is closed")
        if self._started:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._cluster.initialize()
                if self._sharded is None:
                    infos = await self._cluster.info("server", target_nodes=RedisCluster.ALL_NODES)
                    versions = [i["redis_version"] for i in (
                        infos.values() if "redis_version" not in infos else [infos])]
                    self._sharded = all(int(v.split(".")[0]) >= 7 for v in versions)
        except _IO_ERRORS as exc:
            raise self._error("connect", exc) from None
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        links, self._links = list(self._links.values()), {}
        tasks = {link.task for link in links if link.task is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._socket_timeout)
        for link in links:
            link.channels.clear()
            await self._drop(link)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        await self.continuity.close()
        await self._cluster.aclose()

    async def publish(
        self, channels: Sequence[str], event_json: bytes, *, event_id: str | None = None
    ) -> list[str] | None:
        for channel in channels:
            if not is_valid_channel(channel):
                raise ValueError(f"invalid channel name {channel!r}")
        mark = None if event_id is None else wire.seen_key(self._prefix, event_id)
        try:
            if mark is not None and not await self._cluster.set(
                    mark, b"1", nx=True, px=self._dedup_ms):
                return None
            slots: dict[int, list[int]] = {}
            for i, channel in enumerate(channels):
                slot = key_slot(wire.stream_key(self._prefix, channel).encode())
                slots.setdefault(slot, []).append(i)
            offsets = [""] * len(channels)
            for indexes in slots.values():  # the mark is set: each slot's call sets none
                keys, args = wire.publish_keys_and_args(
                    self._prefix, [channels[i] for i in indexes], event_json,
                    history_length=self._history_length, event_id=None, dedup_ms=0,
                    sharded=bool(self._sharded))
                ids = await self._publish_script(keys=keys, args=args)
                for i, raw in zip(indexes, ids):
                    offsets[i] = raw.decode() if isinstance(raw, bytes) else str(raw)
        except _IO_ERRORS as exc:
            if mark is not None:
                await self._forget(mark)
            raise self._error("publish", exc) from None
        return offsets

    async def _forget(self, mark: str) -> None:
        try:
            await self._cluster.delete(mark)
        except _IO_ERRORS as exc:
            log.warning("could not clear a de-duplication mark: %s", redact.redact(str(exc)))

    async def _read(self, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except _IO_ERRORS as exc:
            raise self._error("read", exc) from None

    async def epoch(self, channel: str) -> str:
        fresh = wire.new_epoch()
        key = wire.epoch_key(self._prefix, channel)
        old = await self._read(self._cluster.set(key, fresh, nx=True, get=True))
        return fresh if old is None else old.decode()

    async def history(self, channel: str, after: str | None, limit: int
                      ) -> list[tuple[str, bytes]]:
        args = wire.history_args(after, limit)  # ValueError on a malformed offset, even at 0
        if limit <= 0:
            return []
        keys = wire.channel_keys(self._prefix, channel)
        reply = await self._read(self._history_script(keys=keys, args=args))
        return wire.parse_history(channel, reply)

    async def replay(self, channel: str, *, epoch: str, after: str, limit: int,
                     max_age: float | None = None) -> Replay:
        oldest = None if max_age is None else int((time.time() - max_age) * 1000)
        args = wire.replay_args(epoch, after, limit, oldest)
        keys = wire.channel_keys(self._prefix, channel)
        reply = await self._read(self._replay_script(keys=keys, args=args))
        return wire.parse_replay(channel, reply, limit)

    async def position(self, channel: str) -> tuple[str, str]:
        keys = wire.channel_keys(self._prefix, channel)
        reply = await self._read(self._position_script(keys=keys, args=[wire.new_epoch()]))
        return wire.parse_position(reply)


    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._cluster.ping(target_nodes=RedisCluster.PRIMARIES)
        except _IO_ERRORS as exc:
            raise self._error("PING", exc) from None

    def health(self) -> dict[str, Any]:
        down = sorted(a for a, link in self._links.items() if link.pubsub is None)
        state = "closed" if self._closed else "starting" if not self._started else (
            "degraded" if down else "ok")
        return {"state": state, "sharded": bool(self._sharded), "links": len(self._links),
                "links_down": down, "reconnects": self.reconnects, "errors": self.errors,
                "malformed": self.malformed, "catching_up": self.continuity.suspended,
                **self.continuity.counts}

    # -- subscriptions: one pub/sub connection per node owning subscribed slots ---------------

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Returns once the owning node confirmed the subscription.

        Raises :class:`BrokerError` when no confirmation came within ``socket_timeout``; the
        subscription stays registered and is made when the node is reachable again.
        """
        if not self._started or self._closed:
            raise BrokerError("broker is not started")
        if not any(channel in link.channels for link in self._links.values()):
            if not self.continuity.known(channel):
                await self.continuity.anchor(channel)  # before SUBSCRIBE: nothing slips by
            if not any(channel in link.channels for link in self._links.values()):
                self._waiters[channel] = asyncio.get_running_loop().create_future()
                await self._place(channel)
        waiter = self._waiters.get(channel)
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self._socket_timeout)
            except TimeoutError:
                raise BrokerError(f"{self.display_url}: subscribe to {channel} not confirmed "
                                  f"within {self._socket_timeout}s; it will be retried") from None

    async def unsubscribe(self, channel: str) -> None:
        self.continuity.forget(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for link in list(self._links.values()):
            if channel in link.channels:
                link.channels.discard(channel)  # delivery stops now: the reader checks the set
                await self._send(link, "UNSUBSCRIBE", [channel])

    def _owner(self, channel: str) -> str:
        if not self._sharded:  # PUBLISH reaches every node: any one will do, the same one
            return min(n.name for n in self._cluster.get_primaries())
        node = self._cluster.get_node_from_key(self._pubname(channel))
        if node is None:
            raise BrokerError(f"{self.display_url}: no node serves {channel}'s slot")
        return str(node.name)

    async def _place(self, channel: str) -> None:
        address = self._owner(channel)
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(address)
            link.task = asyncio.create_task(self._run(link), name=f"redis-cluster-{address}")
        link.channels.add(channel)
        if link.pubsub is not None:
            await self._send(link, "SUBSCRIBE", [channel])
        else:  # made on (re)connect: what is published until then is caught up from history
            self.continuity.suspend([channel])

    async def _send(self, link: _Link, verb: str, channels: list[str]) -> None:
        if link.pubsub is None:
            return
        command = ("S" + verb) if self._sharded else verb
        try:  # sharded: one command per channel, as channels of one node span several slots
            for group in ([c] for c in channels) if self._sharded else [channels]:
                await link.pubsub.execute_command(command, *map(self._pubname, group))
        except _IO_ERRORS as exc:  # the reader sees the broken connection and recovers
            log.debug("%s on %s: %s", command, link.address, redact.redact(str(exc)))

    async def _run(self, link: _Link) -> None:
        delays: Iterator[float] | None = None
        try:
            while link.channels:
                try:
                    if link.pubsub is None:
                        host, _, port = link.address.rpartition(":")
                        link.client = Redis(host=host, port=int(port), **self._auth)
                        link.pubsub = link.client.pubsub()
                        await link.pubsub.connect()
                        await self._send(link, "SUBSCRIBE", sorted(link.channels))
                    response = await link.pubsub.parse_response(
                        block=False, timeout=self._socket_timeout)
                    if response:
                        self._on_response(link, response)
                        delays = None
                except Exception as exc:  # the reader must outlive any failure
                    log.warning("pub/sub link to %s: %s", link.address,
                                redact.redact(f"{type(exc).__name__}: {exc}"))
                    await self._drop(link)
                    delays = delays or backoff(initial=0.2, maximum=RESUBSCRIBE_MAX)
                    await asyncio.sleep(next(delays))
                    await self._rehome(link)
                    self.reconnects += 1
        finally:
            if self._links.get(link.address) is link:
                del self._links[link.address]
            await self._drop(link)

    async def _rehome(self, link: _Link) -> None:
        """Refresh the slot map; hand channels now served by another node to its link."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            log.debug("slot map refresh: %s", redact.redact(str(exc)))
            return
        for channel in sorted(link.channels):
            if self._owner(channel) != link.address:
                link.channels.discard(channel)
                await self._place(channel)

    async def _drop(self, link: _Link) -> None:
        pubsub, client, link.pubsub, link.client = link.pubsub, link.client, None, None
        if pubsub is not None:
            # What is published from now until each channel is subscribed again is missed.
            self.continuity.suspend(link.channels)
        for closing in (pubsub, client):
            if closing is not None:
                try:
                    await closing.aclose()
                except _IO_ERRORS:
                    pass  # already broken; nothing more to release

    def _on_response(self, link: _Link, response: Any) -> None:
        kind, name = response[0], response[1]
        channel = wire.channel_of(self._prefix.encode(), name) if isinstance(name, bytes) else None
        if kind in (b"smessage", b"message") and channel in link.channels:
            offset = wire.frame_offset(response[2], channel.encode())
            if offset is None:
                self.malformed += 1
                log.warning("dropped a message on %s that is not an event envelope", channel)
                return
            try:
                self.continuity.live(channel, offset, response[2])
            except Exception as exc:
                log.error("message handler failed on %s: %s", channel, redact.redact(repr(exc)))
        elif kind in (b"ssubscribe", b"subscribe") and channel is not None:
            if channel in link.channels:
                self.continuity.confirmed(channel)
            waiter = self._waiters.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == b"sunsubscribe" and channel in link.channels:
            raise _SlotMoved(f"{link.address} no longer serves {channel}")
