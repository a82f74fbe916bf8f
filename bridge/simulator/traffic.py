"""Simulated call traffic: Poisson call arrivals, each played out as a Kazoo call flow.

One task (:meth:`Traffic.run`) owns everything: a heap of the planned signals of every call in
progress, and the time of the next arrival. It sleeps until whichever comes first, never
spawning a task per call or per signal.

Calls are physically possible: an extension is in at most ``calls_per_extension`` calls at
once (one by default: a phone in a call neither places nor takes another). A call that arrives
when the extensions it needs are busy does not happen (``calls_busy``). Only a call-waiting
scenario asks for more than one.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import random
import time
from collections import Counter
from typing import Any, Callable

from bridge.simulator.calls import Endpoint, plan_call

log = logging.getLogger(__name__)

Emit = Callable[[str, str, dict[str, Any]], object]

#: Share of calls between two extensions; the rest come from or go to outside numbers.
INTERNAL_SHARE = 0.6
INBOUND_SHARE = 0.25  # from an outside number to an extension


class Traffic:
    """Drives ``emit(account_id, name, payload)`` with realistic calls.

    Calls arrive as a Poisson process of ``calls_per_second`` (in real time), each in a random
    account, between random extensions of it (or with an outside number). ``time_scale``
    multiplies every planned delay inside a call (ring, talk, hold): 0.05 plays a one-minute
    call in three seconds. ``emit`` may be a plain function or return an awaitable, which is
    awaited for at most ``emit_timeout`` seconds (a signal that times out is counted as dropped).
    At most ``max_active_calls`` calls are in progress; arrivals beyond that are skipped and
    counted, which bounds the heap. An arrival picks its extensions among those of its account
    in fewer than ``calls_per_extension`` calls (from the first signal of a call to its last);
    when too few are free it is dropped and counted as busy. With ``max_calls``, :meth:`run`
    returns once that many calls have been played to the end; otherwise it runs until
    cancelled. Calls in progress when a run is cancelled are abandoned: a later run does not
    send their remaining signals (and their extensions are free again).
    """

    def __init__(
        self,
        emit: Emit,
        *,
        accounts: list[str],
        extensions: list[str],
        calls_per_second: float,
        realm: str = "sim.callbridge.local",
        time_scale: float = 1.0,
        seed: int | None = None,
        max_calls: int | None = None,
        max_active_calls: int = 1000,
        emit_timeout: float = 5.0,
        calls_per_extension: int = 1,
    ) -> None:
        if not accounts:
            raise ValueError("Traffic needs at least one account")
        if len(set(extensions)) < 2:
            raise ValueError("Traffic needs at least two distinct extensions")
        if not calls_per_second > 0:
            raise ValueError("calls_per_second must be positive")
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        if calls_per_extension < 1:
            raise ValueError("calls_per_extension must be at least 1")
        self._emit = emit
        self._rate = calls_per_second
        self._rate_changed = asyncio.Event()
        self._accounts = list(accounts)
        self._extensions = sorted(set(extensions))
        self._realm = realm
        self._scale = time_scale
        self._rng = random.Random(seed)
        self._max_calls = max_calls
        self._max_active = max_active_calls
        self._emit_timeout = emit_timeout
        self._per_extension = calls_per_extension
        #: (account, extension) -> calls it is in now
        self._busy: Counter[tuple[str, str]] = Counter()
        # (at, sequence, account, name, payload, the extensions its call frees when this is
        # its last signal, else None)
        self._heap: list[tuple[float, int, str, str, dict[str, Any], tuple[str, ...] | None]] = []
        self._seq = 0
        self._active = 0
        self._started = 0
        self._finished = 0
        self._skipped = 0
        self._busy_calls = 0
        self._dropped = 0
        self._abandoned = 0
        self._signals: Counter[str] = Counter()

    @property
    def calls_per_second(self) -> float:
        return self._rate

    @calls_per_second.setter
    def calls_per_second(self, value: float) -> None:
        """Change the arrival rate; a running :meth:`run` redraws its next arrival at once."""
        if not value > 0:
            raise ValueError("calls_per_second must be positive")
        self._rate = value
        self._rate_changed.set()

    def stats(self) -> dict[str, Any]:
        """Counters: calls started/finished/active/skipped/busy/abandoned, signals emitted by
        name."""
        return {
            "calls_started": self._started,
            "calls_finished": self._finished,
            "calls_active": self._active,
            "calls_skipped": self._skipped,
            "calls_busy": self._busy_calls,
            "calls_abandoned": self._abandoned,
            "signals": dict(self._signals),
            "signals_dropped": self._dropped,
        }

    async def run(self) -> None:
        """Play calls until cancelled, or until ``max_calls`` calls have ended."""
        loop = asyncio.get_running_loop()
        # Payload times are wall-clock Unix seconds; sleeping follows the monotonic clock.
        wall0, mono0 = time.time(), loop.time()
        next_arrival = wall0
        self._rate_changed.clear()
        if self._heap:
            # Left over by a cancelled run: their times have passed; the calls are abandoned.
            self._abandoned += self._active
            self._heap.clear()
            self._busy.clear()
            self._active = 0
        while self._max_calls is None or self._finished < self._max_calls:
            arrivals_open = self._max_calls is None or self._started < self._max_calls
            due = min(
                next_arrival if arrivals_open else float("inf"),
                self._heap[0][0] if self._heap else float("inf"),
            )
            delay = (mono0 + (due - wall0)) - loop.time()
            if delay > 0 and await self._rate_change(delay):
                # A new rate: the pending arrival was drawn with the old one (memoryless).
                next_arrival = wall0 + (loop.time() - mono0) + self._rng.expovariate(self._rate)
                continue
            if arrivals_open and (not self._heap or next_arrival <= self._heap[0][0]):
                self._start_call(next_arrival)
                next_arrival += self._rng.expovariate(self._rate)
                continue
            _, _, account, name, payload, frees = heapq.heappop(self._heap)
            await self._deliver(account, name, payload)
            if frees is not None:
                self._busy.subtract((account, extension) for extension in frees)
                self._active -= 1
                self._finished += 1

    async def _rate_change(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; True when the rate changed meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await self._rate_changed.wait()
        except TimeoutError:
            return False
        self._rate_changed.clear()
        return True

    def _start_call(self, start: float) -> None:
        if self._active >= self._max_active:
            self._skipped += 1
            return
        rng = self._rng
        account = rng.choice(self._accounts)
        kind = rng.random()
        internal = kind < INTERNAL_SHARE
        free = [e for e in self._extensions if self._busy[account, e] < self._per_extension]
        if len(free) < (2 if internal else 1):
            self._busy_calls += 1
            return
        a, b = rng.sample(free, 2) if internal else (rng.choice(free), "")
        caller, callee = Endpoint(a, f"Ext {a}"), Endpoint(b, f"Ext {b}")
        if kind >= INTERNAL_SHARE + INBOUND_SHARE:
            callee = Endpoint(self._outside_number(), internal=False)
        elif not internal:
            caller, callee = Endpoint(self._outside_number(), internal=False), caller
        extensions = (a, b) if internal else (a,)
        self._busy.update((account, extension) for extension in extensions)
        flow = plan_call(
            rng,
            start=start,
            account_id=account,
            realm=self._realm,
            caller=caller,
            callee=callee,
            scale=self._scale,
        )
        for i, signal in enumerate(flow):
            self._seq += 1
            frees = extensions if i == len(flow) - 1 else None
            heapq.heappush(
                self._heap, (signal.at, self._seq, account, signal.name, signal.payload, frees)
            )
        self._started += 1
        self._active += 1

    def _outside_number(self) -> str:
        return f"+849{self._rng.randrange(10**8):08d}"

    async def _deliver(self, account: str, name: str, payload: dict[str, Any]) -> None:
        result = self._emit(account, name, payload)
        if inspect.isawaitable(result):
            try:
                async with asyncio.timeout(self._emit_timeout):
                    await result
            except TimeoutError:
                self._dropped += 1
                log.warning("simulator: emit of %s timed out after %ss", name, self._emit_timeout)
                return
        self._signals[name] += 1
