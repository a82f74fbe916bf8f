"""``redis-cluster://host:port[,host:port...]``: the Redis broker on a Redis Cluster.

Every key of channel ``c`` carries the hash tag ``{c}``, so a channel lives in one slot:
``<prefix>{c}:stream`` (history), ``<prefix>{c}:epoch`` (its epoch), ``<prefix>{c}:state`` and
``<prefix>{c}:ended`` (live state and its tombstones, :mod:`bridge.brokers.redis.state`). Live
events go on the shard channel ``<prefix>{c}`` with SPUBLISH when every node runs Redis >= 7.0
(detected once at start; subscribers use SSUBSCRIBE), else on ``<prefix>c`` with PUBLISH, as
``redis://`` does.
The shard channel carries the hash tag too because a script may only publish to its own slot.

Publish: the de-duplication mark ``<prefix>seen:<event id>`` (``SET NX PX``, in its own slot)
first, then one script call per slot, which creates the epoch if missing, appends to the
stream, applies the event's change to the state and publishes the envelope, atomically within
the slot. If a later step fails, the mark is deleted so a retry is not taken for a duplicate (a
retry applies the change again on the slots already written, which changes nothing when no
other change of the same record came in between: each operation is idempotent).

Sharded subscriptions need a connection to the node owning each channel's slot: one
:class:`bridge.redisconn.keeper.Keeper` per such node (one pub/sub connection, one owned task).
When a connection drops, or the node moves a slot away (MOVED, or its unsolicited
SUNSUBSCRIBE), the keeper waits its backoff delay, the broker refreshes the slot map and hands
channels now owned elsewhere to those nodes' keepers, and the keeper reconnects; what was
published meanwhile is caught up from history (:class:`bridge.brokers.continuity.Continuity`,
through :class:`bridge.brokers.redis.pubsub.Subscriptions`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio.client import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from bridge.brokers.base import Broker, BrokerError, Replay
from bridge.brokers.continuity import Continuity
from bridge.brokers.redis import state, wire
from bridge.brokers.redis.pubsub import Subscriptions
from bridge.calls.change import Change
from bridge.common import redact
from bridge.events.channels import is_valid_channel
from bridge.redisconn.clients import IO_ERRORS
from bridge.redisconn.keeper import Keeper
from bridge.redisconn.url import parse_cluster_url

log = logging.getLogger("bridge.brokers.redis.cluster")


class RedisClusterBroker(state.SnapshotReads, Broker):
    def __init__(self, url: str, *, prefix: str = "callbridge:", history_length: int = 1000,
                 dedup_window: float = 600.0, connect_timeout: float = 5.0,
                 socket_timeout: float = 5.0, sharded: bool | None = None,
                 max_connections: int = 64) -> None:
        """``sharded``: None detects sharded pub/sub support at start; True/False forces it.
        ``max_connections``: command connections per node."""
        super().__init__()
        if history_length < 0:
            raise ValueError("history_length must not be negative")
        nodes, user, password = parse_cluster_url(url)
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
        self._snapshot_script = self._cluster.register_script(state.SNAPSHOT_SCRIPT)
        self.continuity = Continuity(self._deliver, self._deliver_gap, self.position,
                                     self.replay, read_timeout=self._timeout)
        self._sharded = sharded
        self._subs = Subscriptions(self.continuity, self._keeper_for, prefix=prefix,
                                   where=self.display_url, timeout=socket_timeout, logger=log)
        #: One keeper (pub/sub connection) per node that owns subscribed channels.
        self._keepers: dict[str, Keeper] = {}
        self._node_clients: dict[str, Redis] = {}
        self._retired_reconnects = 0
        self._started = self._closed = False
        #: Redis commands that failed (connection refused, timeout, error reply), for metrics.
        self.errors = 0

    def __repr__(self) -> str:
        return f"RedisClusterBroker({self.display_url!r})"

    def _error(self, doing: str, exc: BaseException) -> BrokerError:
        self.errors += 1
        reason = redact.redact(str(exc)) or type(exc).__name__
        return BrokerError(f"{self.display_url}: {doing} failed: {reason}")

    @property
    def reconnects(self) -> int:
        """Pub/sub connections re-established after a loss or a slot move."""
        return self._retired_reconnects + sum(k.reconnects for k in self._keepers.values())

    @property
    def malformed(self) -> int:
        """Pub/sub messages on our channels that were not envelope frames (dropped)."""
        return self._subs.malformed

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
        except IO_ERRORS as exc:
            raise self._error("connect", exc) from None
        self._subs.sharded = bool(self._sharded)
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        keepers, self._keepers = list(self._keepers.values()), {}
        await asyncio.gather(*(keeper.close() for keeper in keepers))
        clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            await self._close_client(client)
        self._subs.close()
        await self.continuity.close()
        await self._cluster.aclose()

    async def publish(
        self, channels: Sequence[str], event_json: bytes, *, event_id: str | None = None,
        change: Change | None = None,
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
            now = time.time()  # one end time for every slot's tombstone
            for indexes in slots.values():  # the mark is set: each slot's call sets none
                keys, args = wire.publish_keys_and_args(
                    self._prefix, [channels[i] for i in indexes], event_json,
                    history_length=self._history_length, event_id=None, dedup_ms=0,
                    sharded=bool(self._sharded), change=change, now=now)
                ids = await self._publish_script(keys=keys, args=args)
                for i, raw in zip(indexes, ids):
                    offsets[i] = raw.decode() if isinstance(raw, bytes) else str(raw)
        except IO_ERRORS as exc:
            if mark is not None:
                await self._forget(mark)
            raise self._error("publish", exc) from None
        return offsets

    async def _forget(self, mark: str) -> None:
        try:
            await self._cluster.delete(mark)
        except IO_ERRORS as exc:
            log.warning("could not clear a de-duplication mark: %s", redact.redact(str(exc)))

    async def _read(self, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except IO_ERRORS as exc:
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

    async def _snapshot_reply(self, channel: str) -> Any:
        keys = wire.snapshot_keys(self._prefix, channel)
        return await self._read(self._snapshot_script(keys=keys, args=[wire.new_epoch()]))

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._cluster.ping(target_nodes=RedisCluster.PRIMARIES)
        except IO_ERRORS as exc:
            raise self._error("PING", exc) from None

    def health(self) -> dict[str, Any]:
        links = {a: k for a, k in self._keepers.items() if k.channels}
        down = sorted(a for a, k in links.items() if not k.connected.is_set())
        state = "closed" if self._closed else "starting" if not self._started else (
            "degraded" if down else "ok")
        return {"state": state, "sharded": bool(self._sharded), "links": len(links),
                "links_down": down, "reconnects": self.reconnects, "errors": self.errors,
                "malformed": self.malformed, "catching_up": self.continuity.suspended,
                **self.continuity.counts}

    # -- subscriptions: one keeper per node owning subscribed slots --------------------------

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Returns once the owning node confirmed the subscription.

        Raises :class:`BrokerError` when no confirmation came within ``socket_timeout``; the
        subscription stays registered and is made when the node is reachable again.
        """
        if not self._started or self._closed:
            raise BrokerError("broker is not started")
        await self._subs.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        keeper = await self._subs.unsubscribe(channel)
        if keeper is not None and not keeper.channels and not self._closed:
            await self._retire(keeper)

    def _owner(self, channel: str) -> str:
        if not self._sharded:  # PUBLISH reaches every node: any one will do, the same one
            return min(n.name for n in self._cluster.get_primaries())
        node = self._cluster.get_node_from_key(self._subs.raw(channel).decode())
        if node is None:
            raise BrokerError(f"{self.display_url}: no node serves {channel}'s slot")
        return str(node.name)

    def _keeper_for(self, channel: str) -> Keeper:
        """The keeper of the node that owns ``channel`` now, started on first use."""
        address = self._owner(channel)
        keeper = self._keepers.get(address)
        if keeper is None:
            host, _, port = address.rpartition(":")
            client = self._node_clients[address] = Redis(host=host, port=int(port),
                                                         **self._auth)
            keeper = self._keepers[address] = Keeper(
                client, name=address, timeout=self._socket_timeout, sharded=bool(self._sharded),
                on_message=self._subs.heard, on_subscribed=self._subs.confirmed,
                on_lost=self._subs.lost, before_reconnect=lambda: self._rehome(address),
                logger=log)
            keeper.run()
        return keeper

    async def _rehome(self, address: str) -> None:
        """Before the keeper of ``address`` reconnects: refresh the slot map, and hand the
        channels now served by another node to that node's keeper."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            log.debug("slot map refresh: %s", redact.redact(str(exc)))
            return
        keeper = self._keepers.get(address)
        if keeper is None:
            return
        for channel in self._subs.on(keeper):
            if self._owner(channel) != address:
                await keeper.remove([self._subs.raw(channel)])
                await self._subs.place(channel)

    async def _retire(self, keeper: Keeper) -> None:
        """Close the keeper of a node that carries no channel any more."""
        if self._keepers.get(keeper.name) is not keeper:
            return
        del self._keepers[keeper.name]
        client = self._node_clients.pop(keeper.name, None)
        await keeper.close()
        self._retired_reconnects += keeper.reconnects
        if client is not None:
            await self._close_client(client)

    @staticmethod
    async def _close_client(client: Redis) -> None:
        try:
            await client.aclose()
        except IO_ERRORS:
            pass  # already broken; nothing more to release
