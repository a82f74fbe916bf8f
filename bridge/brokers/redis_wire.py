"""The Redis wire format of callbridge's broker (pure): the publish script, frame parsing, URLs.

Kept apart from :mod:`bridge.brokers.redis` so the format can be read, and tested, on its own.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

# KEYS: the streams; ARGV: maxlen, event JSON, pub/sub prefix, then each key's channel name.
# Only KEYS are keys, so a cluster backend can run the same script once per hash slot.
PUBLISH_SCRIPT = """
local maxlen, event, prefix = ARGV[1], ARGV[2], ARGV[3]
local ids = {}
for i, key in ipairs(KEYS) do
  local channel = ARGV[3 + i]
  local id = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'e', event)
  redis.call('PUBLISH', prefix .. channel,
    '{"type":"event","channel":"' .. channel .. '","offset":"' .. id .. '","event":' .. event .. '}')
  ids[i] = id
end
return ids
"""

_HEAD = b'{"type":"event","channel":"'
_MID = b'","offset":"'
_TAIL = b'","event":'
_OFFSET = re.compile(rb"[0-9]{1,20}-[0-9]{1,20}")


def frame_offset(frame: bytes, channel: bytes) -> str | None:
    """The offset inside an envelope frame of ``channel``, or None if it is not one.

    Reads the fixed position after ``"offset":"`` instead of parsing the JSON: the envelope
    starts with a known header, and channel names and offsets need no escaping.
    """
    start = len(_HEAD) + len(channel) + len(_MID)
    if not (
        frame.startswith(_HEAD)
        and frame.startswith(channel, len(_HEAD))
        and frame.startswith(_MID, start - len(_MID))
        and frame.endswith(b"}")
    ):
        return None
    end = frame.find(b'"', start, start + 42)
    if end < 0 or not _OFFSET.fullmatch(frame, start, end) or not frame.startswith(_TAIL, end):
        return None
    return frame[start:end].decode()


def display_url(url: str) -> str:
    """``scheme://host:port/db`` of a Redis URL, never its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    db = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    return f"{parts.scheme}://{host}:{parts.port or 6379}/{db}"
