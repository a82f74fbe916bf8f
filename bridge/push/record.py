"""What one target's pushes came to: counts, the recent deliveries, and the dead letters.

:class:`DeliveryLog` lives in the process (``/readyz`` shows it); :class:`DeadLetters` keeps
the record of every event given up in Redis, the stream ``<prefix>push:<target>:dead``
(at most :data:`DEAD_KEPT` entries, the oldest trimmed), so it outlives the instance that gave
up. No record holds a secret: errors are redacted before they are kept.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass
from typing import Any

from redis.exceptions import RedisError

from bridge.brokers.base import BrokerError
from bridge.common.redact import redact
from bridge.redisconn.clients import command_client

#: Recent deliveries one target keeps in memory for ``/readyz``.
RECENT_KEPT = 50
#: Dead letters one target keeps in Redis (approximate trim).
DEAD_KEPT = 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the push of one event ended: ``delivered`` (a 2xx answer) or ``dead`` (no 2xx
    within ``retry_for``). ``status`` is the last HTTP status (None: no answer), ``error`` the
    last failure, already redacted (None when delivered)."""

    target: str
    channel: str
    offset: str
    event_id: str
    outcome: str
    attempts: int
    status: int | None
    error: str | None
    at: float

    def fields(self) -> dict[str, str]:
        """The record as Redis stream fields (strings only; absent values as "")."""
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}


class DeliveryLog:
    """Counts of one target (``delivered``, ``retried``: failed attempts followed by another,
    ``dead``) and its :data:`RECENT_KEPT` latest outcomes."""

    def __init__(self) -> None:
        self.counts = {"delivered": 0, "retried": 0, "dead": 0}
        self.recent: collections.deque[Outcome] = collections.deque(maxlen=RECENT_KEPT)
        self.last_error: str | None = None

    def retried(self, error: str) -> None:
        self.counts["retried"] += 1
        self.last_error = error

    def ended(self, outcome: Outcome) -> None:
        self.counts[outcome.outcome] += 1
        self.recent.append(outcome)
        if outcome.error is not None:
            self.last_error = outcome.error

    def snapshot(self) -> dict[str, Any]:
        return {**self.counts, "last_error": self.last_error,
                "recent": [asdict(o) for o in reversed(self.recent)]}


class DeadLetters:
    """The dead-letter streams of every target on one Redis. Raises :class:`BrokerError`
    when Redis fails."""

    def __init__(self, url: str, *, prefix: str, timeout: float = 2.0) -> None:
        self._prefix = prefix
        self._client = command_client(url, timeout=timeout, pool_size=4)

    def key(self, target: str) -> str:
        return f"{self._prefix}push:{target}:dead"

    async def add(self, outcome: Outcome) -> None:
        try:
            await self._client.xadd(self.key(outcome.target), outcome.fields(),
                                    maxlen=DEAD_KEPT, approximate=True)
        except (RedisError, OSError) as exc:
            raise BrokerError(redact(f"dead letter: {exc}")) from None

    async def read(self, target: str, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` dead letters of ``target``, newest first."""
        try:
            rows = await self._client.xrevrange(self.key(target), count=count)
        except (RedisError, OSError) as exc:
            raise BrokerError(redact(f"dead letter: {exc}")) from None
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]

    async def close(self) -> None:
        await self._client.aclose()
