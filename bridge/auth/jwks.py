"""The keys published at a JWKS URL, kept as a local copy that token checks read without I/O.

:class:`Jwks` fetches the document when started, every ``refresh`` seconds after that, and when
a token names a ``kid`` the copy lacks (:meth:`Jwks.refresh_unknown`, at most once per
``min_refresh`` seconds, however many tokens ask). A fetch that fails keeps the keys of the last
good one; the failure is counted and shown (:meth:`Jwks.snapshot`). The one task and the one
HTTP client are owned here: :meth:`start` and :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from bridge.auth.keys import PublicKey, parse_jwks
from bridge.common.redact import redact
from bridge.config.model import safe_url

log = logging.getLogger(__name__)

#: The largest JWKS document read (a provider's has a few keys: a few KiB).
MAX_BYTES = 1 << 20
#: Seconds between attempts while fetches fail (never more than ``refresh``).
RETRY_AFTER_FAILURE = 10.0


class JwksError(Exception):
    """A fetch failed; the message names the URL (credentials masked) and the cause."""


class Jwks:
    def __init__(self, url: str, *, refresh: float, min_refresh: float, timeout: float) -> None:
        self.url = url
        self.refresh = refresh
        self.min_refresh = min_refresh
        self.timeout = timeout
        #: The keys of the last good fetch (none before the first).
        self.keys: tuple[PublicKey, ...] = ()
        #: Whether a fetch ever succeeded: without one there is no key to decide with.
        self.fetched = False
        #: Whether the latest fetch failed (the keys are then those of an earlier one).
        self.failing = False
        self.failures = 0
        self.last_error: str | None = None
        #: Unix time of the last good fetch.
        self.last_success: float | None = None
        self._last_attempt = -float("inf")  # monotonic
        self._inflight: asyncio.Task[None] | None = None
        self._loop: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch once (a failure is kept, not raised), then keep fetching on schedule."""
        self._http = httpx.AsyncClient(timeout=self.timeout, trust_env=False,
                                       headers={"user-agent": "callbridge"})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout * 2):
                await asyncio.shield(self._fetch_now())
        self._loop = asyncio.create_task(self._schedule(), name="jwks refresh")

    async def close(self) -> None:
        for task in (self._loop, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._http is not None:
            await self._http.aclose()

    # -- refreshing ----------------------------------------------------------------------------

    async def refresh_unknown(self) -> None:
        """Fetch again for a token whose ``kid`` is not in :attr:`keys`, unless a fetch began
        less than ``min_refresh`` seconds ago; waits for the fetch in flight, if any, and at
        most ``timeout`` seconds (the caller's wait ends; the fetch goes on)."""
        if self._inflight is None and time.monotonic() - self._last_attempt < self.min_refresh:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(self._fetch_now())

    def _fetch_now(self) -> asyncio.Task[None]:
        """The fetch in flight, or a new one: concurrent callers share one request."""
        if self._inflight is None:
            self._last_attempt = time.monotonic()
            self._inflight = asyncio.create_task(self._fetch(), name="jwks fetch")
            self._inflight.add_done_callback(self._fetched)
        return self._inflight

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _schedule(self) -> None:
        while True:
            delay = self.refresh if not self.failing else min(self.refresh, RETRY_AFTER_FAILURE)
            await asyncio.sleep(delay)
            await asyncio.shield(self._fetch_now())

    async def _fetch(self) -> None:
        try:
            keys = await self._get()
        except Exception as exc:  # every failure keeps the keys and is reported, none ends the task
            self.failures += 1
            self.last_error = str(exc) if isinstance(exc, JwksError) else \
                f"JWKS {safe_url(self.url)} failed: {type(exc).__name__}"
            if not self.failing:
                log.warning("%s; %s", self.last_error,
                            "keeping the keys fetched before" if self.fetched else
                            "tokens of the identity provider are refused until it answers")
            self.failing = True
            return
        if self.failing:
            log.info("JWKS %s answers again: %d key(s)", safe_url(self.url), len(keys))
        self.keys, self.fetched, self.failing = keys, True, False
        self.last_success = time.time()

    async def _get(self) -> tuple[PublicKey, ...]:
        assert self._http is not None, "start() first"
        where = f"JWKS {safe_url(self.url)}"
        try:
            async with self._http.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise JwksError(f"{where} answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise JwksError(f"{where} sent more than {MAX_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise JwksError(f"{where} is unreachable: "
                            f"{redact(str(exc)) or type(exc).__name__}") from None
        try:
            return parse_jwks(bytes(body))
        except ValueError as exc:
            raise JwksError(f"{where}: {exc}") from None

    # -- reporting -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """What ``/readyz`` shows: the URL, the keys held, the last success and failure."""
        age = None if self.last_success is None else round(time.time() - self.last_success, 3)
        return {"url": safe_url(self.url), "keys": len(self.keys), "fetched": self.fetched,
                "failing": self.failing, "failures": self.failures,
                "last_error": self.last_error, "last_success_age": age}
