"""Tokens of the identity provider checked with public keys pinned to their algorithm, beside
callbridge's own HS256 tokens, and what their claims grant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path

import jwt
import pytest

from bridge.auth.claims import ClaimMap
from bridge.auth.keys import PublicKey
from bridge.auth.tokens import AuthError, mint, mint_api
from bridge.auth.verifier import Verifier
from bridge.config.model import AuthConfig, RoleConfig, load_public_key
from tests.auth.idp import ISSUER, private_key, public_pem, sign

SECRET = secrets.token_urlsafe(32)
ALGS = ("RS256", "ES256", "EdDSA")
KEYS = {alg: private_key(alg) for alg in ALGS}


def public(alg: str, kid: str = "") -> PublicKey:
    found, key = load_public_key(public_pem(KEYS[alg]))
    assert found == alg
    return PublicKey(kid, alg, key)


def verifier(**kw: object) -> Verifier:
    options: dict[str, object] = {"secret": SECRET, "issuer": ISSUER, "leeway": 0.0,
                                  "keys": [public(a, f"k-{a}") for a in ALGS]}
    options.update(kw)
    return Verifier(**options)  # type: ignore[arg-type]


def refused(reason: str, call: object, *args: object) -> None:
    with pytest.raises(AuthError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.reason == reason, caught.value


@pytest.mark.parametrize("alg", ALGS)
def test_each_algorithm_verifies_a_client_and_an_api_token(alg: str) -> None:
    v = verifier()
    grant = v.client(sign(KEYS[alg], alg, {"channels": ["calls:acme:*"]}, kid=f"k-{alg}"))
    assert grant.sub == "agent-7" and grant.channels == ("calls:acme:*",)
    api = sign(KEYS[alg], alg, {"aud": "callbridge-api", "scopes": ["calls:read"],
                                "tenants": ["acme"]}, kid=f"k-{alg}")
    principal = v.api(f"Bearer {api}")
    assert principal.scopes == {"calls:read"} and principal.may_act_for("acme")


@pytest.mark.parametrize("alg", ALGS)
def test_a_token_without_kid_is_tried_against_the_keys_of_its_algorithm(alg: str) -> None:
    grant = verifier(keys=[public(alg)]).client(sign(KEYS[alg], alg, {"channels": ["a"]}))
    assert grant.channels == ("a",)


def test_callbridge_tokens_keep_working_beside_public_keys() -> None:
    v = verifier()
    assert v.client(mint(SECRET, sub="crm", channels=["calls:acme"])).sub == "crm"
    assert v.api("Bearer " + mint_api(SECRET, sub="crm", scopes=["admin"])).scopes == {"admin"}


def test_hs256_is_refused_without_jwt_secret() -> None:
    refused("bad_signature", verifier(secret="").client, mint(SECRET, sub="crm", channels=["a"]))


def test_a_public_key_used_as_an_hmac_secret_is_refused() -> None:
    """Algorithm confusion: an HS256 token whose HMAC key is the RSA public key's PEM text."""
    pem = public_pem(KEYS["RS256"]).encode()
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "HS256", "typ": "JWT", "kid": "k-RS256"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(
        {"sub": "x", "channels": ["*"], "exp": time.time() + 60}).encode()).rstrip(b"=")
    signature = base64.urlsafe_b64encode(
        hmac.new(pem, header + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
    forged = (header + b"." + body + b"." + signature).decode()
    refused("bad_signature", verifier().client, forged)
    refused("bad_signature", verifier(secret="").client, forged)


def test_a_header_alg_other_than_its_keys_is_refused() -> None:
    # Signed with the EC key but naming the RSA key's kid.
    token = sign(KEYS["ES256"], "ES256", {"channels": ["a"]}, kid="k-RS256")
    refused("bad_signature", verifier().client, token)


def test_alg_none_is_refused() -> None:
    token = jwt.encode({"sub": "x", "channels": ["*"], "exp": time.time() + 60}, None,
                       algorithm="none")
    refused("bad_signature", verifier().client, token)
    refused("bad_signature", verifier().api, f"Bearer {token}")


def test_a_key_of_another_signer_is_refused() -> None:
    other = private_key("RS256")
    refused("bad_signature", verifier().client,
            sign(other, "RS256", {"channels": ["a"]}, kid="k-RS256"))


def test_an_unknown_kid_without_jwks_is_an_unknown_key() -> None:
    refused("unknown_key", verifier().client,
            sign(KEYS["RS256"], "RS256", {"channels": ["a"]}, kid="nobody"))


def test_expired_token() -> None:
    refused("expired", verifier().client,
            sign(KEYS["RS256"], "RS256", {"channels": ["a"]}, kid="k-RS256", ttl=-30))


def test_wrong_or_missing_issuer() -> None:
    v = verifier()
    bad = sign(KEYS["RS256"], "RS256", {"channels": ["a"], "iss": "https://evil.test/"},
               kid="k-RS256")
    refused("invalid_claims", v.client, bad)
    missing = sign(KEYS["RS256"], "RS256", {"channels": ["a"], "iss": None}, kid="k-RS256")
    refused("invalid_claims", v.client, missing)


def test_audiences_keep_ws_and_api_tokens_apart() -> None:
    v = verifier(audience="callbridge-ws")
    ws = sign(KEYS["RS256"], "RS256", {"channels": ["a"], "aud": "callbridge-ws"},
              kid="k-RS256")
    api = sign(KEYS["RS256"], "RS256", {"channels": ["a"], "scopes": ["admin"],
                                        "aud": "callbridge-api"}, kid="k-RS256")
    assert v.client(ws).channels == ("a",)
    refused("invalid_claims", v.client, api)  # wrong aud for /ws
    refused("invalid_claims", v.api, f"Bearer {ws}")  # wrong aud for the API
    assert v.api(f"Bearer {api}").scopes == {"admin"}
    # Without a configured audience, a /ws token carrying one is refused.
    refused("invalid_claims", verifier().client, ws)


def test_claim_names_and_roles_map_to_channels_scopes_and_tenants() -> None:
    claims = ClaimMap(channels_claim="cb_channels", scopes_claim="scope",
                      tenants_claim="org", roles_claim="roles",
                      roles={"supervisor": RoleConfig(channels=["calls:acme", "calls:acme:*"],
                                                      scopes=["calls:read"],
                                                      tenants=["acme"])})
    v = verifier(claims=claims)
    grant = v.client(sign(KEYS["EdDSA"], "EdDSA", {"roles": ["supervisor", "guest"]},
                          kid="k-EdDSA"))
    assert grant.channels == ("calls:acme", "calls:acme:*")
    principal = v.api("Bearer " + sign(KEYS["EdDSA"], "EdDSA", {
        "aud": "callbridge-api", "scope": "openid calls:dial", "org": ["beta"],
        "roles": "supervisor"}, kid="k-EdDSA"))
    assert principal.scopes == {"calls:dial", "calls:read"}  # openid is not callbridge's
    assert principal.tenants == ("beta", "acme")
    # A role nobody configured grants nothing: no channel at all is refused.
    refused("invalid_claims", v.client,
            sign(KEYS["EdDSA"], "EdDSA", {"roles": ["guest"]}, kid="k-EdDSA"))
    refused("invalid_claims", v.client,
            sign(KEYS["EdDSA"], "EdDSA", {"cb_channels": [1, 2]}, kid="k-EdDSA"))


def test_configured_keys_from_pem_text_and_a_file(tmp_path: Path) -> None:
    path = tmp_path / "idp.pem"
    path.write_text(public_pem(KEYS["ES256"]))
    auth = AuthConfig.model_validate({"issuer": ISSUER,
                                      "public_keys": [public_pem(KEYS["RS256"]), str(path)]})
    v = Verifier.from_config(auth)
    for alg in ("RS256", "ES256"):  # with or without a kid: configured keys have none
        assert v.client(sign(KEYS[alg], alg, {"channels": ["a"]}, kid="any")).sub == "agent-7"
        assert v.client(sign(KEYS[alg], alg, {"channels": ["a"]})).sub == "agent-7"
    # EdDSA has no configured key here; HS256 has no jwt_secret.
    refused("unknown_key", v.client, sign(KEYS["EdDSA"], "EdDSA", {"channels": ["a"]}))
    refused("bad_signature", v.client, mint(SECRET, sub="crm", channels=["a"]))
