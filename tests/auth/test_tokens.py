"""bridge.auth.tokens, client (websocket) tokens: pure tests, the clock passed in."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import jwt
import orjson
import pytest

from bridge.auth.tokens import AuthError, Grant, mint, verify

SECRET = secrets.token_urlsafe(32)
NOW = 1_700_000_000.0


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()


def raw_token(claims: dict[str, Any], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret.encode(), algorithm=alg)


def refused(token: str, reason: str, *, secret: str = SECRET, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify(secret, token, **kw)
    assert info.value.reason == reason
    text = f"{info.value} {info.value!r}"
    assert secret not in text
    assert token not in text
    assert info.value.__cause__ is None  # no chained library error that might echo input
    return info.value


GOOD = {"sub": "crm-1", "channels": ["calls:acme:*"], "exp": int(NOW) + 60}


def test_round_trip() -> None:
    token = mint(SECRET, sub="crm-1", channels=["calls:acme", "calls:acme:*"], ttl=120,
                 token_id="t-1", now=NOW)
    grant = verify(SECRET, token, now=NOW + 1)
    assert grant == Grant(sub="crm-1", channels=("calls:acme", "calls:acme:*"),
                          expires_at=NOW + 120, token_id="t-1")


def test_token_id_is_generated_and_unique() -> None:
    ids = {verify(SECRET, mint(SECRET, sub="a", channels=["system:x"], now=NOW), now=NOW).token_id
           for _ in range(3)}
    assert len(ids) == 3 and all(isinstance(i, str) and i for i in ids)


def test_forged_signature() -> None:
    other = mint(secrets.token_urlsafe(32), sub="crm-1", channels=["calls:*"], now=NOW)
    refused(other, "bad_signature", now=NOW)
    # A genuine token whose payload was swapped for a wider grant.
    genuine = mint(SECRET, sub="crm-1", channels=["calls:acme:1001"], now=NOW)
    head, _, sig = genuine.split(".")
    wider = b64({"sub": "crm-1", "channels": ["*"], "exp": int(NOW) + 60})
    refused(f"{head}.{wider}.{sig}", "bad_signature", now=NOW)


@pytest.mark.parametrize("header", [{"alg": "none", "typ": "JWT"}, {"alg": "None"}, {}])
def test_unsigned_tokens_are_refused(header: dict[str, Any]) -> None:
    refused(f"{b64(header)}.{b64(GOOD)}.", "bad_signature", now=NOW)


def test_other_hmac_algorithm_is_refused() -> None:
    # Correctly signed with the verifier's own key, only the algorithm is wrong.
    long_secret = secrets.token_urlsafe(64)
    token = raw_token(GOOD, secret=long_secret, alg="HS512")
    options = {"verify_exp": False}
    assert jwt.decode(token, long_secret.encode(), algorithms=["HS512"], options=options)["sub"]
    refused(token, "bad_signature", secret=long_secret, now=NOW)


def test_expired_with_leeway() -> None:
    token = mint(SECRET, sub="crm-1", channels=["calls:acme"], ttl=60, now=NOW)
    assert verify(SECRET, token, leeway=5, now=NOW + 64).sub == "crm-1"
    refused(token, "expired", leeway=5, now=NOW + 66)
    refused(token, "expired", leeway=0, now=NOW + 60)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "crm-1", "channels": ["calls:acme"]},  # no exp
        {"channels": ["calls:acme"], "exp": int(NOW) + 60},  # no sub
        {"sub": "", "channels": ["calls:acme"], "exp": int(NOW) + 60},
        {"sub": 7, "channels": ["calls:acme"], "exp": int(NOW) + 60},
        {"sub": "crm-1", "exp": int(NOW) + 60},  # no channels
        {"sub": "crm-1", "channels": [], "exp": int(NOW) + 60},
        {"sub": "crm-1", "channels": "calls:acme", "exp": int(NOW) + 60},
        {"sub": "crm-1", "channels": ["calls:acme", 3], "exp": int(NOW) + 60},
        {"sub": "crm-1", "channels": ["calls:acme", "calls acme"], "exp": int(NOW) + 60},
        {"sub": "crm-1", "channels": ['calls:"acme'], "exp": int(NOW) + 60},
        {"sub": "crm-1", "channels": ["x" * 201], "exp": int(NOW) + 60},
        {"sub": "crm-1", "channels": ["calls:acme"], "exp": "soon"},
        {"sub": "crm-1", "channels": ["calls:acme"], "exp": True},
        {"sub": "crm-1", "channels": ["calls:acme"], "exp": int(NOW) + 60, "nbf": NOW + 600},
        {"sub": "crm-1", "channels": ["calls:acme"], "exp": int(NOW) + 60, "iat": NOW + 600},
    ],
)
def test_invalid_claims(claims: dict[str, Any]) -> None:
    # Signed with the right key, so only the claim checks can refuse it.
    refused(raw_token(claims), "invalid_claims", now=NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "....", "eyJhbGciOi.x.y"])
def test_malformed(token: str) -> None:
    with pytest.raises(AuthError) as info:
        verify(SECRET, token, now=NOW)
    assert info.value.reason == "malformed"


def test_mint_validates_its_input() -> None:
    with pytest.raises(ValueError):
        mint(SECRET, sub="a", channels=[], now=NOW)
    with pytest.raises(ValueError):
        mint(SECRET, sub="a", channels=["calls acme"], now=NOW)
    with pytest.raises(ValueError):
        mint(SECRET, sub="a", channels="calls:acme", now=NOW)
    with pytest.raises(ValueError):
        mint(SECRET, sub="", channels=["calls:acme"], now=NOW)
    with pytest.raises(ValueError):
        mint(SECRET, sub="a", channels=["calls:acme"], ttl=0, now=NOW)
    with pytest.raises(ValueError) as info:
        mint("short-secret", sub="a", channels=["calls:acme"], now=NOW)
    assert "short-secret" not in str(info.value)
    with pytest.raises(ValueError):
        verify("short-secret", mint(SECRET, sub="a", channels=["calls:acme"], now=NOW))
