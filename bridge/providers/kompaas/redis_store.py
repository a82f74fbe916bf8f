"""Pending verifications in Redis, shared by every instance and kept across restarts.

Keys of one tenant, under the broker prefix, all with the hash tag ``{<tenant>}`` so that they
live in one Redis Cluster slot and one script may touch them together:

- ``<prefix>kompaas:{<tenant>}:pending:<uuid>``: the verification (JSON: phone, start, deadline,
  the start's answer), expiring :data:`PENDING_GRACE` after its deadline;
- ``<prefix>kompaas:{<tenant>}:deadlines``: sorted set, uuid by deadline (unix seconds): the
  timeout sweep's queue and the capacity count;
- ``<prefix>kompaas:{<tenant>}:finished:<uuid>``: its outcome, for :data:`FINISHED_TTL`, so a
  late or repeated webhook is recognised;
- ``<prefix>kompaas:{<tenant>}:held:<uuid>``: an outcome whose id is not known yet (it
  overtook the start's answer), for :data:`HELD_TTL`.

Every change is one script, so it is atomic across instances: of a webhook delivered twice (to
one instance or two) and the timeout sweeps running on every instance, exactly one caller
finds the verification pending and emits its event. Deadlines are wall-clock time: the
instances' clocks must agree (NTP).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from redis.exceptions import RedisClusterException, RedisError

from bridge.common.redact import redact
from bridge.providers.kompaas.outcome import TIMED_OUT
from bridge.providers.kompaas.pending import (
    FINISHED,
    PENDING,
    UNKNOWN,
    Held,
    Pending,
    TableFull,
)
from bridge.providers.kompaas.store import PendingStore, StoreUnavailable
from bridge.redisconn.clients import command_client

#: Seconds a verification's record outlives its deadline: time for some instance to sweep it
#: (and report its timeout with its details) after every instance was down over the deadline.
PENDING_GRACE = 600.0
#: Seconds a finished verification is remembered, to drop late and repeated webhooks.
FINISHED_TTL = 86_400.0
#: Seconds an outcome of an unknown id is held for the start answer that may still come.
HELD_TTL = 300.0
#: Verifications claimed per sweep query.
SWEEP_BATCH = 100
#: Seconds an idle timer waits before reading the earliest deadline again.
POLL_INTERVAL = 1.0

# KEYS: pending, deadlines, finished, held. ARGV: uuid, record, deadline, record ttl ms,
# capacity, finished ttl ms. 0: already known; 1: added; -1: full; a string: the held outcome
# (the verification is finished with it).
ADD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local held = redis.call('GET', KEYS[4])
if held then
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[3], cjson.decode(held)['outcome'], 'PX', ARGV[6])
  return held
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return -1
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: pending, deadlines, finished, held. ARGV: uuid, outcome, finished ttl ms, held outcome,
# held ttl ms. {1, record}: was pending (now finished); {2, earlier}: already finished;
# {0}: unknown (the outcome is held).
COMPLETE_SCRIPT = """
local record = redis.call('GET', KEYS[1])
if record then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
  return {1, record}
end
local earlier = redis.call('GET', KEYS[3])
if earlier then
  return {2, earlier}
end
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
return {0}
"""

# KEYS: pending, deadlines, finished. ARGV: uuid, outcome, finished ttl ms. The ZREM is the
# claim: only the one caller that removes the uuid gets {1, record} ('' when the record expired).
CLAIM_SCRIPT = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then
  return {0}
end
local record = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return {1, record or ''}
"""

