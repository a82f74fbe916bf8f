"""The AntBuddy auth token: fetched from the oapi, cached, refreshed before it expires.

One :class:`TokenManager` per set of credentials. :meth:`TokenManager.get` is cheap while the
cached token is fresh; past its refresh point it fetches a new one. Concurrent callers share one
request. Transient failures (timeouts, connection errors, 408, 429, 5xx) are retried with
jittered backoff for as long as the current token is valid, then for ``unavailable_after``
seconds more, then :class:`TokenUnavailable` is raised. Refused credentials raise
:class:`TokenAuthError` at once: the caller decides when to try again. No secret or token ever
appears in an exception or a log line.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from bridge.common.backoff import backoff, spread
from bridge.common.redact import redact, register
from bridge.upstream.expiry import parse_expire

log = logging.getLogger("bridge.upstream.tokens")

AUTH_TOKEN_PATH = "/oapi/v1/voice/auth_token"
_TRANSIENT_4XX = frozenset({408, 425, 429})
_MAX_DETAIL = 200
# A 4xx other than 401/403 counts as refused credentials only when its text says so; a bare
# "auth" would also match the endpoint's own path echoed in a 404 page.
_AUTH_WORDS = re.compile(r"(?i)unauthori[sz]|authenticat|credential|forbidden|app.?hash|"
                         r"app.?id|app.?secret|signature|invalid.?token")


@dataclass(frozen=True)
class Token:
    """A token and its schedule, in wall-clock Unix seconds. ``rule`` tells how ``expire``
    was read (see :mod:`bridge.upstream.expiry`). ``expires_at <= fetched_at`` means the server sent
    an expiry already past."""

    value: str
    fetched_at: float
    expires_at: float
    refresh_at: float
    rule: str

    def __repr__(self) -> str:
        return (f"Token(value='[redacted]', fetched_at={self.fetched_at:.3f}, "
                f"expires_at={self.expires_at:.3f}, refresh_at={self.refresh_at:.3f}, "
                f"rule={self.rule!r})")


class TokenAuthError(Exception):
    """The oapi refused the credentials (401/403, or a 4xx naming authentication) with HTTP
    ``status``."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenUnavailable(Exception):
    """No valid token: transient failures outlasted the current token, or the answer was
    unusable."""


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""


def app_hash(app_id: str, app_secret: str) -> str:
    """``x-auth-app-hash``: lowercase hex sha256 of app id + app secret."""
    return hashlib.sha256((app_id + app_secret).encode()).hexdigest()


def refresh_point(fetched_at: float, expires_at: float, *, margin: float, jitter: float,
                  rng: random.Random, first: bool = False) -> float:
    """When to refresh: ``min(margin, lifetime/4)`` plus up to ``jitter * lifetime`` before
    expiry (never before ``fetched_at``), so many managers spread their refreshes out.

    ``first``: the manager's first token. Managers started together (a process start) fetch
    together, and a jitter of a fraction of the lifetime would keep their refreshes bunched
    for good; their first refresh is drawn from the whole second half of the lifetime instead,
    after which each manager keeps its own phase.
    """
    lifetime = max(0.0, expires_at - fetched_at)
    least = min(margin, lifetime / 4)
    if first:
        lead = spread(least, max(least + jitter * lifetime, lifetime / 2), rng)
    else:
        lead = least + spread(0.0, jitter * lifetime, rng)
    return max(fetched_at, expires_at - lead)


