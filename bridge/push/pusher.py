"""Every ``[[webhook]]`` target of one instance, each pushed by one instance at a time.

Target ``<name>`` reads its channels through the consumer group ``webhook:<name>``
(:class:`bridge.consumer.groups.GroupConsumer`) and runs only while this instance holds the
lease ``webhook:<name>`` (:class:`bridge.cluster.leases.LeasedRunner`, the same leases as the
upstream streams). Every holder reads as the same group consumer (``pusher``), so a new holder
owns the entries its predecessor had read but not acknowledged, and continues with them before
the group's next ones: per-channel order holds across a takeover, and an event is pushed
twice only when an instance stopped between its push and its acknowledgement.

Each target has its own HTTP client (its own connections) and its own tasks, so a target that
is down or slow never delays another.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import httpx

from bridge.cluster.leases import LeasedRunner, LeaseStore, LocalLeases
from bridge.cluster.notices import RELEASED, LeaseNotices, LocalNotices, Notice
from bridge.common.backoff import backoff
from bridge.common.redact import redact
from bridge.config.model import WebhookTarget
from bridge.consumer.groups import Delivery, GroupConsumer
from bridge.push.record import DeadLetters
from bridge.push.target import QUEUE_SIZE, TargetPusher

log = logging.getLogger("bridge.push")

#: The group consumer every holder of a target reads as (see the module docstring).
CONSUMER = "pusher"
#: Seconds beyond ``retry_for`` and two timeouts before the group may hand an entry read but
#: not acknowledged to a reader again: never while this holder is still retrying it.
CLAIM_MARGIN = 60.0


def lease_name(target: WebhookTarget) -> str:
    """The lease, and the consumer group, of a target: ``webhook:<name>``."""
    return f"webhook:{target.name}"


class Pusher:
    """Runs every target under its lease from :meth:`start` to :meth:`stop`."""

    def __init__(self, targets: list[WebhookTarget], *, url: str, prefix: str,
                 leases: LeaseStore | LocalLeases, notices: LeaseNotices | LocalNotices) -> None:
        self._url = url
        self._prefix = prefix
        self._notices = notices
        self._dead = DeadLetters(url, prefix=prefix) if targets else None
        self._clients: list[httpx.AsyncClient] = []
        self.pushers: list[TargetPusher[Delivery]] = []
        self.runners: list[LeasedRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.errors: dict[str, str | None] = {}
        for target in targets:
            self.pushers.append(self._build(target))
            self.runners.append(LeasedRunner(
                leases, lease_name(target), functools.partial(self._follow, self.pushers[-1]),
                notices=notices))

    def _build(self, target: WebhookTarget) -> TargetPusher[Delivery]:
        assert self._dead is not None
        http = httpx.AsyncClient(timeout=target.timeout, trust_env=False,
                                 follow_redirects=False,
                                 limits=httpx.Limits(max_connections=len(target.channels) + 1))
        self._clients.append(http)
        return TargetPusher(target, http, dead=self._dead.add)

    async def _follow(self, pusher: TargetPusher[Delivery]) -> None:
        """Push from the target's group until cancelled, opening it again after a failure."""
        target = pusher.target
        delays = backoff(0.5, maximum=30.0)
        while True:
            try:
                async with GroupConsumer(
                        self._url, list(target.channels), group=lease_name(target),
                        consumer=CONSUMER, prefix=self._prefix,
                        claim_after=target.retry_for + 2 * target.timeout + CLAIM_MARGIN,
                        start="new", batch=QUEUE_SIZE) as group:
                    self.errors[target.name] = None
                    delays = backoff(0.5, maximum=30.0)
                    await pusher.run(group)
            except Exception as exc:  # Redis down, a failed acknowledgement: open it again
                error = redact(f"{type(exc).__name__}: {exc}")[:300]
                self.errors[target.name] = error
                log.warning("webhook %s: consumer group failed (%s); opening it again",
                            target.name, error)
            await asyncio.sleep(next(delays))

    def start(self) -> None:
        for runner in self.runners:
            self._tasks.append(asyncio.create_task(runner.run(), name=f"lease {runner.stream}"))

    async def stop(self) -> None:
        """Stop every target and release its lease (another instance takes it over at once).

        An event being pushed is left unacknowledged: the next holder pushes it again.
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        released = [r.stream for r, ok in
                    zip(self.runners, await asyncio.gather(*(r.release() for r in self.runners)))
                    if ok]
        if released:
            await self._notices.publish(RELEASED, released)

    async def close(self) -> None:
        """:meth:`stop`, then close the HTTP clients and the dead-letter connection."""
        await self.stop()
        for http in self._clients:
            await http.aclose()
        if self._dead is not None:
            await self._dead.close()

    def on_notice(self, notice: Notice) -> None:
        """A lease notice: a released target is tried at once."""
        if notice.kind == RELEASED:
            for runner in self.runners:
                if runner.stream in notice.streams:
                    runner.nudge()

    def snapshot(self) -> list[dict[str, Any]]:
        """Per target: its lease, its counts, recent deliveries and last errors."""
        return [{"name": p.target.name, "channels": list(p.target.channels),
                 "lease": r.snapshot(), **p.log.snapshot(),
                 "group_error": self.errors.get(p.target.name)}
                for p, r in zip(self.pushers, self.runners)]
