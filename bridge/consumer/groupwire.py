"""The Redis side of consumer groups (pure): names, the redelivery and dead-letter rule as
Lua, and the parsing of its replies. :mod:`bridge.consumer.groups` runs it.

**Names.** A group ``g`` of the deployment with prefix ``p`` is the Redis consumer group
``p + g`` on each channel's stream ``p{c}:stream``: the prefix marks it as the deployment's in
``XINFO GROUPS``, as every key callbridge writes carries it. Its dead letters for channel ``c``
are the stream ``p{c}:dead:g``, in the channel's slot (hash tag ``{c}``), so one script touches
the channel's stream and its dead letters on a Redis Cluster.

**The rule.** Redis counts the deliveries of each pending entry (XREADGROUP with ``>`` counts
1, each claim and each re-read of a consumer's own pending entries adds 1). An entry is
delivered at most ``max_deliveries`` times: when taking it again would make its count exceed
``max_deliveries``, it is moved aside instead, in one atomic step: XACK on the group, XADD of a
record to the dead letters. An entry whose stream data is gone (trimmed while pending) is
treated the same way with reason ``trimmed`` and no event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def group_name(prefix: str, group: str) -> str:
    """The Redis consumer group of ``group`` (on every channel's stream)."""
    return prefix + group


def dead_key(prefix: str, channel: str, group: str) -> str:
    """The dead-letter stream of ``group`` on ``channel``."""
    return f"{prefix}{{{channel}}}:dead:{group}"


#: Reasons a :class:`DeadLetter` gives.
MAX_DELIVERIES = "max_deliveries"
TRIMMED = "trimmed"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry moved out of the group: acked there, recorded on the dead-letter stream.

    ``offset``: its id on the channel's stream. ``reason``: :data:`MAX_DELIVERIES` (delivered
    ``deliveries`` times, never acked) or :data:`TRIMMED` (its stream entry was gone while it
    was pending; ``event`` is None). ``consumer``: the consumer that held it last. ``at``: Unix
    time in milliseconds when it was moved. ``record_id``: the record's id on the dead-letter
    stream (:func:`dead_key`).
    """

    channel: str
    group: str
    offset: str
    reason: str
    deliveries: int
    consumer: str
    at: int
    event: bytes | None
    record_id: str


# Shared by the two scripts. KEYS: 1 the channel's stream, 2 its dead letters. ARGV: 1 group,
# 2 this consumer, 3 max deliveries, 4 now (ms), then the script's own arguments.
# `before` maps an id to {owner, delivery count} read with XPENDING ahead of the step that
# counts one more delivery; settle() then delivers the entry or moves it aside.
_SETTLE = """
local stream, dead = KEYS[1], KEYS[2]
local group, me, max, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local before = {}
local function remember(pending)
  for _, p in ipairs(pending) do before[p[1]] = {p[2], p[4]} end
end
local out, moved = {}, {}
local function bury(id, reason, event, gone)
  local last = before[id] or {me, 0}
  -- 0: acked meanwhile, not ours to move; `gone`: XAUTOCLAIM already dropped it from the PEL.
  if redis.call('XACK', stream, group, id) == 0 and not gone then return end
  local fields = {'offset', id, 'reason', reason, 'deliveries', last[2], 'consumer', last[1],
                  'at', now}
  if event then fields[#fields + 1] = 'e'; fields[#fields + 1] = event end
  local rid = redis.call('XADD', dead, '*', unpack(fields))
  moved[#moved + 1] = {id, reason, last[2], last[1], event or false, rid}
end
local function settle(id, fields)
  local event = false
  if fields then
    for i = 1, #fields, 2 do if fields[i] == 'e' then event = fields[i + 1] end end
  end
  if not event then return bury(id, 'trimmed', false) end
  local p = redis.call('XPENDING', stream, group, id, id, 1)[1]
  local n = p and p[4] or 1
  if n > max then return bury(id, 'max_deliveries', event) end
  out[#out + 1] = {id, event, n}
end
"""

#: Claim the entries of any consumer idle longer than ARGV[5] ms, from cursor ARGV[6], at most
#: ARGV[7] of them (XAUTOCLAIM), settling each. Returns {next cursor ("0-0": the scan is
#: complete), delivered {id, event, deliveries}, moved aside {id, reason, deliveries, consumer,
#: event, record id}}.
CLAIM_SCRIPT = _SETTLE + """
local idle, cursor, count = ARGV[5], ARGV[6], ARGV[7]
-- XAUTOCLAIM looks at up to 10 * count entries, and drops deleted ones whatever their idle
-- time: remember the owners and counts of all of those.
remember(redis.call('XPENDING', stream, group, cursor, '+', 10 * tonumber(count)))
local r = redis.call('XAUTOCLAIM', stream, group, me, idle, cursor, 'COUNT', count)
for _, e in ipairs(r[2]) do settle(e[1], e[2]) end
for _, id in ipairs(r[3] or {}) do bury(id, 'trimmed', false, true) end
return {r[1], out, moved}
"""

#: Re-read this consumer's own pending entries after ARGV[5] ("0": from the first), at most
#: ARGV[6] of them (XREADGROUP with an id), settling each. Returns what CLAIM_SCRIPT returns;
#: the cursor is "0-0" once no pending entry is left after it.
OWN_SCRIPT = _SETTLE + """
local after, count = ARGV[5], ARGV[6]
local start = after == '0' and '-' or '(' .. after
remember(redis.call('XPENDING', stream, group, start, '+', count, me))
local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', count, 'STREAMS', stream, after)
local entries = (r and r[1] and r[1][2]) or {}
for _, e in ipairs(entries) do settle(e[1], e[2]) end
local next = '0-0'
if #entries >= tonumber(count) then next = entries[#entries][1] end
return {next, out, moved}
"""


def settle_args(group: str, consumer: str, max_deliveries: int, now_ms: int,
                *extra: Any) -> list[Any]:
    """ARGV of :data:`CLAIM_SCRIPT` (``extra``: min idle ms, cursor, count) and
    :data:`OWN_SCRIPT` (``extra``: after, count)."""
    return [group, consumer, max_deliveries, now_ms, *extra]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_settled(
    channel: str, group: str, now_ms: int, reply: Any,
) -> tuple[str, list[tuple[str, bytes, int]], list[DeadLetter]]:
    """``(next cursor, [(offset, event JSON, deliveries)], [DeadLetter])`` of a script reply;
    ``group`` is the caller's group name (without the prefix), ``now_ms`` the time passed to
    the script."""
    cursor, delivered, moved = reply
    out = [(_text(i), bytes(e), int(n)) for i, e, n in delivered]
    dead = [DeadLetter(channel, group, _text(i), _text(reason), int(n), _text(consumer), now_ms,
                       bytes(event) if event else None, _text(rid))
            for i, reason, n, consumer, event, rid in moved]
    return _text(cursor), out, dead