class TokenManager:
    """Fetches and caches the auth token of one app (and optional SIP user)."""

    def __init__(
        self,
        *,
        oapi_url: str,
        app_id: str,
        app_secret: str,
        http: httpx.AsyncClient,
        sip_user: str | None = None,
        sip_password: str | None = None,
        margin: float = 60.0,
        jitter: float = 0.1,
        request_timeout: float = 10.0,
        default_lifetime: float = 3600.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        unavailable_after: float = 30.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        register(app_secret)
        register(sip_password)
        self._url = oapi_url.rstrip("/") + AUTH_TOKEN_PATH
        self._headers = {"x-auth-app-id": app_id, "x-auth-app-hash": app_hash(app_id, app_secret)}
        self._body: dict[str, str] = (
            {"sipUser": sip_user, "sipPassword": sip_password}
            if sip_user is not None and sip_password is not None else {}
        )
        self._http = http
        self._margin, self._jitter = margin, jitter
        self._request_timeout = request_timeout
        self._default_lifetime = default_lifetime
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._unavailable_after = unavailable_after
        self._clock = clock
        self._rng = rng or random.Random()
        self._current: Token | None = None
        self._lock = asyncio.Lock()
        self._attempts = 0  # completed refreshes, successful or not
        #: Tokens fetched, and refreshes that ended in failure (for metrics).
        self.fetched = 0
        self.failed = 0
        self._outcome: Token | Exception | None = None
        self.state = "idle"  # idle | ok | refreshing | auth_failed | unavailable
        self.last_error: str | None = None
        self.name = f"{app_id}@{httpx.URL(oapi_url).host}"

    def __repr__(self) -> str:
        return f"TokenManager({self.name!r}, state={self.state!r})"

    @property
    def current(self) -> Token | None:
        """The last token fetched, even if expired; None before the first success."""
        return self._current

    async def get(self) -> Token:
        """The current token while before its refresh point, else :meth:`refresh`."""
        token = self._current
        if token is not None and self._clock() < token.refresh_at:
            return token
        return await self.refresh()

    async def refresh(self) -> Token:
        """Fetch a new token. Callers arriving while a fetch is running get its outcome."""
        seen = self._attempts
        async with self._lock:
            if self._attempts != seen:  # another caller fetched while we waited
                outcome = self._outcome
                if isinstance(outcome, Token):
                    return outcome
                assert outcome is not None
                raise copy.copy(outcome)  # the same failure, with a traceback of its own
            prior = self.state
            try:
                token = await self._fetch_with_retries()
            except (TokenAuthError, TokenUnavailable) as exc:
                self._finish(exc)
                raise
            except asyncio.CancelledError:
                self.state = prior
                raise
            self._finish(token)
            return token

    def _finish(self, outcome: Token | Exception) -> None:
        self._attempts += 1
        self._outcome = outcome
        if isinstance(outcome, Token):
            self.fetched += 1
            self._current, self.state, self.last_error = outcome, "ok", None
        else:
            self.failed += 1
            self.state = "auth_failed" if isinstance(outcome, TokenAuthError) else "unavailable"
            self.last_error = str(outcome)

    async def _fetch_with_retries(self) -> Token:
        self.state = "refreshing"
        valid_until = self._current.expires_at if self._current else 0.0
        give_up_at = max(self._clock(), valid_until) + self._unavailable_after
        delays = backoff(self._retry_initial, 2.0, self._retry_max, self._rng)
        while True:
            try:
                return await self._fetch_once()
            except _Transient as exc:
                self.last_error = str(exc)
                remaining = give_up_at - self._clock()
                if remaining <= 0:
                    log.error("%s: no token: %s", self.name, exc)
                    raise TokenUnavailable(f"auth_token unavailable: {exc}") from None
                delay = min(next(delays), remaining)
                log.warning("%s: auth_token attempt failed: %s; retrying in %.2fs",
                            self.name, exc, delay)
                await asyncio.sleep(delay)

    async def _fetch_once(self) -> Token:
        try:
            async with asyncio.timeout(self._request_timeout):
                response = await self._http.post(
                    self._url, headers=self._headers, json=self._body,
                    timeout=self._request_timeout,
                )
        except (TimeoutError, httpx.TimeoutException):
            raise _Transient(f"timed out after {self._request_timeout:g}s") from None
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {redact(str(exc))}"[:_MAX_DETAIL]) from None
        status = response.status_code
        if status == 200:
            return self._parse(response)
        detail = redact(response.text.strip())[:_MAX_DETAIL]
        if status >= 500 or status in _TRANSIENT_4XX:
            raise _Transient(f"HTTP {status}: {detail}")
        if status in (401, 403) or _AUTH_WORDS.search(detail):
            # Each stream using these credentials says so at ERROR, naming its configuration.
            log.debug("%s: credentials refused: HTTP %d: %s", self.name, status, detail)
            raise TokenAuthError(f"auth_token refused: HTTP {status}: {detail}", status)
        raise TokenUnavailable(f"auth_token request rejected: HTTP {status}: {detail}")

    def _parse(self, response: httpx.Response) -> Token:
        now = self._clock()
        try:
            body: Any = response.json()
        except ValueError:
            raise TokenUnavailable("auth_token answer is not JSON") from None
        if isinstance(body, dict) and isinstance(body.get("data"), dict) and "value" not in body:
            body = body["data"]
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise TokenUnavailable("auth_token answer has no string 'value'")
        register(value)
        expires_at, rule = parse_expire(
            body.get("expire"), now=now, default_lifetime=self._default_lifetime
        )
        refresh_at = refresh_point(now, expires_at, margin=self._margin, jitter=self._jitter,
                                   rng=self._rng, first=self.fetched == 0)
        if expires_at <= now:
            log.warning("%s: token arrived already expired (expire read as %s); clock skew?",
                        self.name, rule)
        else:
            log.info("%s: token fetched; expires in %.0fs (%s), refresh in %.0fs",
                     self.name, expires_at - now, rule, refresh_at - now)
        return Token(value, now, expires_at, refresh_at, rule)
