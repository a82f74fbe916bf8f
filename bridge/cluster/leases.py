"""Upstream stream ownership across instances: one Redis lease per stream.

Several callbridge processes may share one Redis; each upstream stream (tenant + account) must
be run by exactly one of them, or every event would be received twice. A stream's lease is the
key ``<prefix>lease:<stream>`` holding ``<instance id>:<random>``:

- acquire: ``SET key value NX PX ttl``;
- renew every ttl/3: a compare-and-set script extends the key only while it still holds our
  value (or re-creates it when it vanished, e.g. Redis restarted empty);
- live: once the stream is subscribed upstream, the holder appends ``+live`` to its value (the
  same script, atomically, only while the lease is still its own). The mark lives in the lease
  key itself, so it needs no second key (nor a second Redis Cluster slot), and a reader that
  takes the instance id as the part before the last ``:`` reads it unchanged;
- release at graceful shutdown: compare-and-delete, so another instance takes over at once.

An instance that does not hold a stream tries again every ttl/3 (with jitter), or at once when
a lease notice says it was released (:mod:`bridge.cluster.notices`), so a dead holder's streams
are taken over within the ttl and a stopping holder's within moments. When renewal answers
"another instance holds it", the stream keeps running until that instance has marked it live
(at most one ttl), then stops: no signal falls between the two. When Redis cannot be reached the
holder keeps its streams running: losing events is worse than receiving them twice, and the
broker's de-duplication by event id drops the second copy once Redis is back
(docs/operations.md).

A graceful shutdown hands over (:func:`hand_over`): the leases are released but the streams
keep running and publishing until each new holder has marked its stream live (or a time limit
passes), so no upstream signal falls between the two instances; the events both receive in
the overlap carry the same id, and Redis keeps the first copy only.

With ``memory://`` there is one process by definition: :class:`LocalLeases` always grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from bridge.brokers.base import BrokerError
from bridge.cluster.lease_store import LeaseStore, LocalLeases, default_instance_id
from bridge.cluster.notices import LIVE, RELEASED, LeaseNotices, LocalNotices

__all__ = ["LeaseStore", "LocalLeases", "LeasedRunner", "default_instance_id", "hand_over"]

log = logging.getLogger("bridge.cluster.leases")

#: Seconds between two reads of the lease while waiting for a successor (notices wake sooner).
HANDOVER_POLL = 0.25
#: Seconds after the ``released`` notice by which some instance must have taken the lease; a
#: willing standby takes it within a round trip. Nobody by then (every instance is stopping,
#: or none runs the stream): the stream stops without waiting for ``handover_timeout``.
TAKEOVER_GRACE = 1.0


class LeasedRunner:
    """Runs ``start()`` (one stream's loop) only while this instance holds its lease.

    :meth:`run` loops until cancelled: in ``standby`` it tries to acquire every ttl/3 with
    jitter, or at once after :meth:`nudge`; once ``held`` it starts the stream task and renews
    every ttl/3; when renewal says another instance holds the lease, it stops the stream once
    that instance has it live (or after one ttl).
    Once ``until_live()`` returns (the stream is subscribed upstream; at once when None) the
    lease is marked live and a ``live`` notice sent. Cancelling :meth:`run` stops the stream, unless
    :meth:`detach` was called first (a hand-over: :func:`hand_over`); :meth:`release` then
    gives the lease up.
    """

    def __init__(self, store: LeaseStore | LocalLeases, stream: str,
                 start: Callable[[], Coroutine[Any, Any, None]], *,
                 until_live: Callable[[], Awaitable[None]] | None = None,
                 notices: LeaseNotices | LocalNotices | None = None,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.stream = stream
        self._start = start
        self._until_live = until_live
        self._notices = notices or LocalNotices()
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._marker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._successor_heard = asyncio.Event()
        self._detached = False
        self.state = "standby"
        self.held_by: str | None = None
        #: True once this holder's stream was subscribed upstream (until the lease goes).
        self.live = False
        self.confirmed_at = 0.0
        self.last_error: str | None = None
        self.takeovers = 0

    @property
    def held(self) -> bool:
        return self.state == "held"

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "held_by": self.held_by,
                "confirmed_at": round(self.confirmed_at, 3) or None,
                "last_error": self.last_error}

    def _interval(self) -> float:
        third = self.store.ttl / 3
        return third * (0.8 + 0.2 * self._rng.random())

    def nudge(self) -> None:
        """The lease was released elsewhere: a standby runner tries to take it now."""
        if not self.held:
            self._wake.set()

    def successor_live(self) -> None:
        """Another instance says it runs the stream now: :meth:`await_successor` looks."""
        self._successor_heard.set()

    def detach(self) -> None:
        """Let :meth:`run` end without stopping the stream (it is handed over)."""
        self._detached = True

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()  # a nudge during the step makes the next one immediate
                await self._step()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval()):
                        await self._wake.wait()
        finally:
            if not self._detached:
                await self.stop()

    async def _step(self) -> None:
        store = self.store
        try:
            if self.held:
                ok = await store.renew(self.stream, live=self.live)
            else:
                ok = await store.acquire(self.stream)
            self.last_error = None
        except BrokerError as exc:
            # Redis unreachable: a holder keeps running (see module docstring).
            self.last_error = str(exc)
            return
        if ok:
            self.confirmed_at = time.time()
            self.held_by = store.instance_id
            if not self.held:
                self.state = "held"
                self.takeovers += 1
                log.info("lease %s acquired by %s", self.stream, store.instance_id)
                self._task = asyncio.create_task(self._start(), name=f"stream {self.stream}")
                self._marker = asyncio.create_task(self._mark_live(),
                                                   name=f"live {self.stream}")
            return
        if self.held:
            # Another instance holds it now (it took the lease when Redis came back, say).
            # Until it runs the stream upstream, this one keeps running: signals are received
            # twice for a moment, and published once, instead of falling between the two.
            log.warning("lease %s taken by another instance: the stream runs here until it "
                        "runs there", self.stream)
            self.state = "standby"
            self.live = False
            await self._stop_marker()
            successor = await self.await_successor(time.monotonic() + self.store.ttl)
            await self.stop()
            log.info("lease %s: stream stopped here (%s)", self.stream,
                     f"live on {successor[0]}" if successor and successor[1]
                     else "the other instance is not live yet")
        try:
            self.held_by = await store.holder(self.stream)
        except BrokerError as exc:
            self.last_error = str(exc)

    async def _mark_live(self) -> None:
        """Once the stream is subscribed upstream: mark the lease live, tell the others."""
        if self._until_live is not None:
            await self._until_live()
        self.live = True
        try:
            if not await self.store.renew(self.stream, live=True):
                return  # lost meanwhile: the loop's next renewal stops the stream
        except BrokerError as exc:
            # The next renewal marks it; a previous holder waits that much longer.
            self.last_error = str(exc)
            return
        await self._notices.publish(LIVE, [self.stream])

    async def stop(self) -> None:
        """Stop the stream (if running); the lease is left as it is."""
        marker, self._marker = self._marker, None
        task, self._task = self._task, None
        self.live = False
        tasks = [t for t in (marker, task) if t is not None]
        if not tasks:
            return
        for t in tasks:
            t.cancel()
        # wait() rather than await: our own cancellation must propagate, the stream's must not.
        await asyncio.wait(tasks)
        for t in tasks:
            if not t.cancelled() and t.exception() is not None:
                log.error("stream %s ended with an error: %r", self.stream, t.exception())

    async def release(self, *, keep_stream: bool = False) -> bool:
        """Give the lease up so another instance takes over; True when it was released.

        The stream is stopped first, unless ``keep_stream`` (a hand-over: it runs on until
        :meth:`stop`).
        """
        if keep_stream:
            await self._stop_marker()
        else:
            await self.stop()
        if self.state != "held":
            return False
        self.state = "standby"
        self.held_by = None
        self.live = False
        try:
            async with asyncio.timeout(self.store.ttl):
                await self.store.release(self.stream)
            log.info("lease %s released", self.stream)
            return True
        except (BrokerError, TimeoutError) as exc:
            log.warning("lease %s not released (expires in %.0fs): %s",
                        self.stream, self.store.ttl, exc)
            return False

    async def _stop_marker(self) -> None:
        marker, self._marker = self._marker, None
        if marker is not None:
            marker.cancel()
            await asyncio.wait([marker])

    async def await_successor(self, until: float) -> tuple[str, bool] | None:
        """After :meth:`release`: the other instance holding the stream, ``(id, live)``.

        Returns as soon as it is live upstream; otherwise at the monotonic time ``until``, or
        with None once :data:`TAKEOVER_GRACE` passed with nobody holding it. Never raises for
        Redis (an unreadable lease counts as free).
        """
        grace = min(until, time.monotonic() + TAKEOVER_GRACE)
        while True:
            self._successor_heard.clear()  # a notice during the read makes the next one at once
            try:
                async with asyncio.timeout(max(until - time.monotonic(), 0.05)):
                    successor = await self.store.successor(self.stream)
            except (BrokerError, TimeoutError):
                successor = None
            now = time.monotonic()
            if (successor is not None and successor[1]) or now >= until:
                return successor
            if successor is None and now >= grace:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(until - now, HANDOVER_POLL)):
                    await self._successor_heard.wait()


async def hand_over(runners: Sequence[LeasedRunner], notices: LeaseNotices | LocalNotices,
                    *, timeout: float) -> None:
    """Move the held streams to other instances without a gap, then stop them here.

    The runners' loops must have ended (:meth:`LeasedRunner.detach`, then cancelled). Every
    held lease is released while its stream keeps running and publishing; one ``released``
    notice lets the other instances' standby runners take them at once; each stream stops when
    its new holder has it live upstream, or after ``timeout`` seconds, or when nobody took
    its lease within :data:`TAKEOVER_GRACE`. When no other instance hears the notice (or
    ``memory://``), nobody can take over and nothing waits.
    """
    try:
        outcomes = await asyncio.gather(*(r.release(keep_stream=True) for r in runners))
        released = [r for r, ok in zip(runners, outcomes) if ok]
        if not released:
            return
        others = await notices.publish(RELEASED, [r.stream for r in released])
        if not others:
            log.info("hand-over: no other instance listens; %d stream(s) stop now",
                     len(released))
            return
        if timeout <= 0:
            log.info("hand-over: no time to wait; %d stream(s) stop now", len(released))
            return
        log.info("hand-over: %d stream(s) released, %d other instance(s) told; waiting up to "
                 "%.1fs for them to take over", len(released), others, timeout)
        until = time.monotonic() + timeout
        successors = await asyncio.gather(*(r.await_successor(until) for r in released))
        for runner, successor in zip(released, successors):
            if successor is None:
                log.warning("lease %s: no instance took it over within %.1fs; stopping the "
                            "stream", runner.stream, min(timeout, TAKEOVER_GRACE))
            elif successor[1]:
                log.info("lease %s handed over to %s", runner.stream, successor[0])
            else:
                log.warning("lease %s: %s took it over but was not live upstream within "
                            "%.1fs; stopping the stream", runner.stream, successor[0], timeout)
    finally:
        await asyncio.gather(*(r.stop() for r in runners))
