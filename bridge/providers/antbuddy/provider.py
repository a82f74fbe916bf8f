"""AntBuddy's REST side for one ``[[antbuddy]]`` block: click-to-call, recordings, gap filling.

:meth:`AntBuddyRest.run` looks at the account's upstream stream every ``poll_interval`` seconds;
after an outage it reads the call history of the outage window and submits ``call.completed``
for every record that no live call end matches (see :mod:`bridge.providers.antbuddy.gaps`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Sequence

from bridge.api.endpoints import Endpoint
from bridge.common.backoff import backoff
from bridge.common.logs import Every
from bridge.providers.antbuddy import rest
from bridge.providers.antbuddy.client import OapiClient, OapiError
from bridge.providers.antbuddy.gaps import LiveLedger, OutageTracker, Window
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.routes import Route, bind
from bridge.upstream.stream import State

log = logging.getLogger("bridge.providers.antbuddy")

MAX_PENDING = 16  # outage windows waiting to be filled; older ones merge into the newest
#: Seconds between two warnings about skipped history records.
SKIP_LOG_INTERVAL = 60.0


class AntBuddyRest(Provider):
    def __init__(self, account: Any, context: ProviderContext, *, stream: Any = None,
                 poll_interval: float = 2.0, margin: float = 60.0, fill_delay: float = 2.0,
                 retries: int = 5, date_format: str = "unix",
                 clock: Callable[[], float] = time.time,
                 routes: Sequence[Route[AntBuddyRest]] = ()) -> None:
        """``routes``: the tenant's API routes (:data:`.api.ROUTES`, given by the package's
        ``create``), served when this provider is its tenant's ``endpoints_owner``."""
        self.account = account
        self.tenant: str = account.tenant
        self.account_id: str = account.account_id
        self.name = f"antbuddy-rest/{self.tenant}/{self.account_id}"
        self.context = context
        self.client = OapiClient(context.http, base_url=account.oapi_url, app_id=account.app_id,
                                 app_secret=account.app_secret.get_secret_value(),
                                 date_format=date_format)
        self.stream = stream
        self.poll_interval = poll_interval
        self.fill_delay = fill_delay
        self.retries = retries
        self.clock = clock
        self.tracker = OutageTracker(margin)
        self.ledger = LiveLedger()
        self.pending: list[Window] = []
        self.counts = {"outages": 0, "fills": 0, "fill_errors": 0, "records": 0,
                       "matched_live": 0, "emitted": 0, "skipped": 0}
        self._skip_log = Every(SKIP_LOG_INTERVAL)
        self.last_error: str | None = None
        #: Every provider of the service; only the first (``endpoints_owner``) declares routes.
        self.directory: list[AntBuddyRest] = [self]
        self.endpoints_owner = True
        self.routes = routes

    # -- API ----------------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return bind(self.routes, self, self.tenant) if self.endpoints_owner else []

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.last_error is None, "stream": bool(self.stream),
                "pending_windows": len(self.pending), **self.counts,
                "last_error": self.last_error}

    # -- gap filling --------------------------------------------------------------------------

    async def run(self) -> None:
        if self.stream is None:
            await asyncio.Event().wait()
        while True:
            status = self.stream.status
            window = self.tracker.observe(self.clock(), status.state is State.SUBSCRIBED,
                                          status.reconnects)
            if window is not None:
                self.counts["outages"] += 1
                self._queue(window)
            if self.pending and self.stream.status.state is State.SUBSCRIBED:
                await asyncio.sleep(self.fill_delay)
                await self._fill_pending()
            await asyncio.sleep(self.poll_interval)

    def _queue(self, window: Window) -> None:
        self.pending.append(window)
        if len(self.pending) > MAX_PENDING:
            first, second = self.pending.pop(0), self.pending.pop(0)
            self.pending.insert(0, Window(min(first.start, second.start),
                                          max(first.end, second.end)))

    async def _fill_pending(self) -> None:
        delays, attempts = backoff(1.0, 2.0, 30.0), 0
        while self.pending:
            window = self.pending[0]
            try:
                await self.fill(window.start, window.end)
            except OapiError as exc:
                self.counts["fill_errors"] += 1
                self.last_error = str(exc)
                attempts += 1
                if attempts >= self.retries:
                    log.error("%s: giving up on history %d..%d: %s", self.name, window.start,
                              window.end, exc)
                    self.pending.pop(0)
                    delays, attempts = backoff(1.0, 2.0, 30.0), 0
                    continue
                log.warning("%s: history fetch failed, retrying: %s", self.name, exc)
                await asyncio.sleep(next(delays))
                continue
            self.pending.pop(0)
            self.last_error = None

    def _skip(self, exc: ValueError) -> None:
        """Count a refused history record; warn at most every SKIP_LOG_INTERVAL seconds,
        naming the field (never its value). The other records of the page are used."""
        self.counts["skipped"] += 1
        if self._skip_log.due():
            log.warning("%s: history record skipped: %s (%d skipped so far)", self.name, exc,
                        self.counts["skipped"])

    async def fill(self, start: int, end: int) -> int:
        """Submit ``call.completed`` for every record of ``[start, end]`` not seen live;
        returns how many were submitted (duplicates of earlier fills are dropped by id)."""
        self.counts["fills"] += 1
        emitted = 0
        async for page in self.client.histories(start, end):
            for raw in page:
                try:
                    record = rest.parse_record(raw)
                except ValueError as exc:
                    self._skip(exc)
                    continue
                self.counts["records"] += 1
                if self.ledger.seen(record):
                    self.counts["matched_live"] += 1
                    continue
                event = rest.record_event(record, tenant=self.tenant, account=self.account_id,
                                          app_id=self.account.app_id)
                if self.context.submit(event):
                    emitted += 1
        self.counts["emitted"] += emitted
        log.info("%s: history %d..%d filled with %d call(s)", self.name, start, end, emitted)
        return emitted
