"""Read the ``expire`` field of an auth-token answer, whatever its unit or format.

AntBuddy does not document ``expire``. :func:`parse_expire` accepts every plausible form and
says which rule it applied (docs/configuration.md, "Token expiry"). Numbers (or numeric strings)
are told apart by magnitude; the bands are whole decades, so no date between 1973 and 5138 in any
of the units is misread:

=====================  ===========  =========================================
value ``v``            rule         expiry
=====================  ===========  =========================================
``0 <= v < 1e9``       ``ttl``      ``now + v`` (seconds to live, < ~31.7 y)
``1e9 <= v < 1e11``    ``unix``     ``v`` (Unix seconds, 2001 .. 5138)
``1e11 <= v < 1e14``   ``unix_ms``  ``v / 1e3``
``1e14 <= v < 1e17``   ``unix_us``  ``v / 1e6``
``1e17 <= v < 1e20``   ``unix_ns``  ``v / 1e9``
ISO 8601 text          ``iso``      that instant (no offset: UTC)
anything else          ``default``  ``now + default_lifetime``
=====================  ===========  =========================================

Pure: no clock is read here. An absolute expiry already in the past stays in the past, so the
caller can see (``expires_at <= now``) that the server's clock or the token is off.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

#: (upper bound exclusive, rule, divisor); a divisor of None means seconds to live.
_BANDS: tuple[tuple[float, str, float | None], ...] = (
    (1e9, "ttl", None),
    (1e11, "unix", 1.0),
    (1e14, "unix_ms", 1e3),
    (1e17, "unix_us", 1e6),
    (1e20, "unix_ns", 1e9),
)
_MAX_TEXT = 64  # longer strings are not a timestamp; do not spend time parsing them


def parse_expire(value: Any, *, now: float, default_lifetime: float) -> tuple[float, str]:
    """Return ``(expires_at, rule)``: Unix seconds of expiry and the rule that read ``value``.

    ``now`` is the wall-clock Unix time the answer arrived. Absent, null, boolean, negative,
    non-finite, out-of-range or unparseable values give ``(now + default_lifetime, "default")``.
    """
    number = _as_number(value)
    if number is not None:
        return _from_number(number, now, default_lifetime)
    if isinstance(value, str) and len(value) <= _MAX_TEXT:
        instant = _from_iso(value.strip())
        if instant is not None:
            return instant, "iso"
    return now + default_lifetime, "default"


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):  # bool is an int subclass; true/false is not an expiry
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and len(value) <= _MAX_TEXT:
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _from_number(number: float, now: float, default_lifetime: float) -> tuple[float, str]:
    if math.isfinite(number) and number >= 0:
        for bound, rule, divisor in _BANDS:
            if number < bound:
                return (now + number if divisor is None else number / divisor), rule
    return now + default_lifetime, "default"


def _from_iso(text: str) -> float | None:
    if not text[:4].isdigit():  # every ISO 8601 date starts with its year
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.timestamp()