# KEYS: deadlines. {count, earliest deadline (absent when none)}.
HEAD_SCRIPT = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), first[2]}
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class RedisStore(PendingStore):
    """The pending verifications of one tenant on Redis. Every call raises
    :class:`StoreUnavailable` when Redis fails or does not answer within ``timeout``."""

    kind = "redis"
    poll_interval = POLL_INTERVAL

    def __init__(self, url: str, *, prefix: str, tenant: str, capacity: int = 10_000,
                 timeout: float = 2.0) -> None:
        self.capacity = capacity
        self._base = f"{prefix}kompaas:{{{tenant}}}:"
        self._deadlines = self._base + "deadlines"
        self._size = 0
        self._client = command_client(url, timeout=timeout)
        self._add = self._client.register_script(ADD_SCRIPT)
        self._complete = self._client.register_script(COMPLETE_SCRIPT)
        self._claim = self._client.register_script(CLAIM_SCRIPT)
        self._head = self._client.register_script(HEAD_SCRIPT)

    def keys(self, uuid: str) -> list[str]:
        """pending, deadlines, finished, held: the keys of one verification."""
        return [f"{self._base}pending:{uuid}", self._deadlines, f"{self._base}finished:{uuid}",
                f"{self._base}held:{uuid}"]

    def now(self) -> float:
        return time.time()

    @property
    def size(self) -> int:
        return self._size

    async def _call(self, doing: str, coro: Awaitable[Any], *, resolves: bool = False) -> Any:
        """``resolves``: the command may have finished a verification, whose result must reach
        the caller (to emit its event) even when a cancel arrived meanwhile."""
        try:
            result = await coro
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(redact(f"kompaas store {doing}: {type(exc).__name__}: {exc}")
                                   ) from None
        if _cancelling() and not resolves:
            # redis.asyncio can complete a command and swallow a cancel that arrived meanwhile;
            # raised here, or at the next call for one that resolves.
            raise asyncio.CancelledError
        return result

    async def has_room(self) -> bool:
        self._size = int(await self._call("count", self._client.zcard(self._deadlines)))
        return self._size < self.capacity

    async def add(self, entry: Pending) -> Held | None:
        record = orjson.dumps({"phone": entry.phone, "started_at": entry.started_at,
                               "deadline": entry.deadline, "answer": entry.answer})
        ttl = entry.deadline - self.now() + PENDING_GRACE
        result = await self._call("add", self._add(
            keys=self.keys(entry.uuid),
            args=[entry.uuid, record, repr(entry.deadline), _ms(ttl), self.capacity,
                  _ms(FINISHED_TTL)]), resolves=True)
        if isinstance(result, bytes):
            held = orjson.loads(result)
            return Held(q931=held["q931"], final=held["final"], outcome=held["outcome"])
        if result == -1:
            raise TableFull(f"{self.capacity} verifications pending")
        if result == 1:
            self._size += 1
        return None

    async def complete(self, uuid: str, held: Held) -> tuple[str, Pending | None, str | None]:
        hold = orjson.dumps({"q931": held.q931, "final": held.final, "outcome": held.outcome})
        reply = await self._call("complete", self._complete(
            keys=self.keys(uuid),
            args=[uuid, held.outcome, _ms(FINISHED_TTL), hold, _ms(HELD_TTL)]),
            resolves=True)
        if reply[0] == 1:
            self._size = max(0, self._size - 1)
            return PENDING, self._entry(uuid, reply[1]), None
        if reply[0] == 2:
            return FINISHED, None, reply[1].decode()
        return UNKNOWN, None, None

    async def expire(self) -> list[Pending]:
        claimed: list[Pending] = []
        try:
            while True:
                due = await self._call("sweep", self._client.zrangebyscore(
                    self._deadlines, "-inf", repr(self.now()), start=0, num=SWEEP_BATCH))
                for raw in due:
                    uuid = raw.decode()
                    reply = await self._call("claim", self._claim(
                        keys=self.keys(uuid)[:3], args=[uuid, TIMED_OUT, _ms(FINISHED_TTL)]),
                        resolves=True)
                    if reply[0] == 1:  # another instance may have claimed it first
                        claimed.append(self._entry(uuid, reply[1]))
                if len(due) < SWEEP_BATCH or _cancelling():
                    break  # a cancel swallowed meanwhile is raised by the next call
        except StoreUnavailable:
            if not claimed:
                raise
            # Claimed ones are finished in Redis already: report them now; the next sweep
            # meets the failure again.
        self._size = max(0, self._size - len(claimed))
        return claimed

    async def next_deadline(self) -> float | None:
        reply = await self._call("head", self._head(keys=[self._deadlines]))
        self._size = int(reply[0])
        return float(reply[1]) if len(reply) > 1 and reply[1] is not None else None

    async def close(self) -> None:
        await self._client.aclose()

    def _entry(self, uuid: str, record: bytes) -> Pending:
        """The verification from its record; a record that expired gives the id only."""
        try:
            data = orjson.loads(record) if record else None
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return Pending(uuid=uuid, phone=None, started_at=None, deadline=self.now())
        answer = data.get("answer")
        return Pending(uuid=uuid, phone=data.get("phone"), started_at=data.get("started_at"),
                       deadline=float(data.get("deadline") or 0.0),
                       answer=answer if isinstance(answer, dict) else {})
