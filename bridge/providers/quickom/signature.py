"""The ``Signature`` header of Quickom webhooks: pure code, no I/O.

Quickom signs ``call_id + start_time + end_time + customer_id + member_id`` with HMAC-SHA256
under the enterprise's signing secret. The document does not say how numbers become text, so
callbridge uses the rule a JavaScript or PHP sender produces when concatenating the JSON values
it sends (see :func:`field_text`); docs/providers/quickom.md states it for integrators.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any


class UnsignableField(ValueError):
    """A signed field holds a value with no agreed text form (object, list, boolean)."""


def field_text(value: Any) -> str:
    """The text of one signed field.

    - strings as they are (no trimming, no case change);
    - missing or null: the empty string;
    - integers in decimal, no sign for positives, no exponent, no separators;
    - floats with an integral value (``1700000000.0``) as that integer (``1700000000``), as
      JavaScript's ``String(n)`` and PHP's string conversion write them (below 1e21);
    - other finite floats in their shortest round-trip form (Python ``repr``, which is what
      JavaScript writes between 1e-6 and 1e16);
    - booleans, objects, lists, NaN and infinities: :class:`UnsignableField`.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        raise UnsignableField("a boolean has no agreed text form")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsignableField("not a finite number")
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    raise UnsignableField(f"a {type(value).__name__} has no agreed text form")


def _nested(body: dict[str, Any], section: str, key: str) -> Any:
    part = body.get(section)
    return part.get(key) if isinstance(part, dict) else None


def signing_text(body: dict[str, Any]) -> str:
    """``call_id + start_time + end_time + customer_id + member_id`` of a webhook body."""
    return "".join(field_text(v) for v in (
        body.get("call_id"), body.get("start_time"), body.get("end_time"),
        _nested(body, "customer_info", "customer_id"), _nested(body, "callee_info", "member_id"),
    ))


def sign(secret: str, body: dict[str, Any]) -> str:
    """The lowercase hex HMAC-SHA256 of :func:`signing_text` under ``secret``."""
    return hmac.new(secret.encode(), signing_text(body).encode(), hashlib.sha256).hexdigest()


def verify(secret: str, body: dict[str, Any], header: str | None) -> bool:
    """Whether ``header`` carries the body's signature (hex, any case; constant-time compare).

    False for a missing header and for a body whose signed fields cannot be written as text.
    """
    if not header:
        return False
    try:
        expected = sign(secret, body)
    except UnsignableField:
        return False
    given = header.strip().lower().encode("ascii", "replace")
    return hmac.compare_digest(given, expected.encode())
