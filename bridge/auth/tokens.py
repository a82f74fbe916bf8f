"""callbridge's JWTs: HS256 tokens of two audiences, checked by one decode path.

(The identity provider's tokens, signed with public keys, go through the same :func:`decode`;
:mod:`bridge.auth.verifier` picks the key.)

Client tokens (the ``/ws`` endpoint) carry no audience: ``sub`` (who), ``channels`` (a
non-empty list of glob patterns, see :func:`bridge.events.channels.granted`), ``exp``
(required), ``iat`` and ``jti``. API tokens (the HTTP API) carry ``aud`` = :data:`AUDIENCE`,
``sub``, ``scopes`` (from :data:`SCOPES`), ``tenants`` (patterns), ``exp``, ``iat`` and ``jti``.
A client token has no ``aud`` and an API token always has one, so neither kind is accepted in
place of the other.

Each key is used with one algorithm only: ``none`` and every other algorithm are refused
before any claim is looked at. Secrets shorter than :data:`MIN_SECRET_BYTES` are refused for
both kinds.

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

from bridge.config.model import API_AUDIENCE, API_SCOPES
from bridge.events.channels import granted, is_valid_pattern

ALGORITHM = "HS256"
#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (32 bytes).
MIN_SECRET_BYTES = 32
#: The ``aud`` of API tokens.
AUDIENCE = API_AUDIENCE
#: What an API token may be granted: ``calls:read`` (call details, CDR lookup, recordings),
#: ``calls:dial`` (click-to-call), ``verifications:write`` (start a verification call),
#: ``admin`` (everything, and the ``/admin`` operations API of :mod:`bridge.admin.api`).
SCOPES = frozenset(API_SCOPES)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified client token allows: read the channels matching ``channels`` until
    ``expires_at``."""

    sub: str
    channels: tuple[str, ...]
    expires_at: float  # unix seconds
    token_id: str | None


@dataclass(frozen=True)
class Principal:
    """Who called the API: the API token's subject, scopes and the tenants it may act for."""

    sub: str
    scopes: frozenset[str]
    tenants: tuple[str, ...]

    def may_act_for(self, tenant: str) -> bool:
        return granted(tenant, self.tenants)


class AuthError(Exception):
    """A token was refused. ``reason`` is one of :data:`REASONS`; the message is safe to log.

    ``missing``: no ``Bearer`` credentials at all (API tokens); ``malformed``: not a compact
    JWT; ``bad_signature``: wrong key or algorithm; ``expired``: past ``exp`` and the leeway;
    ``invalid_claims``: a registered claim (``exp``, ``nbf``, ``iat``, ``sub``, ``jti``,
    ``aud``, ``iss``) or the channels of a client token are wrong; ``malformed_claims``: an
    API token whose ``scopes`` or ``tenants`` are not lists of strings; ``unknown_key``: no
    key has the token's ``kid``, even after the JWKS was fetched again; ``unavailable``: the
    key may exist but the JWKS could not be fetched: the client should retry later.
    """

    REASONS = ("missing", "malformed", "bad_signature", "expired", "invalid_claims",
               "malformed_claims", "unknown_key", "unavailable")

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _key(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"jwt secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


def _sign(key: bytes, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def mint(
    secret: str,
    *,
    sub: str,
    channels: Sequence[str],
    ttl: float = 3600,
    token_id: str | None = None,
    now: float | None = None,
) -> str:
    """A signed client token for ``sub`` granting ``channels``, valid for ``ttl`` seconds from
    ``now``.

    Raises ValueError for an empty ``sub``, no channels, an invalid pattern, a non-positive
    ``ttl`` or a secret shorter than :data:`MIN_SECRET_BYTES`.
    """
    key = _key(secret)
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
    return _sign(key, {
        "sub": sub,
        "channels": patterns,
        "iat": int(issued),
        "exp": math.ceil(issued + ttl),
        "jti": token_id if token_id is not None else uuid.uuid4().hex,
    })


def mint_api(secret: str, *, sub: str, scopes: Sequence[str], tenants: Sequence[str] = ("*",),
             ttl: float = 3600.0, now: float | None = None) -> str:
    """A signed API token for ``sub`` with ``scopes`` over ``tenants``, valid for ``ttl``
    seconds from ``now``.

    Raises ValueError for an empty ``sub``, no or unknown scopes, no or invalid tenant
    patterns, or a secret shorter than :data:`MIN_SECRET_BYTES`.
    """
    key = _key(secret)
    unknown = sorted(set(scopes) - SCOPES)
    if not sub or not scopes or unknown:
        raise ValueError(f"a sub and known scopes are required (unknown: {unknown})")
    bad = [t for t in tenants if not is_valid_pattern(t)]
    if not tenants or bad:
        raise ValueError(f"invalid tenant pattern(s): {bad}")
    issued = time.time() if now is None else now
    return _sign(key, {"sub": sub, "aud": AUDIENCE, "scopes": sorted(set(scopes)),
                       "tenants": list(tenants), "iat": int(issued), "exp": int(issued + ttl),
                       "jti": uuid.uuid4().hex})


def verify(secret: str, token: str, *, leeway: float = 5.0, now: float | None = None) -> Grant:
    """The :class:`Grant` of client token ``token``, or :class:`AuthError`.

    ``leeway`` seconds of clock skew are allowed on ``exp``, ``nbf`` and ``iat``.
    """
    verified = _decode(secret, token, None)
    channels = verified.claims.get("channels")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(p, str) and is_valid_pattern(p) for p in channels)
    ):
        raise AuthError("invalid_claims", "claim 'channels' must be a non-empty list of patterns")
    verified.check_times(time.time() if now is None else now, leeway)
    return Grant(sub=verified.sub, channels=tuple(channels), expires_at=verified.exp,
                 token_id=verified.jti)


