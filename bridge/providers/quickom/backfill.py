"""The backfill of calls the webhook missed: ``call/new`` polled, filtered by a durable seen-set.

``call/new`` takes no cursor, so the cursor is the set of call ids already emitted (the newest
``size``), saved after each poll under ``quickom:<tenant>:seen``. A restarted provider loads it
and emits only calls it has not emitted before; calls that came by webhook join the set too.
Events are submitted before the cursor is saved, so a crash in between repeats (the event id
is the same, so the broker drops it) rather than loses.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import orjson

from bridge.cluster.cursors import CursorStore
from bridge.common.logs import Every
from bridge.common.recent import RecentIds
from bridge.events.event import Event
from bridge.providers.quickom.calls import InvalidCall, call_event, epoch_seconds
from bridge.providers.quickom.client import QuickomClient

log = logging.getLogger("bridge.providers.quickom")

#: Seconds between two warnings about skipped records.
SKIP_LOG_INTERVAL = 60.0


class SeenCalls(RecentIds):
    """The newest ``size`` call ids, in arrival order, saved as the backfill cursor."""

    def merge_older(self, call_ids: Iterable[str]) -> None:
        """Add ids known from before (a saved cursor) behind the ones seen since."""
        newer = list(self)
        self._ids.clear()
        for call_id in [*call_ids, *newer]:
            self.add(call_id)

    def dump(self) -> str:
        return orjson.dumps(list(self)).decode()

    @staticmethod
    def parse(text: str | None) -> list[str]:
        if not text:
            return []
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class Backfill:
    def __init__(self, *, tenant: str, client: QuickomClient, cursors: CursorStore,
                 submit: Callable[[Event], bool], limit: int, seen: SeenCalls) -> None:
        self.tenant = tenant
        self.cursor_name = f"quickom:{tenant}:seen"
        self._client = client
        self._cursors = cursors
        self._submit = submit
        self._limit = limit
        self.seen = seen
        self._loaded = False
        #: Records refused by :func:`call_event` (each named in a rate-limited warning).
        self.skipped = 0
        self._skip_log = Every(SKIP_LOG_INTERVAL)

    async def poll(self) -> int:
        """One backfill: emit the calls not seen before, save the cursor; the number emitted.

        Raises QuickomError or BrokerError (cursor store down); nothing is lost on either.
        """
        if not self._loaded:
            self.seen.merge_older(SeenCalls.parse(await self._cursors.get(self.cursor_name)))
            self._loaded = True
        records = await self._client.new_calls(self._limit)
        emitted = 0
        # Oldest first, so subscribers see calls in the order they ended.
        for record in sorted(records, key=_end_key):
            try:
                event = call_event(record, self.tenant)
            except InvalidCall as exc:
                # One bad record must not block the others (nor the cursor) forever.
                self.skipped += 1
                if self._skip_log.due():
                    log.warning("quickom/%s: backfilled call skipped: %s (%d skipped so far)",
                                self.tenant, exc, self.skipped)
                continue
            assert event.call_id is not None
            if event.call_id in self.seen:
                continue
            self._submit(event)
            self.seen.add(event.call_id)
            emitted += 1
        if emitted and len(records) >= self._limit:
            log.warning("quickom/%s: a full page of %d new calls; older missed calls may be "
                        "beyond its reach (poll more often)", self.tenant, self._limit)
        await self._cursors.set(self.cursor_name, self.seen.dump())
        return emitted


def _end_key(record: dict[str, Any]) -> float:
    return epoch_seconds(record.get("end_time")) or 0.0
