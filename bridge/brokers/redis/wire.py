"""The Redis wire format of callbridge's brokers (pure): key names, Lua scripts, frame
parsing.

Shared by ``redis://`` (:mod:`bridge.brokers.redis.broker`) and ``redis-cluster://``
(:mod:`bridge.brokers.redis.cluster`): both run the same scripts on the same keys, with no I/O here.

Keys of channel ``c`` carry the hash tag ``{c}``, so a channel's stream, epoch and live state
(:mod:`bridge.brokers.redis.state`) always share one Redis Cluster slot and one script can touch
them all. Channel names never contain braces (:data:`bridge.events.channels.CHANNEL_RE`), so the
tag is exactly the channel name.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bridge.brokers.base import EPOCH_RE, OFFSET_RE, Replay, ReplayStatus, offset_key
from bridge.brokers.redis.state import APPLY_LUA, change_args, ended_key, state_key
from bridge.calls.change import Change
from bridge.events.event import envelope


def stream_key(prefix: str, channel: str) -> str:
    """The history stream of ``channel``: one entry per event, field ``e`` = the event JSON."""
    return f"{prefix}{{{channel}}}:stream"


def epoch_key(prefix: str, channel: str) -> str:
    """The string key holding ``channel``'s current epoch. Never has a TTL."""
    return f"{prefix}{{{channel}}}:epoch"


def pubsub_channel(prefix: str, channel: str, *, sharded: bool = False) -> str:
    """The Redis pub/sub channel of ``channel``.

    Plain pub/sub: no hash tag, consumers subscribe to it by name. Sharded pub/sub (SPUBLISH):
    ``<prefix>{channel}``, in the slot of the channel's keys, as a script may publish only there.
    """
    return f"{prefix}{{{channel}}}" if sharded else prefix + channel


def channel_of(prefix: bytes, name: bytes) -> str | None:
    """The channel of a pub/sub name made by :func:`pubsub_channel`; None if not under
    ``prefix``."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    if rest.startswith(b"{") and rest.endswith(b"}"):
        rest = rest[1:-1]
    return rest.decode()


def seen_key(prefix: str, event_id: str) -> str:
    """The de-duplication mark of an event id; expires after the de-duplication window."""
    return f"{prefix}seen:{event_id}"


def probe_channel(prefix: str, token: str) -> str:
    """The pub/sub channel one broker instance uses to probe its own subscription."""
    return f"{prefix}probe:{token}"


def new_epoch() -> str:
    """A fresh random epoch name (12 hex characters, matches :data:`EPOCH_RE`)."""
    return secrets.token_hex(6)


# Publish one event to several channels atomically, applying its change to each one's state.
# KEYS: [the de-dup mark, when ARGV[6] > 0], then per channel: its stream, epoch, state and
#       tombstone keys.
# ARGV: 1 event JSON, 2 publish command (PUBLISH, or SPUBLISH for sharded pub/sub), 3 history
#       length, 4 trim mode ("~" approximate, "=" exact), 5 a fresh epoch for channels that have
#       none, 6 de-dup window in ms (0: KEYS has no mark), 7 the change JSON ("" for none), 8 now
#       and 9 the tombstone lifetime, in ms (state.change_args), 10.. per channel, in KEYS order,
#       its pub/sub name and its name.
# Returns each channel's new stream id, or nil when the mark already existed (nothing written).
# The cluster backend, whose channels may span several slots, sets the mark itself (SET NX PX),
# then runs this once per slot with ARGV[6] = 0.
PUBLISH_SCRIPT = """
local event, command, maxlen, trim, fresh = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local window = tonumber(ARGV[6])
local change = nil
if ARGV[7] ~= '' then change = cjson.decode(ARGV[7]) end
local now, keep = tonumber(ARGV[8]), tonumber(ARGV[9])
""" + APPLY_LUA + """
local first = 1
if window > 0 then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', window) then
    return false
  end
  first = 2
end
local ids = {}
local n = 0
for k = first, #KEYS, 4 do
  n = n + 1
  local channel = ARGV[9 + 2 * n]
  local epoch = redis.call('GET', KEYS[k + 1])
  if not epoch then
    epoch = fresh
    redis.call('SET', KEYS[k + 1], epoch)
  end
  local id = redis.call('XADD', KEYS[k], 'MAXLEN', trim, maxlen, '*', 'e', event)
  if change then apply(KEYS[k + 2], KEYS[k + 3]) end
  redis.call(command, ARGV[8 + 2 * n],
    '{"type":"event","channel":"' .. channel .. '","epoch":"' .. epoch ..
    '","offset":"' .. id .. '","event":' .. event .. '}')
  ids[n] = id
