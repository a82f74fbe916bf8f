"""Live state that cannot go stale: the task that closes legs whose end never came.

:class:`Closer` runs two rules of :mod:`bridge.core.closing`, each closing a leg by submitting
a synthetic ``call.ended`` to the pipeline (published, applied to the state and sent to
clients like any other event):

- every ``sweep_interval`` seconds, the legs of each known tenant's ``calls:<tenant>`` state
  older than ``max_call_age`` (0: never);
- after each published ``call.completed`` (:meth:`Closer.completed`, the pipeline's
  ``on_published``), the legs of the call it reports.

Every instance runs it; their closing events share ids, so a leg is closed once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from bridge.brokers.base import Broker, BrokerError
from bridge.calls.change import Record
from bridge.common.logs import Every
from bridge.core import closing
from bridge.events import channels
from bridge.events.event import Event, EventType

log = logging.getLogger("bridge.core.closer")

#: Seconds a state read may take before it counts as a broker failure.
READ_TIMEOUT = 5.0
#: ``call.completed`` records of one tenant reconciled against one read of its state: each
#: read costs the whole state, so records that come in bursts (ePacific's CDRs) share one.
RECONCILE_BATCH = 200
#: Legs looked at by a sweep between two yields to the event loop (about a millisecond).
SWEEP_CHUNK = 100


class Closer:
    def __init__(self, broker: Broker, submit: Callable[[Event], bool],
                 tenants: Callable[[], Iterable[str]], *, max_call_age: float,
                 sweep_interval: float, queue_size: int = 1000,
                 retry_delay: float = 1.0) -> None:
        """``submit``: the pipeline's (False: queue full); ``tenants``: the tenants to sweep,
        asked at each sweep (a reload may change them)."""
        self._broker = broker
        self._submit = submit
        self._tenants = tenants
        self.max_call_age = max_call_age
        self.sweep_interval = sweep_interval
        self._retry_delay = retry_delay
        self._completed: deque[Event] = deque()
        self._queue_size = queue_size
        self._wake = asyncio.Event()
        self.counts = {"max_age": 0, "reconciled": 0, "sweeps": 0, "read_errors": 0,
                       "dropped": 0}
        self._drop_log = Every(5.0)

    def completed(self, event: Event) -> None:
        """Note a published event; a ``call.completed`` is reconciled soon. Never blocks: past
        ``queue_size`` waiting records one is dropped, counted and logged (the age rule still
        closes its legs)."""
        if event.type != EventType.COMPLETED:
            return
        if len(self._completed) >= self._queue_size:
            self.counts["dropped"] += 1
            if self._drop_log.due():
                log.warning("reconciliation queue full (%d): %d completed call(s) not "
                            "reconciled", self._queue_size, self.counts["dropped"])
            return
        self._completed.append(event)
        self._wake.set()

    async def run(self) -> None:
        """Sweep and reconcile until cancelled."""
        next_sweep = time.monotonic() + self.sweep_interval
        while True:
            if self._completed:
                tenant = self._completed[0].tenant
                batch = [e for e in self._completed if e.tenant == tenant][:RECONCILE_BATCH]
                if await self._reconcile(tenant, batch):
                    done = {id(e) for e in batch}
                    self._completed = deque(e for e in self._completed if id(e) not in done)
                else:
                    await asyncio.sleep(self._retry_delay)
                continue
            if self.max_call_age > 0 and time.monotonic() >= next_sweep:
                await self.sweep()
                next_sweep = time.monotonic() + self.sweep_interval
                continue
            self._wake.clear()
            wait = max(0.0, next_sweep - time.monotonic()) if self.max_call_age > 0 else None
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def sweep(self) -> int:
        """Close every known tenant's legs older than ``max_call_age``; how many were
        submitted. A tenant whose state cannot be read is skipped until the next sweep."""
        self.counts["sweeps"] += 1
        closed = 0
        for tenant in sorted(set(self._tenants())):
            now = time.time()
            legs = await self._aged(tenant, now)
            if legs is None:
                continue
            for leg in legs:
                event = closing.closing_event(tenant, leg, closing.MAX_AGE, now)
                if not self._submit(event):
                    return closed  # the pipeline is full: the next sweep finds them again
                closed += 1
                self.counts["max_age"] += 1
                log.info("closing leg %s of %s: older than %gs", leg["call_id"], tenant,
                         self.max_call_age)
        return closed

    async def _aged(self, tenant: str, now: float) -> list[Record] | None:
        """:func:`closing.aged` over ``tenant``'s state, read :data:`SWEEP_CHUNK` records at a
        time with the event loop running between; None when it cannot be read.

        A call centre's state holds thousands of legs: decoding them all and reading their
        times in one step held every event behind it, and the records, all alive at once,
        set off the garbage collector (12,000 legs: about 30 ms, then 90 ms)."""
        found: list[Record] = []
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                async for part in self._broker.state_parts(
                        channels.tenant_calls(tenant), SWEEP_CHUNK, prefix="leg:"):
                    found += closing.aged(part, now, self.max_call_age)
                    await asyncio.sleep(0)
        except (BrokerError, TimeoutError) as exc:
            self._read_failed(tenant, exc)
            return None
        return closing.oldest_first(found)

    async def _reconcile(self, tenant: str, batch: list[Event]) -> bool:
        """Close the legs of the calls of ``batch`` (``tenant``'s ``call.completed`` records),
        the state read once for all of them; False when it could not be read (try again
        later)."""
        records = await self._read(tenant)
        if records is None:
            return False
        now = time.time()
        closed: set[str] = set()
        for completed, legs in zip(batch, closing.reconciled_all(records, batch)):
            for leg in legs:
                if leg["call_id"] in closed:
                    continue  # another record of the batch closed it already
                closed.add(leg["call_id"])
                event = closing.closing_event(tenant, leg, closing.RECONCILED, now,
                                              {"completed_id": completed.id})
                if self._submit(event):
                    self.counts["reconciled"] += 1
                    log.info("closing leg %s of %s: completed record %s", leg["call_id"],
                             tenant, completed.id)
        return True

    async def _read(self, tenant: str) -> dict[str, Record] | None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                snapshot = await self._broker.snapshot(channels.tenant_calls(tenant))
        except (BrokerError, TimeoutError) as exc:
            self._read_failed(tenant, exc)
            return None
        return snapshot.records

    def _read_failed(self, tenant: str, exc: Exception) -> None:
        self.counts["read_errors"] += 1
        log.warning("live state of %s not read: %s", tenant, exc or "timeout")
