"""The identity provider's public keys, each pinned to one algorithm: pure code.

A key is used only with its own algorithm, and only for an algorithm of
:data:`~bridge.config.model.PUBLIC_KEY_ALGORITHMS`: an RSA public key can never serve as an
HMAC secret (HS256 is verified with ``jwt_secret`` alone), and ``none`` is never accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import jwt
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from bridge.config.model import (
    PUBLIC_KEY_ALGORITHMS,
    key_algorithm,
    load_public_key,
    public_key_text,
)

#: The algorithm a JWK without ``alg`` is used with, by its key type (and curve).
_IMPLIED_ALG: dict[tuple[Any, Any], str] = {
    ("RSA", None): "RS256", ("EC", "P-256"): "ES256", ("OKP", "Ed25519"): "EdDSA"}
#: The most keys kept from one JWKS document (a larger one is cut, not refused).
MAX_JWKS_KEYS = 100


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One verification key: ``kid`` (empty: none), the algorithm it is pinned to, the key."""

    kid: str
    alg: str
    key: PublicKeyTypes


def configured(items: Iterable[str]) -> tuple[PublicKey, ...]:
    """The ``public_keys`` of a validated ``[auth]`` (PEM text or file paths): keys without a
    ``kid``, each pinned to the algorithm of its type."""
    return tuple(PublicKey("", *load_public_key(public_key_text(item))) for item in items)


def parse_jwks(document: bytes) -> tuple[PublicKey, ...]:
    """The usable signing keys of a JWKS document; ValueError when it is not one.

    A key is skipped when it is for encryption (``use`` = ``enc``), of an algorithm or type
    callbridge does not verify with, or unreadable; a document with keys but none usable is
    still a valid answer (an empty key set).
    """
    try:
        body = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the JWKS is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ValueError("the JWKS has no \"keys\" list")
    found = []
    for jwk in body["keys"][:MAX_JWKS_KEYS]:
        key = _from_jwk(jwk)
        if key is not None:
            found.append(key)
    return tuple(found)


def _from_jwk(jwk: Any) -> PublicKey | None:
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    alg = jwk.get("alg") or _IMPLIED_ALG.get((kty, None if kty == "RSA" else crv))
    if alg not in PUBLIC_KEY_ALGORITHMS or "d" in jwk:  # a private key is never loaded
        return None
    kid = jwk.get("kid", "")
    try:
        parsed = jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(kid, str) or not _fits(parsed.key, alg):
        return None
    return PublicKey(kid, alg, parsed.key)


def _fits(key: Any, alg: str) -> bool:
    """Whether ``key`` is a public key whose type and size are those of ``alg``."""
    try:
        return key_algorithm(key) == alg
    except ValueError:  # a private or symmetric key, a short RSA key, another curve
        return False
