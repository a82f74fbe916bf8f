"""AntBuddy's signal path inside one instance: one upstream stream per ``[[antbuddy]]`` block,
its frames normalized and submitted to the pipeline.

Streams sharing credentials share one :class:`~bridge.upstream.tokens.TokenManager` (one token,
one refresh schedule); each stream runs under its lease
(:class:`~bridge.cluster.leases.LeasedRunner`). Link trouble reaches subscribers as a
``system.notice`` event on ``system:<tenant>``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import httpx

from bridge.cluster.leases import LeasedRunner, LeaseStore, LocalLeases
from bridge.cluster.notices import LeaseNotices, LocalNotices
from bridge.common.redact import redact
from bridge.config.model import AntBuddyAccount, UpstreamConfig
from bridge.core.pipeline import Pipeline
from bridge.events.event import Event, EventType
from bridge.upstream.normalize import normalize_kazoo
from bridge.upstream.stream import StreamSettings, UpstreamStream
from bridge.upstream.tokens import TokenManager

log = logging.getLogger("bridge.core.service")


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


class StreamFactory:
    """Builds the stream and lease runner of one account block; keeps the token managers."""

    def __init__(self, upstream: UpstreamConfig, http: httpx.AsyncClient, pipeline: Pipeline,
                 leases: LeaseStore | LocalLeases, notices: LeaseNotices | LocalNotices) -> None:
        self._up = upstream
        self._http = http
        self._pipeline = pipeline
        self._leases = leases
        self._notices = notices
        self._tokens: dict[tuple[str, str, str | None, str], TokenManager] = {}

    def token_manager(self, account: AntBuddyAccount) -> TokenManager:
        # Streams sharing credentials share one token (and one refresh schedule). The digest
        # keeps a reloaded block with a new secret off the manager holding the old one.
        key = (account.oapi_url, account.app_id, account.sip_user, _credentials_digest(account))
        manager = self._tokens.get(key)
        if manager is None:
            up = self._up
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

    def keep_tokens_of(self, streams: list[UpstreamStream]) -> None:
        """Forget the token managers no stream in ``streams`` uses any more."""
        in_use = {id(s.tokens) for s in streams}
        self._tokens = {k: m for k, m in self._tokens.items() if id(m) in in_use}

    def build(self, account: AntBuddyAccount) -> tuple[UpstreamStream, LeasedRunner]:
        up = self._up
        settings = StreamSettings(
            tenant=account.tenant, account_id=account.account_id, ws_url=account.ws_url,
            dialect=account.dialect, bindings=tuple(account.bindings),
            reconnect_initial=up.reconnect_initial, reconnect_max=up.reconnect_max,
            auth_retry=up.auth_retry, connect_timeout=up.connect_timeout,
        )
        tenant, acct, raw = account.tenant, account.account_id, account.raw_payload
        pipeline = self._pipeline

        def on_call(name: str, payload: dict[str, Any]) -> None:
            try:
                event = normalize_kazoo(name, payload, tenant=tenant, account=acct,
                                        include_raw=raw, received_at=time.time())
            except ValueError as exc:
                log.warning("%s: event %r not normalized: %s", settings.name, name, exc)
                return
            pipeline.submit(event)

        def on_notice(stream: str, kind: str, message: str) -> None:
            pipeline.submit(system_notice(tenant, acct, kind, message, stream))

        stream = UpstreamStream(settings, self.token_manager(account), self._http,
                                on_call=on_call, on_notice=on_notice)
        return stream, LeasedRunner(self._leases, settings.name, stream.run,
                                    until_live=stream.wait_subscribed,
                                    notices=self._notices)


def _credentials_digest(account: AntBuddyAccount) -> str:
    secret = account.app_secret.get_secret_value()
    password = account.sip_password.get_secret_value() if account.sip_password else ""
    return hashlib.sha256(f"{secret}\0{password}".encode()).hexdigest()
