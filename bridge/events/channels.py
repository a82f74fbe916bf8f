"""Channel names, and the glob patterns tokens use to grant them.

Channels are logical names shared by Redis pub/sub (behind a configurable key prefix) and the
websocket protocol:

- ``calls:<tenant>``: every call event of a tenant
- ``calls:<tenant>:<extension>``: the events of one extension's legs
- ``system:<tenant>``: callbridge's notices about the tenant's upstream links
- ``presence:<tenant>``: extensions coming online and going offline
- ``verifications:<tenant>``: outcomes of verification (flash) calls

Segments are made of ``[A-Za-z0-9_.+-]``; any other character of an upstream value is written
as ``%XX`` (UTF-8 bytes), so names never need JSON escaping and a ``:`` can never appear inside a
segment.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable
from urllib.parse import unquote

SEGMENT_SAFE = re.compile(r"[A-Za-z0-9_.+\-]+")
CHANNEL_RE = re.compile(r"[A-Za-z0-9_.+\-%]+(:[A-Za-z0-9_.+\-%]+)*")
PATTERN_RE = re.compile(r"[A-Za-z0-9_.+\-%:*?]+")
MAX_CHANNEL_LENGTH = 200


def segment(value: str) -> str:
    """Escape one name segment (tenant, extension) into the channel alphabet."""
    if SEGMENT_SAFE.fullmatch(value):
        return value
    out = []
    for ch in value:
        if SEGMENT_SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode())
    return "".join(out)


def tenant_calls(tenant: str) -> str:
    return f"calls:{segment(tenant)}"


def extension_calls(tenant: str, extension: str) -> str:
    return f"calls:{segment(tenant)}:{segment(extension)}"


def extension_of(channel: str) -> str | None:
    """The extension of a ``calls:<tenant>:<extension>`` channel, its ``%XX`` escapes decoded
    (the inverse of :func:`extension_calls`); None for any other channel."""
    parts = channel.split(":")
    if len(parts) != 3 or parts[0] != "calls":
        return None
    return unquote(parts[2])


def system(tenant: str) -> str:
    return f"system:{segment(tenant)}"


def presence(tenant: str) -> str:
    return f"presence:{segment(tenant)}"


def verifications(tenant: str) -> str:
    return f"verifications:{segment(tenant)}"


def is_valid_channel(name: str) -> bool:
    return len(name) <= MAX_CHANNEL_LENGTH and CHANNEL_RE.fullmatch(name) is not None


def is_valid_pattern(pattern: str) -> bool:
    return len(pattern) <= MAX_CHANNEL_LENGTH and PATTERN_RE.fullmatch(pattern) is not None


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.split(r"(\*\*|\*|\?)", pattern):
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^:]*")
        elif token == "?":
            parts.append("[^:]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


def granted(channel: str, patterns: Iterable[str]) -> bool:
    """True when ``channel`` matches one of ``patterns``.

    ``*`` matches any run of characters within one ``:``-separated segment, ``?`` one character
    of a segment, ``**`` anything, ``:`` included. So ``calls:acme:*`` grants every extension
    channel of tenant ``acme`` but neither ``calls:acme`` nor another tenant's channels;
    ``calls:acme*`` grants ``calls:acme`` and ``calls:acme2`` but no extension channel;
    ``calls:**`` grants every call channel. Matching is case-sensitive.
    """
    return any(_compile(p).fullmatch(channel) is not None for p in patterns)
