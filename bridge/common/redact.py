"""Keep secrets out of logs, errors and metric labels.

Every secret callbridge learns (configured app secrets, SIP passwords, the JWT key, and every
auth token fetched at run time) is registered here with :func:`register`; :func:`redact`
replaces each registered value, and anything shaped like a bearer token or a JWT, with
``[redacted]``. :class:`RedactingFilter` applies it to every log record, including arguments
and exception text, so a server that echoes a token in its error cannot leak it through us.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "[redacted]"
_MIN_SECRET = 4  # shorter values would mask ordinary words; config rejects such secrets anyway

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_KEYED = re.compile(
    r"(?i)((?:auth_token|app_secret|api_key|api_secret|password|sipPassword|secret|token)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\"'\s,;&}]{4,})"
)

_lock = threading.Lock()
_LIMIT = 10_000  # run-time tokens rotate; keep the newest only
_secrets: dict[str, None] = {}  # ordered set, oldest first (for eviction)
#: Registered secrets by their first four characters, longest first. A new secret replaces its
#: list (never mutates one), so :func:`redact` reads without the lock.
_by_prefix: dict[str, list[str]] = {}


def register(secret: str | None) -> None:
    """Mask ``secret`` from now on wherever :func:`redact` runs.

    Constant time whatever the number of secrets: an instance with hundreds of upstream apps
    registers thousands of values (secrets, app hashes, every token it fetches).
    """
    if not secret or len(secret) < _MIN_SECRET:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets[secret] = None
        _index(secret, add=True)
        while len(_secrets) > _LIMIT:
            oldest = next(iter(_secrets))
            del _secrets[oldest]
            _index(oldest, add=False)


def _index(secret: str, *, add: bool) -> None:
    key = secret[:_MIN_SECRET]
    others = [s for s in _by_prefix.get(key, ()) if s != secret]
    if add:
        others.append(secret)
        others.sort(key=len, reverse=True)
    if others:
        _by_prefix[key] = others
    else:
        _by_prefix.pop(key, None)


def _mask_registered(text: str) -> str:
    """Replace every registered secret in ``text``, leftmost first, the longest at a place.

    One dictionary lookup per character: the cost follows the text, not the number of secrets.
    """
    index = _by_prefix
    if not index or len(text) < _MIN_SECRET:
        return text
    parts: list[str] = []
    start = i = 0
    last = len(text) - _MIN_SECRET
    while i <= last:
        candidates = index.get(text[i:i + _MIN_SECRET])
        if candidates:
            for secret in candidates:
                if text.startswith(secret, i):
                    parts += (text[start:i], MASK)
                    i = start = i + len(secret)
                    break
            else:
                i += 1
        else:
            i += 1
    if not parts:
        return text
    parts.append(text[start:])
    return "".join(parts)


def redact(text: str) -> str:
    """``text`` with every registered secret and token-shaped value replaced by ``[redacted]``."""
    text = _mask_registered(text)
    text = _JWT.sub(MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return _KEYED.sub(lambda m: m.group(1) + MASK, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (arguments and exception included) through redact()."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.stack_info:
            message += "\n" + record.stack_info
            record.stack_info = None
        record.msg = redact(message)
        record.args = None
        record.exc_text = None
        return True