end
return ids
"""

# What a client that last saw (epoch, after) missed, read consistently in one script.
# KEYS: 1 stream, 2 epoch. ARGV: 1 the client's epoch, 2 its offset "<ms>-<seq>", 3 how many
# entries to read, 4 the oldest allowed offset milliseconds ("" for no age limit), 5 a fresh
# epoch in case the channel has none.
# Returns {status, current epoch} or {"ok", current epoch, XRANGE entries}.
REPLAY_SCRIPT = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[2], epoch)
end
if epoch ~= ARGV[1] then return {'epoch_changed', epoch} end
local function id(s)
  local dash = string.find(s, '-', 1, true)
  return {tonumber(string.sub(s, 1, dash - 1)), tonumber(string.sub(s, dash + 1))}
end
local function older(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local after = id(ARGV[2])
-- "0-0": a client that saw no event yet; any other offset was an entry of this epoch.
local seen = older({0, 0}, after)
if seen and ARGV[4] ~= '' and after[1] < tonumber(ARGV[4]) then return {'too_old', epoch} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if seen then return {'trimmed', epoch} end
  return {'ok', epoch, {}}
end
local raw = redis.call('XINFO', 'STREAM', KEYS[1])
local info = {}
for i = 1, #raw, 2 do info[raw[i]] = raw[i + 1] end
-- Trimming drops the oldest entries and records no id of them (Redis 7.0 updates
-- max-deleted-entry-id on XDEL only): an offset older than the oldest kept entry may have had
-- dropped entries after it. A seen offset older than it that was never dropped means the stream
-- itself was lost and recreated under the same epoch: its entries are gone too.
local lost = tonumber(info['entries-added']) > tonumber(info['length'])
if older(after, id(info['max-deleted-entry-id'])) then return {'trimmed', epoch} end
local head = info['first-entry']
if head then
  if older(after, id(head[1])) and (seen or lost) then return {'trimmed', epoch} end
elseif older(after, id(info['last-generated-id'])) then
  return {'trimmed', epoch}
end
return {'ok', epoch, redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])}
"""

# A channel's position: its epoch (created if missing, as a publish would) and the id of the
# newest entry ever added to its stream ("0-0" when it has none), read in one script.
# KEYS: 1 stream, 2 epoch. ARGV: 1 a fresh epoch in case the channel has none.
POSITION_SCRIPT = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {epoch, '0-0'} end
local raw = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #raw, 2 do
  if raw[i] == 'last-generated-id' then return {epoch, raw[i + 1]} end
end
return {epoch, '0-0'}
"""

# A page of history, read with its epoch in one script.
# KEYS: 1 stream, 2 epoch. ARGV: 1 XRANGE start ("-", or "(<offset>"), 2 how many entries, 3 a
# fresh epoch in case the channel has entries but no epoch.
# Returns {epoch, XRANGE entries}; {"", {}} when there is no entry (no epoch is created then).
HISTORY_SCRIPT = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #entries == 0 then return {'', entries} end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
end
return {epoch, entries}
"""


