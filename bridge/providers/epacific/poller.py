"""The two ePacific pollers: CDRs (``cdrs/json``) and registered extensions (``ext_reg/json``).

They only move data and keep time; the rules live in :mod:`.protocol` and :mod:`.cursor`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

import orjson

from bridge.brokers.base import BrokerError
from bridge.cluster.cursors import CursorStore
from bridge.common.logs import Every
from bridge.common.redact import redact
from bridge.events.event import Event
from bridge.providers.epacific.client import EPacificClient
from bridge.providers.epacific.cursor import CdrCursor
from bridge.providers.epacific.protocol import (
    EPacificError,
    cdr_event,
    cdr_key,
    iso_ms,
    online_entries,
    presence_events,
    request_start,
    window_bounds,
)

log = logging.getLogger("bridge.providers.epacific")

#: Safety bound on pages read in one poll (the provider's paging could loop).
MAX_PAGES = 10_000
#: Seconds between two warnings about skipped records.
SKIP_LOG_INTERVAL = 60.0
#: Longest wait between polls while a poller keeps failing.
MAX_RETRY_DELAY = 300.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Status:
    """What /readyz shows about one poller."""

    def __init__(self) -> None:
        self.last_ok: str | None = None
        self.last_error: str | None = None
        self.failures = 0

    def ok(self) -> None:
        self.last_ok, self.last_error, self.failures = iso_ms(utcnow()), None, 0

    def failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        error = redact(str(exc))[:300]
        # a new reason, or the 1st, 2nd, 4th, 8th... failure in a row: no log flood
        if error != self.last_error or self.failures & (self.failures - 1) == 0:
            log.warning("%s failed (%d in a row): %s", what, self.failures, error)
        self.last_error = error

    def delay(self, interval: float) -> float:
        """Seconds until the next poll: the interval, doubled per failure in a row (<= 5 min)."""
        if not self.failures:
            return interval
        return min(interval * (1 << min(self.failures, 16)), max(interval, MAX_RETRY_DELAY))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.last_error is None, "last_ok": self.last_ok,
                "last_error": self.last_error, "failures": self.failures}


class CdrPoller:
    """Reads every CDR once: pages through ``[from, now]``, emits unseen ones, saves the cursor.

    ``settle`` is how long after its start a CDR may still appear (calls are reported once they
    end); each poll re-reads that far behind ``now``.
    """

    def __init__(self, *, tenant: str, client: EPacificClient, cursors: CursorStore,
                 submit: Callable[[Event], bool], tz: ZoneInfo, date_format: str,
                 limit: int, lookback: float, settle: float,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.tenant, self._client, self._cursors, self._submit = tenant, client, cursors, submit
        self._tz, self._fmt, self._limit = tz, date_format, limit
        self._lookback, self._settle, self.clock = lookback, settle, clock
        self.cursor_name = f"epacific:{tenant}:cdr"
        self.status = Status()
        self.emitted = 0
        self.skipped = 0
        self._skip_log = Every(SKIP_LOG_INTERVAL)

    async def _load(self, now: datetime) -> CdrCursor:
        text = await self._cursors.get(self.cursor_name)
        if text is None:
            return CdrCursor(now - timedelta(seconds=self._lookback))
        return CdrCursor.decode(text)

    async def poll(self) -> int:
        """One full pass; the number of new events. Raises EPacificError / BrokerError."""
        now = self.clock()
        cursor = await self._load(now)
        date_from, date_to = window_bounds(cursor.start, now, self._tz, self._fmt)
        new = 0
        page = 1
        while page <= MAX_PAGES:
            records, more = await self._client.cdr_page(date_from, date_to, page, self._limit)
            for record in records:
                new += self._emit(cursor, record)
            # Saved once the page's events are in the pipeline: a restart resumes after them.
            await self._cursors.set(self.cursor_name, cursor.encode())
            if not more:
                break
            page += 1
        next_start = now - timedelta(seconds=self._settle)
        cursor.advance(next_start, request_start(next_start, self._tz))
        await self._cursors.set(self.cursor_name, cursor.encode())
        self.status.ok()
        return new

    def _emit(self, cursor: CdrCursor, record: dict[str, Any]) -> int:
        try:
            key = cdr_key(record)
        except ValueError as exc:
            self._skip(None, exc)
            return 0
        if key in cursor.seen:
            return 0
        try:
            event, start = cdr_event(self.tenant, record, self._tz)
        except ValueError as exc:
            self._skip(key, exc)
            return 0
        self._submit(event)
        cursor.remember(key, start)
        self.emitted += 1
        return 1


    def _skip(self, key: str | None, exc: ValueError) -> None:
        """Count a refused CDR; warn at most every SKIP_LOG_INTERVAL seconds. The warning
        names the field (the message of :func:`cdr_event`), never a field's value."""
        self.skipped += 1
        if self._skip_log.due():
            log.warning("epacific/%s: CDR %sskipped: %s (%d skipped so far)", self.tenant,
                        f"{key[:64]} " if key else "", exc, self.skipped)


class PresencePoller:
    """Turns changes of the registered set into ``presence.changed`` events.

    The last set is saved in the cursor store: a restart reports only what changed meanwhile;
    the very first poll (nothing saved) reports every online extension as online.
    """

    def __init__(self, *, tenant: str, client: EPacificClient, cursors: CursorStore,
                 submit: Callable[[Event], bool],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.tenant, self._client, self._cursors, self._submit = tenant, client, cursors, submit
        self.clock = clock
        self.cursor_name = f"epacific:{tenant}:presence"
        self.status = Status()
        self.online: set[str] | None = None
        #: ext_reg entries refused (a malformed extension name); the rest are used.
        self.skipped = 0
        self._skip_log = Every(SKIP_LOG_INTERVAL)

    async def poll(self) -> list[Event]:
        answer = await self._client.online()
        current, problems = online_entries(answer)
        if problems:
            self.skipped += len(problems)
            if self._skip_log.due():
                log.warning("epacific/%s: ext_reg entries skipped: %s (%d skipped so far)",
                            self.tenant, "; ".join(problems[:5]), self.skipped)
        before = self.online
        if before is None:
            saved = await self._cursors.get(self.cursor_name)
            before = set(orjson.loads(saved)) if saved is not None else None
        events = presence_events(self.tenant, before, current, self.clock())
        for event in events:
            self._submit(event)
        if events or before is None or self.online is None:
            await self._cursors.set(self.cursor_name, orjson.dumps(sorted(current)).decode())
        self.online = current
        self.status.ok()
        return events


async def guarded(what: str, status: Status, poll: Callable[[], Any]) -> None:
    """Run one poll, turning its failure into status and a (redacted) log line."""
    started = time.monotonic()
    try:
        await poll()
    except (EPacificError, BrokerError, ValueError) as exc:
        status.failed(what, exc)
    else:
        log.debug("%s done in %.2fs", what, time.monotonic() - started)
