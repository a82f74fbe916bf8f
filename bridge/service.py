"""The running bridge: broker, hub, pipeline, token managers and upstream streams, owned together.

``async with Service(config) as service:`` starts everything and, on exit, stops it in the
reverse order: upstream streams stop and their leases are released (another instance takes
them over at once), the pipeline is drained into the broker and the outage buffer flushed
within ``[server] shutdown_timeout``, clients are closed with 1012, then the broker.

Each upstream stream runs only while this instance holds its lease (:mod:`bridge.lease`); the
broker is wrapped in :class:`bridge.brokers.resilient.ResilientBroker` so a broker outage never
stops the streams nor local delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx

from bridge.brokers import Broker, BrokerError, from_url
from bridge.brokers.resilient import ResilientBroker
from bridge.config import AntBuddyAccount, Config
from bridge.cursors import CursorStore, MemoryCursors, RedisCursors
from bridge.events import Event, EventType
from bridge.hub import Hub
from bridge.lease import LeasedRunner, LeaseStore, LocalLeases
from bridge.normalize import normalize_kazoo
from bridge.pipeline import Pipeline
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.registry import build_providers
from bridge.redact import redact, register
from bridge.revocation import MemoryRevocations, RedisRevocations, Revocations
from bridge.tokens import TokenManager
from bridge.upstream.stream import State, StreamSettings, UpstreamStream

log = logging.getLogger("bridge.service")


def system_notice(tenant: str, account: str, kind: str, message: str, stream: str) -> Event:
    """A ``system.notice`` event about one upstream link, published on ``system:<tenant>``."""
    now = time.time()
    digest = hashlib.sha256(f"{tenant}|{account}|{kind}|{now!r}".encode()).hexdigest()[:26]
    occurred = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return Event(
        id=f"sys-{digest}", type=EventType.SYSTEM, provider="callbridge", tenant=tenant,
        account=account, occurred_at=occurred,
        detail={"kind": kind, "stream": stream, "message": redact(message)},
    )


class Service:
    def __init__(self, config: Config, *, broker: Broker | None = None) -> None:
        self.config = config
        _register_secrets(config)
        local = config.broker.url.startswith("memory:")
        inner = broker or from_url(
            config.broker.url,
            **_broker_options(config),
            history_length=config.broker.history_length,
            dedup_window=config.broker.dedup_window,
        )
        self.broker = ResilientBroker(inner, buffer_events=config.broker.buffer_events)
        self.leases: LeaseStore | LocalLeases = (
            LocalLeases(config.lease.instance_id, config.lease.ttl) if local
            else LeaseStore(config.broker.url, prefix=config.broker.prefix,
                            ttl=config.lease.ttl, instance_id=config.lease.instance_id))
        self.revocations: Revocations = (
            MemoryRevocations() if local
            else RedisRevocations(config.broker.url, prefix=config.broker.prefix))
        self.cursors: CursorStore = (
            MemoryCursors() if local
            else RedisCursors(config.broker.url, prefix=config.broker.prefix))
        self.providers: list[Provider] = []
        self.hub = Hub(self.broker, client_queue_bytes=config.server.client_queue_bytes)
        self.pipeline = Pipeline(self.broker)
        self.streams: list[UpstreamStream] = []
        #: One per stream, same order as :attr:`streams`.
        self.runners: list[LeasedRunner] = []
        self._releasing: asyncio.Task[None] | None = None
        self._tokens: dict[tuple[str, str, str | None], TokenManager] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = AsyncExitStack()
        self.started_at = time.time()

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
        self._http = http
        self.broker.set_handler(self.hub.on_message)
        await self.broker.start()
        self._stack.push_async_callback(self.broker.close)
        self._stack.push_async_callback(self.leases.close)
        await self.revocations.start()
        self._stack.push_async_callback(self.revocations.close)
        self._spawn(self.pipeline.run(), "pipeline")
        for account in self.config.antbuddy:
            self._add_stream(account)
        self._stack.push_async_callback(self.cursors.close)
        context = ProviderContext(submit=self.pipeline.submit, http=http, cursors=self.cursors)
        self.providers = build_providers(self.config, context, streams=self.streams)
        for provider in self.providers:
            self._spawn(provider.run(), f"provider {provider.name}")
        log.info("callbridge %s started: broker %s, %d upstream stream(s)",
                 self.leases.instance_id, self.broker.display_url, len(self.streams))

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _token_manager(self, account: AntBuddyAccount) -> TokenManager:
        # Streams sharing credentials share one token (and one refresh schedule).
        key = (account.oapi_url, account.app_id, account.sip_user)
        manager = self._tokens.get(key)
        if manager is None:
            up = self.config.upstream
            manager = self._tokens[key] = TokenManager(
                oapi_url=account.oapi_url, app_id=account.app_id,
                app_secret=account.app_secret.get_secret_value(), http=self._http,
                sip_user=account.sip_user,
                sip_password=account.sip_password.get_secret_value()
                if account.sip_password else None,
                margin=up.refresh_margin, jitter=up.refresh_jitter,
                request_timeout=up.request_timeout, default_lifetime=up.default_lifetime,
                retry_initial=up.reconnect_initial, retry_max=up.reconnect_max,
                unavailable_after=up.token_unavailable_after,
            )
        return manager

    def _add_stream(self, account: AntBuddyAccount) -> None:
        up = self.config.upstream
        settings = StreamSettings(
            tenant=account.tenant, account_id=account.account_id, ws_url=account.ws_url,
            dialect=account.dialect, bindings=tuple(account.bindings),
            reconnect_initial=up.reconnect_initial, reconnect_max=up.reconnect_max,
            auth_retry=up.auth_retry, connect_timeout=up.connect_timeout,
        )
        tenant, acct, raw = account.tenant, account.account_id, account.raw_payload
        pipeline = self.pipeline

        def on_call(name: str, payload: dict) -> None:
            try:
                event = normalize_kazoo(name, payload, tenant=tenant, account=acct,
                                        include_raw=raw, received_at=time.time())
            except ValueError as exc:
                log.warning("%s: event %r not normalized: %s", settings.name, name, exc)
                return
            pipeline.submit(event)

        def on_notice(stream: str, kind: str, message: str) -> None:
            pipeline.submit(system_notice(tenant, acct, kind, message, stream))

        stream = UpstreamStream(settings, self._token_manager(account), self._http,
                                on_call=on_call, on_notice=on_notice)
        runner = LeasedRunner(self.leases, settings.name, stream.run)
        self.streams.append(stream)
        self.runners.append(runner)
        self._spawn(runner.run(), f"lease {settings.name}")

    def begin_shutdown(self) -> None:
        """Stop the streams and release their leases now, without waiting (signal handlers)."""
        if self._releasing is None:
            self._releasing = asyncio.create_task(self._release_streams(), name="release")

    async def _release_streams(self) -> None:
        await _cancel([t for t in self._tasks if t.get_name().startswith("lease ")])
        await asyncio.gather(*(runner.release() for runner in self.runners))

    async def stop(self, drain_timeout: float | None = None) -> None:
        timeout = self.config.server.shutdown_timeout if drain_timeout is None else drain_timeout
        deadline = time.monotonic() + timeout
        self.begin_shutdown()
        assert self._releasing is not None
        await self._releasing
        if not await self.pipeline.drain(max(0.0, deadline - time.monotonic())):
            log.error("shutdown: %d event(s) not published within %.0fs",
                      self.pipeline.pending, timeout)
        if not await self.broker.flush(max(0.0, deadline - time.monotonic())):
            log.error("shutdown: %d buffered event(s) not published within %.0fs",
                      self.broker.health()["buffered"], timeout)
        await self.hub.close_all(1012)
        await _cancel(self._tasks)
        self._tasks.clear()
        await self._stack.aclose()

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
        body = {
            "ready": ready,
            "instance_id": self.leases.instance_id,
            "broker": {**health, "url": self.broker.display_url, "ok": broker_ok,
                       "error": broker_error},
            "streams": streams,
            "pipeline": {**self.pipeline.counts, "pending": self.pipeline.pending},
            "clients": self.hub.stats(),
            "providers": [p.snapshot() for p in self.providers],
        }
        return ready, body


def _broker_options(config: Config) -> dict[str, Any]:
    """Backend-specific constructor options from ``[broker]``."""
    url = config.broker.url
    if url.startswith("memory:"):
        return {}
    options: dict[str, Any] = {"prefix": config.broker.prefix}
    if not url.startswith("redis-cluster:"):
        # The cluster backend watches each node's link instead of probing.
        options["probe_interval"] = config.broker.probe_interval
    return options


def _register_secrets(config: Config) -> None:
    # load_config registers these too; a Config built in code (demo, tests) must not leak either.
    register(config.auth.jwt_secret.get_secret_value())
    for account in config.antbuddy:
        register(account.app_secret.get_secret_value())
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
