"""The Redis format of a channel's live state (pure): its keys, the Lua that applies a
:class:`~bridge.calls.change.Change` inside the publish script, and the snapshot script.

Channel ``c``'s state lives next to its stream, under the same hash tag ``{c}`` (one Redis
Cluster slot), so the publish script that appends an event to the stream applies the event's
change in the same atomic step:

- ``<prefix>{c}:state``: a hash, field = record key (``leg:<call id>``, ``ext:<extension>``),
  value = the record's JSON object;
- ``<prefix>{c}:ended``: a sorted set of tombstones, member = record key, score = the end time in
  Unix milliseconds; members older than :data:`~bridge.calls.change.TOMBSTONE_SECONDS` are
  removed by the next end on the channel.

Neither key has a TTL, like the stream and the epoch: the state is lost only with them (a flush,
a restart without persistence), and a new epoch then starts with an empty state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from bridge.brokers.base import Snapshot
from bridge.calls.change import TOMBSTONE_SECONDS, Change, Record


def state_key(prefix: str, channel: str) -> str:
    """The hash of ``channel``'s records: field = record key, value = record JSON. No TTL."""
    return f"{prefix}{{{channel}}}:state"


def ended_key(prefix: str, channel: str) -> str:
    """The sorted set of ``channel``'s tombstones: member = record key, score = end time (ms)."""
    return f"{prefix}{{{channel}}}:ended"


def change_args(change: Change | None, now: float | None = None) -> list[Any]:
    """The three ARGV of :data:`APPLY_LUA` in the publish script: the change's JSON (``""`` for
    none), the current time and the tombstone lifetime, both in milliseconds."""
    now_ms = int((time.time() if now is None else now) * 1000)
    return [b"" if change is None else change.to_json(), now_ms, TOMBSTONE_SECONDS * 1000]


# Lua defining apply(state key, ended key), the rule of bridge.calls.change.apply, for the
# publish script. It reads `change` (the decoded Change.to_json(), or nil), `now` and `keep`
# (milliseconds). cjson turns JSON null into cjson.null, a value that is neither nil nor a
# number, exactly as None is neither missing nor a number in Python; an empty record encodes as
# {} (so would an empty list: no record field is one). Times are compared byte by byte as Python
# compares str: Lua's `<=` on strings follows the server's locale.
APPLY_LUA = """
local function not_after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end
local function apply(state, ended)
  local key = change['key']
  if change['end'] then
    redis.call('HDEL', state, key)
    redis.call('ZADD', ended, now, key)
    redis.call('ZREMRANGEBYSCORE', ended, '-inf', '(' .. (now - keep))
    return
  end
  if redis.call('ZSCORE', ended, key) then return end
  local raw = redis.call('HGET', state, key)
  local record = {}
  if raw then record = cjson.decode(raw) end
  for name, value in pairs(change['set']) do record[name] = value end
  for name, value in pairs(change['setnx']) do
    if record[name] == nil then record[name] = value end
  end
  for name, number in pairs(change['max']) do
    local old = record[name]
    if type(old) ~= 'number' or old < number then record[name] = number end
  end
  for name, value in pairs(change['latest']) do
    local stamp = record[name .. '_at']
    if type(stamp) ~= 'string' or not_after(stamp, change['at']) then
      record[name] = value
      record[name .. '_at'] = change['at']
    end
  end
  redis.call('HSET', state, key, cjson.encode(record))
end
"""

# A channel's state with its position, read in one script: its epoch (created if missing, as
# POSITION_SCRIPT does), the id of the newest entry ever added to its stream ("0-0" when it has
# none) and every record.
# KEYS: 1 stream, 2 epoch, 3 state. ARGV: 1 a fresh epoch in case the channel has none.
# Returns {epoch, offset, HGETALL of the state as a flat field/value list}.
SNAPSHOT_SCRIPT = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local offset = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local raw = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #raw, 2 do
    if raw[i] == 'last-generated-id' then offset = raw[i + 1] end
  end
end
return {epoch, offset, redis.call('HGETALL', KEYS[3])}
"""


#: Records decoded between two yields to the event loop by :func:`read_snapshot`.
PARSE_CHUNK = 500


def record_parts(flat: list[bytes], size: int, prefix: str = "") -> Iterator[dict[str, Record]]:
    """The records of a snapshot reply's flat ``[key, value, ...]`` list whose key starts with
    ``prefix``, decoded ``size`` at a time: a part is made only when the one before it has been
    taken, and a record of another kind is never decoded."""
    want = prefix.encode()
    part: dict[str, Record] = {}
    for at in range(0, len(flat), 2):
        key = flat[at]
        if key.startswith(want):
            part[key.decode()] = orjson.loads(flat[at + 1])
            if len(part) >= size:
                yield part
                part = {}
    if part:
        yield part


async def read_snapshot(reply: Any) -> Snapshot:
    """The :class:`Snapshot` of a :data:`SNAPSHOT_SCRIPT` reply, decoded
    :data:`PARSE_CHUNK` records at a time with the event loop running between.

    A call centre's state holds thousands of records; decoding them in one step held every
    event and heartbeat behind it for tens of milliseconds (12,000 legs: about 40 ms).
    """
    epoch, offset, flat = reply
    records: dict[str, Record] = {}
    for n, part in enumerate(record_parts(flat, PARSE_CHUNK)):
        if n:
            await asyncio.sleep(0)
        records.update(part)
    return Snapshot(epoch.decode(), offset.decode(), records)


class SnapshotReads:
    """A Redis broker's :meth:`~bridge.brokers.base.Broker.snapshot` and
    :meth:`~bridge.brokers.base.Broker.state_parts`, from its :meth:`_snapshot_reply` (the
    :data:`SNAPSHOT_SCRIPT` reply for a channel)."""

    async def _snapshot_reply(self, channel: str) -> Any:
        raise NotImplementedError

    async def snapshot(self, channel: str) -> Snapshot:
        return await read_snapshot(await self._snapshot_reply(channel))

    async def state_parts(self, channel: str, size: int, prefix: str = ""
                          ) -> AsyncIterator[dict[str, Record]]:
        _, _, flat = await self._snapshot_reply(channel)
        for part in record_parts(flat, size, prefix):
            yield part
