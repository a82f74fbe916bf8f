"""The running bridge: broker, hub, pipeline, token managers and upstream streams, owned together.

``async with Service(config) as service:`` starts everything and, on exit, stops it in the
reverse order: upstream streams are handed over (their leases released, the streams kept
running until another instance has them live upstream: :func:`bridge.cluster.leases.hand_over`), the
pipeline is drained into the broker and the outage buffer flushed, clients are closed with
1012, then the broker; all within ``[server] shutdown_timeout`` of
:meth:`Service.begin_shutdown` (a signal) or of the exit.

:meth:`Service.reload` applies a new configuration's account blocks to the running service:
added blocks start, removed ones stop (their leases released), changed ones restart, unchanged
ones are not touched (:mod:`bridge.config.changes`).

Each upstream stream (built by :mod:`bridge.core.streams`) runs only while this instance holds
its lease (:mod:`bridge.cluster.leases`); the broker and the shared state come from
:mod:`bridge.core.backends`, the broker wrapped in
:class:`bridge.brokers.resilient.ResilientBroker` so a broker outage never stops the streams nor
local delivery.

A broker that cannot be reached at start raises :class:`DependencyUnavailable`, whose text is
the one line a user needs (where, why, what to check). A clean stop logs one summary line.

The :class:`bridge.core.closer.Closer` keeps the live state from going stale: it closes legs
whose end never came (``[state] max_call_age``) and the legs of every call a published
``call.completed`` reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx

from bridge.auth.jwks import Jwks
from bridge.auth.verifier import Verifier
from bridge.brokers.base import Broker, BrokerError
from bridge.brokers.resilient import ResilientBroker
from bridge.cluster.clients import ClusterClients, LocalClients
from bridge.cluster.cursors import CursorStore
from bridge.cluster.leases import LeasedRunner, LeaseStore, LocalLeases, hand_over
from bridge.cluster.notices import RELEASED, LeaseNotices, LocalNotices, Notice
from bridge.cluster.revocations import Revocations
from bridge.common.redact import redact, register
from bridge.config.changes import ACCOUNT_SECTIONS, Changes, block_name, diff
from bridge.config.model import AntBuddyAccount, Config
from bridge.core.backends import broker_for, coordination_for
from bridge.core.closer import Closer
from bridge.core.pipeline import Pipeline
from bridge.core.streams import StreamFactory
from bridge.downstream.hub import Hub
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.registry import build_providers, rebuild_providers
from bridge.push.pusher import Pusher
from bridge.redisconn import reasons
from bridge.upstream.stream import State, UpstreamStream
from bridge.upstream.tokens import app_hash

log = logging.getLogger("bridge.core.service")


class Service:
    def __init__(self, config: Config, *, broker: Broker | None = None) -> None:
        self.config = config
        _register_secrets(config)
        self.broker = ResilientBroker(broker or broker_for(config),
                                      buffer_events=config.broker.buffer_events)
        shared = coordination_for(config)
        self.leases: LeaseStore | LocalLeases = shared.leases
        self.notices: LeaseNotices | LocalNotices = shared.notices
        self.revocations: Revocations = shared.revocations
        self.cursors: CursorStore = shared.cursors
        #: Asks the other instances about their clients (admin disconnects and lists).
        self.clients: ClusterClients | LocalClients = shared.clients
        self.providers: list[Provider] = []
        self.hub = Hub(self.broker, client_queue_bytes=config.server.client_queue_bytes)
        self.pipeline = Pipeline(self.broker)
        auth = config.auth
        #: The identity provider's published keys (none without ``jwks_url``).
        self.jwks = Jwks(auth.jwks_url, refresh=auth.jwks_refresh,
                         min_refresh=auth.jwks_min_refresh,
                         timeout=auth.jwks_timeout) if auth.jwks_url else None
        #: What checks every token of ``/ws`` and the API (the app hands it to both).
        self.verifier = Verifier.from_config(auth, self.jwks)
        self.closer = Closer(self.broker, self.pipeline.submit, self.tenants,
                             max_call_age=config.state.max_call_age,
                             sweep_interval=config.state.sweep_interval)
        self.pipeline.on_published = self.closer.completed
        #: The ``[[webhook]]`` targets, each pushed under its lease (none: nothing runs).
        self.pusher = Pusher(config.webhook, url=config.broker.url,
                             prefix=config.broker.prefix, leases=self.leases,
                             notices=self.notices)
        self.streams: list[UpstreamStream] = []
        #: One per stream, same order as :attr:`streams`.
        self.runners: list[LeasedRunner] = []
        self._releasing: asyncio.Task[None] | None = None
        #: Monotonic time by which the shutdown must be done (set when it begins).
        self._deadline: float | None = None
        self._reload_lock = asyncio.Lock()
        self._context: ProviderContext | None = None
        self._factory: StreamFactory | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = AsyncExitStack()
        self.started_at = time.time()
        #: Websocket clients connected when the shutdown began (all of them are closed).
        self._clients_at_stop = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        up = self.config.upstream
        # Idle connections are dropped before common servers' 5 s keep-alive ends, so a
        # poller never reuses a connection the server is closing (a spurious ReadError).
        http = httpx.AsyncClient(timeout=up.request_timeout, trust_env=False,
                                 headers={"user-agent": "callbridge"},
                                 limits=httpx.Limits(keepalive_expiry=2.0))
        self._stack.push_async_callback(http.aclose)
        if self.jwks is not None:
            self._stack.push_async_callback(self.jwks.close)
            await self.jwks.start()
        self._factory = StreamFactory(up, http, self.pipeline, self.leases, self.notices)
        self.broker.set_handler(self.hub.on_message)
        try:
            await self.broker.start()
        except BrokerError as exc:
            url = self.config.broker.url
            raise DependencyUnavailable(reasons.unreachable(reasons.where(url),
                                                            reasons.why(exc))) from exc
        self._stack.push_async_callback(self.broker.close)
        self._stack.push_async_callback(self.leases.close)
        await self.revocations.start()
        self._stack.push_async_callback(self.revocations.close)
        self._spawn(self.pipeline.run(), "pipeline")
        self._spawn(self.closer.run(), "closer")
        for account in self.config.antbuddy:
            self._start_stream(account)
        self._stack.push_async_callback(self.pusher.close)
        self.pusher.start()
        # Listening only now: an instance that hears a release notice has its runners.
        self.notices.on_notice(self._on_lease_notice)
        self._stack.push_async_callback(self.notices.close)
        await self.notices.start()
        self._stack.push_async_callback(self.clients.close)
        await self.clients.start()
        self._stack.push_async_callback(self.cursors.close)
        context = ProviderContext(submit=self.pipeline.submit, http=http, cursors=self.cursors,
                                  broker_url=self.config.broker.url,
                                  prefix=self.config.broker.prefix)
        self.providers = build_providers(self.config, context, streams=self.streams)
        for provider in self.providers:
            self._spawn(provider.run(), f"provider {provider.name}")
        self._context = context
        log.info("callbridge %s started: broker %s, %d upstream stream(s)",
                 self.leases.instance_id, self.broker.display_url, len(self.streams))

    def tenants(self) -> set[str]:
        """The tenants of the running configuration's provider blocks."""
        return {block.tenant for section in ACCOUNT_SECTIONS
                for block in getattr(self.config, section)}

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _stop_task(self, name: str) -> None:
        tasks = [t for t in self._tasks if t.get_name() == name]
        for task in tasks:
            self._tasks.remove(task)
        await _cancel(tasks)

    def _start_stream(self, account: AntBuddyAccount) -> None:
        assert self._factory is not None, "streams start once the service has started"
        stream, runner = self._factory.build(account)
        self.streams.append(stream)
        self.runners.append(runner)
        self._spawn(runner.run(), f"lease {stream.name}")

    # -- reload --------------------------------------------------------------------------------

    async def reload(self, config: Config) -> Changes:
        """Apply ``config``'s account blocks; every other section keeps its running values.

        Returns what changed (fixed sections that differ are listed as needing a restart).
        Raises :class:`ReloadRefused` before the service has started or once it stops.
        Reloads run one at a time.
        """
        async with self._reload_lock:
            if self._context is None or self._releasing is not None:
                raise ReloadRefused("the service is not running (starting or shutting down)")
            changes = diff(self.config, config)
            if changes.applies_anything:
                await self._apply(changes.config, self._context)
            else:
                self.config = changes.config
            return changes

    async def _apply(self, config: Config, context: ProviderContext) -> None:
        _register_secrets(config)
        before = {block_name("antbuddy", a): a for a in self.config.antbuddy}
        after = {block_name("antbuddy", a): a for a in config.antbuddy}
        running = {s.name: (s, r) for s, r in zip(self.streams, self.runners)}
        released = []
        for name, (stream, runner) in running.items():
            if before.get(name) != after.get(name):
                # Removed or changed: stop it and give its lease up before anything restarts.
                await self._stop_task(f"lease {name}")
                if await runner.release() and name not in after:
                    released.append(name)
                log.info("reload: stream %s stopped", name)
        if released:
            # Instances that still run a removed block take it over at once (a changed one
            # restarts here).
            await self.notices.publish(RELEASED, released)
        self.config = config
        self.streams.clear()
        self.runners.clear()
        for name, account in after.items():
            if name in running and before.get(name) == account:
                self.streams.append(running[name][0])
                self.runners.append(running[name][1])
            else:
                self._start_stream(account)
                log.info("reload: stream %s started", name)
        assert self._factory is not None
        self._factory.keep_tokens_of(self.streams)
        providers = rebuild_providers(config, context, self.providers, streams=self.streams)
        for old in self.providers:
            if all(old is not p for p in providers):
                await self._stop_task(f"provider {old.name}")
        fresh = [p for p in providers if all(p is not old for old in self.providers)]
        self.providers[:] = providers
        for provider in fresh:
            self._spawn(provider.run(), f"provider {provider.name}")

    # -- shutdown ------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Begin the shutdown now, without waiting (signal handlers).

        The streams are handed over (leases released, streams stopped once taken over, or
        after ``[lease] handover_timeout``), then queued and buffered events are published;
        :meth:`stop` finishes. All of it within ``[server] shutdown_timeout`` of this call.
        """
        if self._releasing is None:
            self._clients_at_stop = max(self._clients_at_stop, self.hub.stats()["clients"])
            if self._deadline is None:
                self._deadline = time.monotonic() + self.config.server.shutdown_timeout
            self._releasing = asyncio.create_task(self._wind_down(), name="release")

    def _remaining(self) -> float:
        assert self._deadline is not None
        return max(0.0, self._deadline - time.monotonic())

    async def _wind_down(self) -> None:
        # No more closing events: what is queued is published, nothing new is started.
        await self._stop_task("closer")
        await self.pusher.stop()  # its leases released: another instance pushes at once
        async with self._reload_lock:  # a reload in progress finishes first
            for runner in self.runners:
                runner.detach()  # the streams run on, publishing, until taken over
            await _cancel([t for t in self._tasks if t.get_name().startswith("lease ")])
            # At most half the time left: publishing and closing keep the rest.
            wait = min(self.config.lease.handover_timeout, self._remaining() / 2)
            await hand_over(self.runners, self.notices, timeout=wait)
        # Publishing starts while the server still closes its connections.
        if await self.pipeline.drain(self._remaining()):
            await self.broker.flush(self._remaining())

    async def stop(self, drain_timeout: float | None = None) -> None:
        if drain_timeout is not None and self._releasing is None:
            self._deadline = time.monotonic() + drain_timeout
        self.begin_shutdown()
        assert self._releasing is not None and self._deadline is not None
        timeout = drain_timeout or self.config.server.shutdown_timeout
        try:
            async with asyncio.timeout(self._remaining()):
                await asyncio.shield(self._releasing)
        except TimeoutError:
            log.error("shutdown: leases and events not all settled within %.0fs", timeout)
        # Again: events may have arrived meanwhile (webhooks answered during the server's own
        # shutdown); this returns at once when everything is published already.
        if not await self.pipeline.drain(self._remaining()):
            log.error("shutdown: %d event(s) not published within %.0fs",
                      self.pipeline.pending, timeout)
        if not await self.broker.flush(self._remaining()):
            log.error("shutdown: %d buffered event(s) not published within %.0fs",
                      self.broker.health()["buffered"], timeout)
        await self.hub.close_all(1012, timeout=min(5.0, max(0.5, self._remaining())))
        await _cancel([*self._tasks, self._releasing])
        self._tasks.clear()
        await self._stack.aclose()
        if self._context is not None:  # it had started: say what it did
            log.info("%s", self.summary())

    def summary(self) -> str:
        """One line on the run, from the counters: how long, streams, clients, events."""
        return (f"callbridge stopped after {_duration(time.time() - self.started_at)}: "
                f"{_count(len(self.streams), 'upstream stream')} closed, "
                f"{_count(self._clients_at_stop, 'websocket client')} closed, "
                f"{_count(self.pipeline.counts['published'], 'event')} published")

    def _on_lease_notice(self, notice: Notice) -> None:
        self.pusher.on_notice(notice)
        streams = set(notice.streams)
        for runner in self.runners:
            if runner.stream in streams:
                if notice.kind == RELEASED:
                    runner.nudge()
                else:
                    runner.successor_live()

    # -- health --------------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        broker_ok, broker_error = True, None
        try:
            async with asyncio.timeout(2):
                await self.broker.ping()
        except (BrokerError, TimeoutError) as exc:
            broker_ok, broker_error = False, redact(str(exc) or "timeout")
        streams = []
        ready = broker_ok
        for stream, runner in zip(self.streams, self.runners):
            snapshot = stream.snapshot()
            snapshot["lease"] = runner.snapshot()
            if not runner.held:
                # Held elsewhere is fine; held by nobody means the stream is not running at all.
                snapshot["state"] = "standby"
                ready = ready and runner.held_by is not None
            else:
                ready = ready and stream.status.state is State.SUBSCRIBED
            streams.append(snapshot)
        health = self.broker.health()
        # Buffered events not yet published: other instances' clients and history lag behind.
        ready = ready and health["state"] != "buffering"
        # Without the revoked token ids no client can be admitted (1013 until they load).
        ready = ready and self.revocations.synced
        # A JWKS that stopped answering leaves its keys in use; with none ever fetched, the
        # identity provider's tokens cannot be checked at all.
        jwks = self.jwks.snapshot() if self.jwks is not None else None
        ready = ready and (self.jwks is None or self.jwks.fetched)
        body = {
            "ready": ready,
            "instance_id": self.leases.instance_id,
            "broker": {**health, "url": self.broker.display_url, "ok": broker_ok,
                       "error": broker_error},
            "streams": streams,
            "pipeline": {**self.pipeline.counts, "pending": self.pipeline.pending},
            "clients": self.hub.stats(),
            "revocations": {"synced": self.revocations.synced,
                            "revoked": len(self.revocations.ids)},
            "providers": [p.snapshot() for p in self.providers],
            "webhooks": self.pusher.snapshot(),
            "jwks": jwks,
        }
        return ready, body


class ReloadRefused(Exception):
    """The service cannot apply a reload now."""


class DependencyUnavailable(Exception):
    """Something the service needs at start is unreachable or refuses it. ``str()`` is one
    line for the user: where (never a credential), why, and what to check."""


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    """``42s``, ``3m 20s``, ``2h 5m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def _register_secrets(config: Config) -> None:
    # load_config registers these too; a Config built in code (demo, tests) must not leak either.
    register(config.auth.jwt_secret.get_secret_value())
    for account in config.antbuddy:
        register(account.app_secret.get_secret_value())
        # The x-auth-app-hash header authenticates as well as the secret it is made of, and
        # an oapi error may echo it.
        register(app_hash(account.app_id, account.app_secret.get_secret_value()))
        if account.sip_password is not None:
            register(account.sip_password.get_secret_value())


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("task %s ended with an error", task.get_name())