def verify_api(secret: str, authorization: str | None, *, leeway: float = 5.0,
               now: float | None = None) -> Principal:
    """The :class:`Principal` of an ``Authorization: Bearer <api token>`` header value, or
    :class:`AuthError` (reason ``missing`` when there is no bearer token at all).

    ``leeway`` seconds of clock skew are allowed on ``exp``, ``nbf`` and ``iat``.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing", "no bearer token")
    verified = _decode(secret, token.strip(), AUDIENCE)
    verified.check_times(time.time() if now is None else now, leeway)
    scopes, tenants = verified.claims.get("scopes"), verified.claims.get("tenants", ["*"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes) \
            or not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise AuthError("malformed_claims", "claims 'scopes' and 'tenants' must be lists of "
                        "strings")
    return Principal(sub=verified.sub, scopes=frozenset(scopes), tenants=tuple(tenants))


@dataclass(frozen=True, slots=True)
class Verified:
    """A token whose signature, audience and registered claim types are checked; its time
    claims are checked by :meth:`check_times`."""

    claims: dict[str, Any]
    sub: str
    exp: float
    nbf: float | None
    iat: float | None
    jti: str | None

    def check_times(self, now: float, leeway: float) -> None:
        if self.nbf is not None and self.nbf > now + leeway:
            raise AuthError("invalid_claims", "token is not valid yet")
        if self.iat is not None and self.iat > now + leeway:
            raise AuthError("invalid_claims", "token is issued in the future")
        if self.exp <= now - leeway:
            raise AuthError("expired", "token has expired")


def _decode(secret: str, token: str, audience: str | None) -> Verified:
    """``token`` with its HS256 signature verified by ``secret`` (see :func:`decode`)."""
    return decode(token, _key(secret), ALGORITHM, audience=audience)


def decode(token: str, key: Any, algorithm: str, *, audience: str | None,
           issuer: str | None = None) -> Verified:
    """``token`` with its signature verified by ``key`` with ``algorithm`` (the only one
    accepted: a header naming another is refused), ``aud`` matching ``audience`` (no ``aud``
    at all when None), ``iss`` equal to ``issuer`` when given, ``exp`` present, the time claims
    numbers, a non-empty string ``sub`` and a string ``jti`` if any; else :class:`AuthError`."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise AuthError("malformed", "token is not a compact JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed", "token header is not decodable") from None
    if header.get("alg") != algorithm:
        raise AuthError("bad_signature", f"token algorithm is not {algorithm}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            # Time claims are checked by Verified.check_times against the injectable clock.
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature", "token signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("bad_signature", f"token algorithm is not {algorithm}") from None
    except jwt.DecodeError:
        raise AuthError("malformed", "token is not decodable") from None
    except jwt.PyJWTError:  # the audience, the issuer, or the type of sub or jti
        raise AuthError("invalid_claims", "token claims are invalid") from None
    exp = _numeric(claims, "exp")
    if exp is None:
        raise AuthError("invalid_claims", "claim 'exp' is required")
    nbf = _numeric(claims, "nbf")
    iat = _numeric(claims, "iat")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("invalid_claims", "claim 'sub' must be a non-empty string")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise AuthError("invalid_claims", "claim 'jti' must be a string")
    return Verified(claims, sub, exp, nbf, iat, jti)


def _numeric(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthError("invalid_claims", f"claim {name!r} must be a number")
    return float(value)
