"""API tokens: HS256 JWTs with audience ``callbridge-api``, scopes and tenant patterns.

They are distinct from the websocket tokens of :mod:`bridge.auth.tokens` (which carry no audience), so
neither kind is accepted in place of the other.

Scopes: ``calls:read`` (call details, CDR lookup, recordings), ``calls:dial`` (click-to-call),
``verifications:write`` (start a verification call), ``admin`` (everything, and the ``/admin``
operations API of :mod:`bridge.admin.api`).
"""

from __future__ import annotations

import time
import uuid
from typing import Sequence

import jwt

from bridge.api.endpoints import ApiError, Principal
from bridge.events.channels import is_valid_pattern

AUDIENCE = "callbridge-api"
SCOPES = frozenset({"calls:read", "calls:dial", "verifications:write", "admin"})


def mint_api(secret: str, *, sub: str, scopes: Sequence[str], tenants: Sequence[str] = ("*",),
             ttl: float = 3600.0, now: float | None = None) -> str:
    unknown = sorted(set(scopes) - SCOPES)
    if not sub or not scopes or unknown:
        raise ValueError(f"a sub and known scopes are required (unknown: {unknown})")
    bad = [t for t in tenants if not is_valid_pattern(t)]
    if not tenants or bad:
        raise ValueError(f"invalid tenant pattern(s): {bad}")
    issued = time.time() if now is None else now
    claims = {"sub": sub, "aud": AUDIENCE, "scopes": sorted(set(scopes)),
              "tenants": list(tenants), "iat": int(issued), "exp": int(issued + ttl),
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_api(secret: str, authorization: str | None, *, leeway: float = 5.0) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header, or ApiError 401."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "an Authorization: Bearer <api token> is required")
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=["HS256"], audience=AUDIENCE,
                            leeway=leeway, options={"require": ["exp", "sub", "aud"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the API token has expired") from None
    except jwt.PyJWTError:
        raise ApiError(401, "invalid_token", "the API token is not valid") from None
    scopes, tenants = claims.get("scopes"), claims.get("tenants", ["*"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes) \
            or not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise ApiError(401, "invalid_token", "the API token's claims are malformed")
    return Principal(sub=str(claims["sub"]), scopes=frozenset(scopes), tenants=tuple(tenants))
