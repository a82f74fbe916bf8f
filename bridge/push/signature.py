"""The ``Callbridge-Signature`` header of a pushed event: pure code, no I/O.

The header is ``t=<unix seconds>,v1=<hex>[,v1=<hex>...]``: one ``v1`` per configured secret, in
the configured order, each ``HMAC-SHA256(secret, f"{t}.".encode() + body)`` in lower-case hex.
A receiver accepts the request when ``t`` is within its tolerance of its own clock and any one
``v1`` matches a secret it knows; so a secret is rotated by listing the new one next to the old
one, moving the receiver to the new one, then removing the old one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "Callbridge-Signature"
#: Seconds a receiver should accept between ``t`` and its own clock, either way.
DEFAULT_TOLERANCE = 300.0


def digest(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}."`` followed by ``body``, keyed by ``secret``."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: Sequence[bytes], timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp``: one ``v1`` per secret, in order.

    Raises ValueError without a secret (an unsigned push is never sent).
    """
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return ",".join([f"t={timestamp}", *(f"v1={digest(s, timestamp, body)}" for s in secrets)])


def parse(header: str) -> tuple[int, list[str]]:
    """``(t, [v1, ...])`` of a header value; ValueError when ``t`` or every ``v1`` is missing.

    Unknown ``key=value`` items are skipped, so a later scheme (``v2=``) can be added beside
    ``v1`` without breaking receivers.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise ValueError("a signature needs t= and at least one v1=")
    return timestamp, signatures


def verify(body: bytes, header: str, secrets: Sequence[bytes], *, now: float,
           tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """True when ``header`` signs ``body`` with one of ``secrets`` and its ``t`` is within
    ``tolerance`` seconds of ``now`` (a replayed request outside it is refused).

    Never raises for a malformed header (False). Comparisons take constant time.
    """
    try:
        timestamp, signatures = parse(header)
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = [digest(s, timestamp, body) for s in secrets]
    return any(hmac.compare_digest(e, given) for e in expected for given in signatures)
