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

Patterns are checked at two strengths. :func:`is_valid_pattern` is what a token's signature
vouches for: any pattern of the alphabet, matched as :func:`granted` says; it decides whether
an issued token is accepted, so it never tightens. :func:`pattern_problem` is the rule for new
patterns (``callbridge token``): no empty segment, and ``*``/``**`` only as whole segments, so
a pattern grants what it reads as; :func:`pattern_warnings` names patterns that are well formed
but probably not meant (every tenant, a channel kind callbridge never publishes).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Iterable
from urllib.parse import unquote

SEGMENT_SAFE = re.compile(r"[A-Za-z0-9_.+\-]+")
CHANNEL_RE = re.compile(r"[A-Za-z0-9_.+\-%]+(:[A-Za-z0-9_.+\-%]+)*")
PATTERN_RE = re.compile(r"[A-Za-z0-9_.+\-%:*?]+")
MAX_CHANNEL_LENGTH = 200
#: The channel kinds callbridge publishes, and how many segments their names have.
KINDS: dict[str, tuple[int, ...]] = {"calls": (2, 3), "system": (2,), "presence": (2,),
                                     "verifications": (2,)}
_SHAPES = {"calls": "calls:<tenant> or calls:<tenant>:<extension>"}
_WILDCARD_SEGMENTS = ("*", "**")


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


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a well-formed pattern for a new token, or None when it is.

    Stricter than :func:`is_valid_pattern`: every segment is non-empty, and a ``*`` stands for
    a whole segment (``*``: one segment, ``**``: any number of them). ``?`` may stand for one
    character inside a segment.
    """
    if not pattern:
        return "a pattern may not be empty: e.g. calls:acme:*"
    if len(pattern) > MAX_CHANNEL_LENGTH:
        return f"a pattern is at most {MAX_CHANNEL_LENGTH} characters"
    if PATTERN_RE.fullmatch(pattern) is None:
        return ("a pattern is made of A-Z a-z 0-9 _ . + - %, the wildcards * and ?, and ':' "
                "between segments: e.g. calls:acme:*")
    segments = pattern.split(":")
    if "" in segments:
        return "a segment is empty: segments are separated by one ':', e.g. calls:acme:1001"
    for part in segments:
        if "*" in part and part not in _WILDCARD_SEGMENTS:
            return ("'*' stands for a whole segment: calls:acme:* or calls:*:1001 "
                    "('**' for any number of segments: calls:acme:**)")
    return None


def pattern_warnings(pattern: str) -> list[str]:
    """What looks unintended in the well-formed ``pattern``: it grants every tenant, names a
    channel kind callbridge never publishes, or cannot match any channel it publishes."""
    segments = pattern.split(":")
    kind = segments[0]
    warnings = []
    if pattern == "*":
        return ["'*' matches one segment and every channel has two or three: '**' grants every "
                "channel of every tenant, calls:acme:* every extension of tenant acme"]
    if kind == "**":
        warnings.append("it grants every channel of every tenant (one tenant: e.g. *:acme and "
                        "calls:acme:*)")
    elif len(segments) > 1 and segments[1] in _WILDCARD_SEGMENTS:
        one = ":".join([kind, "acme", *segments[2:]])
        warnings.append(f"it grants the channels of every tenant (one tenant: e.g. {one})")
    if not any(ch in kind for ch in "*?%") and kind not in KINDS:
        close = difflib.get_close_matches(kind, list(KINDS), n=1)
        hint = (f"; did you mean {':'.join([close[0], *segments[1:]])}?" if close else
                f" (kinds: {', '.join(KINDS)})")
        warnings.append(f"callbridge publishes no '{kind}' channels{hint}")
    elif "**" not in segments:
        counts = KINDS.get(kind, (2, 3))
        if len(segments) not in counts:
            shape = _SHAPES.get(kind, f"{kind}:<tenant>" if kind in KINDS else
                                "<kind>:<tenant> or calls:<tenant>:<extension>")
            warnings.append(f"it matches no channel callbridge publishes (channels: {shape})")
    return warnings


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
