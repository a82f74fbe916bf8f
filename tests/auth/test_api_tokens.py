"""bridge.auth.tokens, the API audience: pure tests, the clock passed in."""

from __future__ import annotations

import secrets
from typing import Any

import jwt
import pytest

from bridge.auth.tokens import (
    AUDIENCE,
    AuthError,
    Principal,
    mint,
    mint_api,
    verify,
    verify_api,
)

SECRET = secrets.token_urlsafe(32)
NOW = 1_700_000_000.0


def raw_token(claims: dict[str, Any], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret.encode(), algorithm=alg)


def refused(authorization: str | None, reason: str, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify_api(SECRET, authorization, **kw)
    assert info.value.reason == reason
    text = f"{info.value} {info.value!r}"
    assert SECRET not in text
    assert not authorization or authorization not in text
    assert info.value.__cause__ is None  # no chained library error that might echo input
    return info.value


GOOD = {"sub": "crm", "aud": AUDIENCE, "scopes": ["calls:read"], "exp": int(NOW) + 60}


def test_round_trip() -> None:
    token = mint_api(SECRET, sub="crm-7", scopes=["calls:dial", "calls:read", "calls:dial"],
                     tenants=["acme", "beta-*"], ttl=120, now=NOW)
    principal = verify_api(SECRET, "Bearer " + token, now=NOW + 1)
    assert principal == Principal(sub="crm-7", scopes=frozenset({"calls:read", "calls:dial"}),
                                  tenants=("acme", "beta-*"))
    assert principal.may_act_for("beta-1") and not principal.may_act_for("acme2")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE,
                        options={"verify_exp": False})
    assert claims["scopes"] == ["calls:dial", "calls:read"] and claims["jti"]


def test_the_scheme_is_case_insensitive_and_tenants_default_to_all() -> None:
    principal = verify_api(SECRET, "bearer  " + raw_token(GOOD) + " ", now=NOW)
    assert principal.tenants == ("*",)


@pytest.mark.parametrize("authorization", [None, "", "Basic abc", "Bearer", "Bearer   ",
                                           "Token abc"])
def test_no_bearer_token_is_missing(authorization: str | None) -> None:
    refused(authorization, "missing", now=NOW)


def test_expired_with_leeway() -> None:
    token = "Bearer " + mint_api(SECRET, sub="c", scopes=["admin"], ttl=60, now=NOW)
    assert verify_api(SECRET, token, leeway=5, now=NOW + 64).sub == "c"
    refused(token, "expired", leeway=5, now=NOW + 66)
    refused(token, "expired", leeway=0, now=NOW + 60)


def test_the_two_audiences_are_not_interchangeable() -> None:
    client = mint(SECRET, sub="crm", channels=["calls:acme"], now=NOW)
    refused("Bearer " + client, "invalid_claims", now=NOW)
    api = mint_api(SECRET, sub="crm", scopes=["admin"], now=NOW)
    with pytest.raises(AuthError) as info:
        verify(SECRET, api, now=NOW)
    assert info.value.reason == "invalid_claims"


def test_forged_and_other_algorithms_are_refused() -> None:
    forged = mint_api(secrets.token_urlsafe(32), sub="c", scopes=["admin"], now=NOW)
    refused("Bearer " + forged, "bad_signature", now=NOW)
    long_secret = secrets.token_urlsafe(64)
    hs512 = raw_token(GOOD, secret=long_secret, alg="HS512")
    with pytest.raises(AuthError) as info:
        verify_api(long_secret, "Bearer " + hs512, now=NOW)
    assert info.value.reason == "bad_signature"
    refused("Bearer not-a-jwt", "malformed", now=NOW)


@pytest.mark.parametrize("claims", [
    {**GOOD, "aud": "another-service"},
    {k: v for k, v in GOOD.items() if k != "aud"},
    {k: v for k, v in GOOD.items() if k != "sub"},
    {k: v for k, v in GOOD.items() if k != "exp"},
    {**GOOD, "sub": 7},
    {**GOOD, "nbf": NOW + 600},
])
def test_invalid_claims(claims: dict[str, Any]) -> None:
    refused("Bearer " + raw_token(claims), "invalid_claims", now=NOW)


@pytest.mark.parametrize("claims", [
    {k: v for k, v in GOOD.items() if k != "scopes"},
    {**GOOD, "scopes": "admin"},
    {**GOOD, "scopes": ["admin", 1]},
    {**GOOD, "tenants": "acme"},
    {**GOOD, "tenants": [None]},
])
def test_malformed_scopes_or_tenants(claims: dict[str, Any]) -> None:
    refused("Bearer " + raw_token(claims), "malformed_claims", now=NOW)


def test_mint_api_refuses_unknown_scopes_and_bad_tenants() -> None:
    with pytest.raises(ValueError):
        mint_api(SECRET, sub="c", scopes=["calls:everything"])
    with pytest.raises(ValueError):
        mint_api(SECRET, sub="c", scopes=[])
    with pytest.raises(ValueError):
        mint_api(SECRET, sub="", scopes=["admin"])
    with pytest.raises(ValueError):
        mint_api(SECRET, sub="c", scopes=["calls:read"], tenants=["a b"])
    with pytest.raises(ValueError):
        mint_api(SECRET, sub="c", scopes=["calls:read"], tenants=[])
    principal = verify_api(SECRET, "Bearer " + mint_api(SECRET, sub="c", scopes=["admin"]))
    assert principal.scopes == frozenset({"admin"})


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError) as info:
        mint_api("short-secret", sub="c", scopes=["admin"], now=NOW)
    assert "short-secret" not in str(info.value)
    with pytest.raises(ValueError):
        verify_api("short-secret", "Bearer " + mint_api(SECRET, sub="c", scopes=["admin"]))
