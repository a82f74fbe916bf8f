"""One upstream signal stream: an account's subscriptions kept alive for as long as we run.

The loop: get a token, open a connection, subscribe every binding, then serve until either the
connection dies (reconnect with jittered exponential backoff) or the token's refresh point
comes (rotate: open and subscribe a new connection with the new token, keep both for an
overlap, then close the old one). Events seen on both connections carry the same id and are
dropped downstream by the pipeline's de-duplication.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Callable

import httpx

from bridge.common.aio import first_of
from bridge.common.backoff import backoff, jittered, spread
from bridge.common.logs import Every
from bridge.config.keys import env_name
from bridge.upstream.auto import ProbeFailed, probe
from bridge.upstream.connection import (
    CallSink,
    ConnectFailed,
    Connection,
    SubscribeRefused,
)
from bridge.upstream.dialects import codec_for
from bridge.upstream.tokens import Token, TokenAuthError, TokenManager, TokenUnavailable

log = logging.getLogger("bridge.upstream")

#: Seconds between repeats of the ERROR line for credentials still refused.
REFUSED_EVERY = 900.0


class State(StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    SUBSCRIBED = "subscribed"
    BACKOFF = "backoff"
    AUTH_FAILED = "auth_failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StreamSettings:
    tenant: str
    account_id: str
    ws_url: str
    dialect: str
    bindings: tuple[str, ...]
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    auth_retry: float = 60.0
    connect_timeout: float = 10.0
    #: Seconds without a refusal after which an unacknowledged subscribe counts as accepted.
    subscribe_settle: float = 0.3
    #: Longest time the old connection is kept after a rotation (never past its token expiry).
    rotation_overlap: float = 5.0

    @property
    def name(self) -> str:
        return f"antbuddy/{self.tenant}/{self.account_id}"


Notice = Callable[[str, str, str], None]  # (stream name, kind, redacted message)


@dataclass
class StreamStatus:
    state: State = State.STARTING
    dialect: str | None = None
    since: float = field(default_factory=time.time)
    reconnects: int = 0
    rotations: int = 0
    last_error: str | None = None


class UpstreamStream:
    def __init__(
        self,
        settings: StreamSettings,
        tokens: TokenManager,
        http: httpx.AsyncClient,
        *,
        on_call: CallSink,
        on_notice: Notice,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self._http = http
        self._on_call = on_call
        self._listeners: list[CallSink] = []
        self._on_notice = on_notice
        self._rng = rng or random.Random()
        self.status = StreamStatus()
        self._connections: set[Connection] = set()
        self._dialect: str | None = None if settings.dialect == "auto" else settings.dialect
        self._reconnect = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._refused_line = Every(REFUSED_EVERY)

    @property
    def name(self) -> str:
        return self.settings.name

    def snapshot(self) -> dict[str, object]:
        token = self.tokens.current
        return {
            "name": self.name,
            "tenant": self.settings.tenant,
            "account_id": self.settings.account_id,
            "state": self.status.state.value,
            "since": round(self.status.since, 3),
            "dialect": self.status.dialect or self.settings.dialect,
            "connections": len(self._connections),
            "reconnects": self.status.reconnects,
            "rotations": self.status.rotations,
            "token_expires_at": round(token.expires_at, 3) if token else None,
            "token_state": self.tokens.state,
            "last_error": self.status.last_error,
        }

    def add_call_listener(self, listener: CallSink) -> None:
        """Let ``listener(name, payload)`` see every live call signal too, after the sink.

        A listener that raises is logged and never disturbs delivery.
        """
        self._listeners.append(listener)

    def _dispatch_call(self, name: str, payload: dict[str, Any]) -> None:
        self._on_call(name, payload)
        for listener in self._listeners:
            try:
                listener(name, payload)
            except Exception:
                log.exception("%s: call listener failed", self.name)

    def request_reconnect(self) -> None:
        """Drop the current connection and reconnect now (admin action)."""
        self._reconnect.set()

    async def wait_subscribed(self) -> None:
        """Return once the stream is subscribed upstream (at once if it is now)."""
        await self._subscribed.wait()

    def _set(self, state: State, error: str | None = None) -> None:
        if state is not self.status.state:
            self.status.state = state
            self.status.since = time.time()
            if state is State.SUBSCRIBED:
                self._subscribed.set()
            else:
                self._subscribed.clear()
        if error is not None:
            self.status.last_error = error

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        delays = backoff(s.reconnect_initial, 2.0, s.reconnect_max, self._rng)
        try:
            while True:
                try:
                    token = await self.tokens.get()
                    conn = await self._connect(token)
                except TokenAuthError as exc:
                    await self._auth_failed(exc)
                    continue
                except SubscribeRefused as exc:
                    if exc.auth:
                        # A cached token may have been revoked upstream: fetch a fresh one
                        # before concluding the credentials are bad.
                        try:
                            await self.tokens.refresh()
                        except (TokenAuthError, TokenUnavailable):
                            pass
                        await self._auth_failed(exc)
                        continue
                    await self._backoff(str(exc), next(delays))
                    continue
                except (ConnectFailed, TokenUnavailable, ProbeFailed) as exc:
                    await self._backoff(str(exc), next(delays))
                    continue
                delays = backoff(s.reconnect_initial, 2.0, s.reconnect_max, self._rng)
                self._set(State.SUBSCRIBED)
                log.info("%s: subscribed (%s, %d bindings)", self.name, self.status.dialect,
                         len(s.bindings))
                reason = await self._serve(conn, token)
                self.status.reconnects += 1
                self._set(State.CONNECTING, reason)
                log.warning("%s: connection lost (%s); reconnecting", self.name, reason)
        finally:
            await self._close_all()
            self._set(State.STOPPED)

    async def _backoff(self, error: str, delay: float) -> None:
        self._set(State.BACKOFF, error)
        log.warning("%s: %s; retrying in %.1fs", self.name, error, delay)
        if self._dialect is not None and self.settings.dialect == "auto":
            self._dialect = None  # re-probe: the server may have changed
        await asyncio.sleep(delay)

    async def _auth_failed(self, exc: TokenAuthError | SubscribeRefused) -> None:
        """Not fatal (other streams run on; /readyz tells): one ERROR line naming what to
        check, repeated at most every :data:`REFUSED_EVERY` seconds while it lasts."""
        error = str(exc)
        first = self.status.state is not State.AUTH_FAILED
        self._set(State.AUTH_FAILED, error)
        delay = jittered(self.settings.auth_retry, 0.1, self._rng)
        due = self._refused_line.due()
        if first or due:
            log.error("%s; retrying in %.0fs", refusal(self.settings, exc), delay)
        if first:
            self._on_notice(self.name, "auth_failed", error)
        await asyncio.sleep(delay)

    async def _connect(self, token: Token) -> Connection:
        s = self.settings
        if self.status.state is not State.SUBSCRIBED:
            self._set(State.CONNECTING)
        if self._dialect is None:
            self._dialect = await probe(s.ws_url, self._http, s.connect_timeout)
            log.info("%s: server speaks %s", self.name, self._dialect)
        self.status.dialect = self._dialect
        conn = Connection(codec_for(self._dialect), label=self.name, on_call=self._dispatch_call)
        self._connections.add(conn)
        try:
            await conn.open(s.ws_url, self._http, s.connect_timeout)
            await conn.subscribe(s.account_id, token.value, list(s.bindings),
                                 s.connect_timeout, s.subscribe_settle)
        except BaseException:
            await self._drop(conn)
            raise
        return conn

    async def _serve(self, conn: Connection, token: Token) -> str:
        """Serve ``conn`` and its successors until the live connection dies; return why."""
        while True:
            wait = max(0.0, token.refresh_at + self._rotation_offset(token) - time.time())
            rotate = await self._wait_dead_or(conn, wait)
            if not rotate:
                await self._drop(conn)
                return conn.closed_reason or "closed"
            try:
                # Streams sharing credentials share a token: another may have renewed it.
                new_token = await self.tokens.get()
                if new_token.value == token.value:
                    new_token = await self.tokens.refresh()
                new_conn = await self._connect(new_token)
            except (TokenAuthError, TokenUnavailable, ConnectFailed, ProbeFailed) as exc:
                # The open connection keeps receiving: upstream checks tokens on subscribe.
                # Retry the rotation shortly, and on the next failure reconnect the usual way.
                log.warning("%s: token rotation failed: %s", self.name, exc)
                self.status.last_error = str(exc)
                if isinstance(exc, TokenAuthError):
                    self._on_notice(self.name, "auth_failed", str(exc))
                token = _retry_later(token, self.settings.reconnect_max)
                continue
            self.status.rotations += 1
            self._set(State.SUBSCRIBED)
            overlap = min(self.settings.rotation_overlap, max(0.0, token.expires_at - time.time()))
            old = conn
            conn, token = new_conn, new_token
            log.info("%s: moved to a new token; closing the old connection in %.1fs",
                     self.name, overlap)
            await self._wait_dead_or(old, overlap)
            await self._drop(old)

    def _rotation_offset(self, token: Token) -> float:
        """A random delay past the refresh point, up to half the time the old connection can
        still spare (the token's remaining life less the overlap).

        Streams sharing a token reach its refresh point together; without it they would all
        reconnect upstream in the same instant. The first of them fetches the new token and
        the others move to it one by one, while the old token is still valid for each.
        """
        spare = token.expires_at - token.refresh_at - self.settings.rotation_overlap
        return spread(0.0, spare / 2, self._rng) if spare > 0 else 0.0

    async def _wait_dead_or(self, conn: Connection, seconds: float) -> bool:
        """Wait ``seconds``; True when they passed with ``conn`` alive, False if it died first.

        A reconnect request from an admin counts as the connection dying.
        """
        dead, kicked = await first_of(seconds, conn.wait_closed(), self._reconnect.wait())
        if kicked:
            self._reconnect.clear()
            conn.closed_reason = "reconnect requested"
            return False
        return not dead and conn.alive

    async def _drop(self, conn: Connection) -> None:
        self._connections.discard(conn)
        await conn.close()

    async def _close_all(self) -> None:
        for conn in list(self._connections):
            await self._drop(conn)


def refusal(s: StreamSettings, exc: TokenAuthError | SubscribeRefused) -> str:
    """What was refused, for the account block of the configuration, and what to check."""
    who = f"antbuddy[{s.tenant}] (account {s.account_id})"
    if isinstance(exc, TokenAuthError):
        status = f" (HTTP {exc.status})" if exc.status is not None else ""
        variable = f"CALLBRIDGE__ANTBUDDY__{env_name(s.tenant)}__APP_SECRET"
        return (f"{who}: credentials refused by the oapi{status}: check app_id and "
                f"app_secret ({variable})")
    return f"{who}: the websocket server refused the token ({exc}): check account_id"


def _retry_later(token: Token, delay: float) -> Token:
    """The same token with its refresh point moved ``delay`` seconds on, capped at expiry."""
    later = min(time.time() + delay, max(token.expires_at - 0.5, time.time() + 0.5))
    return replace(token, refresh_at=later)