def publish_keys_and_args(
    prefix: str,
    channels: Sequence[str],
    event_json: bytes,
    *,
    history_length: int,
    event_id: str | None,
    dedup_ms: int,
    sharded: bool = False,
    change: Change | None = None,
    now: float | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of :data:`PUBLISH_SCRIPT` for one event.

    ``sharded``: publish with SPUBLISH on the channels' shard channels instead of PUBLISH.
    ``change``: applied to each channel's state; ``now`` (Unix time, default the clock) is the
    end time a tombstone records.
    """
    keys = [seen_key(prefix, event_id)] if event_id is not None else []
    names: list[str] = []
    for channel in channels:
        keys += (stream_key(prefix, channel), epoch_key(prefix, channel),
                 state_key(prefix, channel), ended_key(prefix, channel))
        names += (pubsub_channel(prefix, channel, sharded=sharded), channel)
    # MAXLEN ~ 0 would still keep a node's worth of entries: no history means exactly none.
    trim = "~" if history_length else "="
    window = max(dedup_ms, 1) if event_id is not None else 0
    command = "SPUBLISH" if sharded else "PUBLISH"
    args: list[Any] = [event_json, command, history_length, trim, new_epoch(), window,
                       *change_args(change, now), *names]
    return keys, args


def channel_keys(prefix: str, channel: str) -> list[str]:
    """KEYS of :data:`HISTORY_SCRIPT`, :data:`REPLAY_SCRIPT` and :data:`POSITION_SCRIPT`: the
    stream, then the epoch."""
    return [stream_key(prefix, channel), epoch_key(prefix, channel)]


def snapshot_keys(prefix: str, channel: str) -> list[str]:
    """KEYS of :data:`bridge.brokers.redis.state.SNAPSHOT_SCRIPT`: the stream, the epoch, the
    state."""
    return [*channel_keys(prefix, channel), state_key(prefix, channel)]


def parse_position(reply: Any) -> tuple[str, str]:
    """``(epoch, offset)`` of a :data:`POSITION_SCRIPT` reply."""
    epoch, offset = (v.decode() if isinstance(v, bytes) else str(v) for v in reply)
    return epoch, offset


def history_args(after: str | None, limit: int) -> list[Any]:
    """ARGV of :data:`HISTORY_SCRIPT`; ValueError on a malformed offset."""
    if after is not None:
        offset_key(after)  # ValueError on a malformed offset, as in every backend
    return ["-" if after is None else "(" + after, limit, new_epoch()]


def parse_history(channel: str, reply: Any) -> list[tuple[str, bytes]]:
    """``(offset, frame)`` pairs of a :data:`HISTORY_SCRIPT` reply."""
    epoch, entries = reply
    return entries_to_items(channel, epoch.decode(), entries) if entries else []


def replay_args(epoch: str, after: str, limit: int, oldest_ms: int | None) -> list[Any]:
    """ARGV of :data:`REPLAY_SCRIPT`; ValueError on a malformed offset."""
    if not OFFSET_RE.fullmatch(after):
        raise ValueError(f"invalid offset {after!r}")
    return [epoch, after, max(limit, 0) + 1, "" if oldest_ms is None else oldest_ms, new_epoch()]


def entries_to_items(channel: str, epoch: str, entries: Any) -> list[tuple[str, bytes]]:
    """``(offset, frame)`` pairs of XRANGE entries (stream id, ``[b"e", json]``)."""
    items = []
    for raw_id, fields in entries:
        if isinstance(fields, dict):
            event_json = fields.get(b"e")
        else:  # the flat field/value list a script returns
            pairs = dict(zip(fields[::2], fields[1::2]))
            event_json = pairs.get(b"e")
        if event_json is not None:
            offset = raw_id.decode()
            items.append((offset, envelope(channel, epoch, offset, event_json)))
    return items


def parse_replay(channel: str, reply: Any, limit: int) -> Replay:
    """The :class:`Replay` of a :data:`REPLAY_SCRIPT` reply read with ``limit`` + 1 entries."""
    status = ReplayStatus(reply[0].decode())
    epoch = reply[1].decode()
    if status is not ReplayStatus.OK:
        return Replay(status, epoch)
    items = entries_to_items(channel, epoch, reply[2])
    limit = max(limit, 0)
    return Replay(status, epoch, items[:limit], len(items) <= limit)


_HEAD = b'{"type":"event","channel":"'
_EPOCH = b'","epoch":"'
_MID = b'","offset":"'
_TAIL = b'","event":'
_OFFSET = re.compile(OFFSET_RE.pattern.encode())
_EPOCH_B = re.compile(EPOCH_RE.pattern.encode())


def frame_offset(frame: bytes, channel: bytes) -> str | None:
    """The offset inside an envelope frame of ``channel``, or None if it is not one.

    Reads the fixed positions after ``"epoch":"`` and ``"offset":"`` instead of parsing the
    JSON: the envelope starts with a known header, and channel names, epochs and offsets need
    no escaping.
    """
    at = len(_HEAD) + len(channel)
    if not (
        frame.startswith(_HEAD)
        and frame.startswith(channel, len(_HEAD))
        and frame.startswith(_EPOCH, at)
        and frame.endswith(b"}")
    ):
        return None
    at += len(_EPOCH)
    end = frame.find(b'"', at, at + 33)
    if end < 0 or not _EPOCH_B.fullmatch(frame, at, end) or not frame.startswith(_MID, end):
        return None
    at = end + len(_MID)
    end = frame.find(b'"', at, at + 42)
    if end < 0 or not _OFFSET.fullmatch(frame, at, end) or not frame.startswith(_TAIL, end):
        return None
    return frame[at:end].decode()


def display_url(url: str) -> str:
    """``scheme://host:port/db`` of a Redis URL, never its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    db = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    return f"{parts.scheme}://{host}:{parts.port or 6379}/{db}"

