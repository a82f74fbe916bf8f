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
_secrets: dict[str, None] = {}  # ordered set; longest first when compiled
_pattern: re.Pattern[str] | None = None
_LIMIT = 10_000  # run-time tokens rotate; keep the newest only


def register(secret: str | None) -> None:
    """Mask ``secret`` from now on wherever :func:`redact` runs."""
    global _pattern
    if not secret or len(secret) < _MIN_SECRET:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets[secret] = None
        while len(_secrets) > _LIMIT:
            del _secrets[next(iter(_secrets))]
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret and token-shaped value replaced by ``[redacted]``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
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
