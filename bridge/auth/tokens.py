"""Client tokens: HS256 JWTs that name a subject and the channel patterns it may read.

A token carries ``sub`` (who), ``channels`` (a non-empty list of glob patterns, see
:func:`bridge.events.channels.granted`), ``exp`` (required), ``iat`` and ``jti``. Only HS256 is
accepted: ``none`` and every other algorithm are refused before any claim is looked at.

Pure code: no I/O, the clock is a parameter. Error messages are fixed strings; they never
contain the token, a claim value or the secret.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import jwt

from bridge.events.channels import is_valid_pattern

ALGORITHM = "HS256"
#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (32 bytes).
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: read the channels matching ``channels`` until ``expires_at``."""

    sub: str
    channels: tuple[str, ...]
    expires_at: float  # unix seconds
    token_id: str | None


class AuthError(Exception):
    """A token was refused. ``reason`` is one of :data:`REASONS`; the message is safe to log."""

    REASONS = ("malformed", "bad_signature", "expired", "invalid_claims")

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_secret(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"jwt secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def mint(
    secret: str,
    *,
    sub: str,
    channels: Sequence[str],
    ttl: float = 3600,
    token_id: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token for ``sub`` granting ``channels``, valid for ``ttl`` seconds from ``now``.

    Raises ValueError for an empty ``sub``, no channels, an invalid pattern, a non-positive
    ``ttl`` or a secret shorter than :data:`MIN_SECRET_BYTES`.
    """
    key = _check_secret(secret)
    if not sub:
        raise ValueError("sub must not be empty")
    if isinstance(channels, str):
        raise ValueError("channels must be a sequence of patterns, not one string")
    patterns = list(channels)
    if not patterns:
        raise ValueError("at least one channel pattern is required")
    bad = [p for p in patterns if not is_valid_pattern(p)]
    if bad:
        raise ValueError(f"invalid channel pattern(s): {', '.join(map(repr, bad))}")
    if not ttl > 0:
        raise ValueError("ttl must be positive")
    issued = time.time() if now is None else now
    claims = {
        "sub": sub,
        "channels": patterns,
        "iat": int(issued),
        "exp": math.ceil(issued + ttl),
        "jti": token_id if token_id is not None else uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(secret: str, token: str, *, leeway: float = 5.0, now: float | None = None) -> Grant:
    """The :class:`Grant` of ``token``, or :class:`AuthError`.

    ``leeway`` seconds of clock skew are allowed on ``exp``, ``nbf`` and ``iat``.
    """
    key = _check_secret(secret)
    if not isinstance(token, str) or token.count(".") != 2:
        raise AuthError("malformed", "token is not a compact JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed", "token header is not decodable") from None
    if header.get("alg") != ALGORITHM:
        raise AuthError("bad_signature", f"token algorithm is not {ALGORITHM}")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            # Time claims are checked below against the injectable clock.
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature", "token signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("bad_signature", f"token algorithm is not {ALGORITHM}") from None
    except jwt.DecodeError:
        raise AuthError("malformed", "token is not decodable") from None
    except jwt.PyJWTError:
        raise AuthError("invalid_claims", "token claims are invalid") from None
    return _grant(claims, time.time() if now is None else now, leeway)


def _numeric(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthError("invalid_claims", f"claim {name!r} must be a number")
    return float(value)


def _grant(claims: dict[str, Any], now: float, leeway: float) -> Grant:
    exp = _numeric(claims, "exp")
    if exp is None:
        raise AuthError("invalid_claims", "claim 'exp' is required")
    nbf = _numeric(claims, "nbf")
    iat = _numeric(claims, "iat")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("invalid_claims", "claim 'sub' must be a non-empty string")
    channels = claims.get("channels")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(p, str) and is_valid_pattern(p) for p in channels)
    ):
        raise AuthError("invalid_claims", "claim 'channels' must be a non-empty list of patterns")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise AuthError("invalid_claims", "claim 'jti' must be a string")
    if nbf is not None and nbf > now + leeway:
        raise AuthError("invalid_claims", "token is not valid yet")
    if iat is not None and iat > now + leeway:
        raise AuthError("invalid_claims", "token is issued in the future")
    if exp <= now - leeway:
        raise AuthError("expired", "token has expired")
    return Grant(sub=sub, channels=tuple(channels), expires_at=exp, token_id=jti)
