"""The JWKS as a local copy: fetched over real HTTP, refreshed on rotation and on an unknown
``kid`` (rate-limited), kept when the endpoint stops answering, and never failing open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import AsyncIterator

import pytest

from bridge.auth.jwks import Jwks
from bridge.auth.keys import parse_jwks
from bridge.auth.tokens import AuthError
from bridge.auth.verifier import Verifier
from tests.auth.idp import ISSUER, Provider


@contextlib.asynccontextmanager
async def started(url: str, *, min_refresh: float = 0.0,
                  refresh: float = 3600.0) -> AsyncIterator[tuple[Jwks, Verifier]]:
    jwks = Jwks(url, refresh=refresh, min_refresh=min_refresh, timeout=5.0)
    await jwks.start()
    try:
        yield jwks, Verifier(secret=secrets.token_urlsafe(32), jwks=jwks, issuer=ISSUER)
    finally:
        await jwks.close()


async def refused(verifier: Verifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        await verifier.client_async(token)
    return caught.value.reason


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_each_algorithm_verifies_with_a_key_from_the_jwks(alg: str) -> None:
    idp = Provider()
    idp.add("k1", alg)
    async with idp.serving() as url, started(url) as (jwks, verifier):
        assert jwks.fetched and len(jwks.keys) == 1
        grant = verifier.client(idp.token("k1", channels=["calls:acme:*"]))
        assert grant.channels == ("calls:acme:*",)


async def test_rotation_new_kid_accepted_and_old_kid_gone_after_refresh() -> None:
    idp = Provider()
    idp.add("old")
    async with idp.serving() as url, started(url) as (jwks, verifier):
        old = idp.token("old", channels=["a"])
        assert verifier.client(old).sub == "agent-7"
        idp.add("new", publish=False)
        idp.publish("new")  # the provider rotates: the old key is withdrawn
        new = idp.token("new", channels=["a"])
        assert (await verifier.client_async(new)).sub == "agent-7"  # one refresh, then ok
        assert [k.kid for k in jwks.keys] == ["new"]
        assert await refused(verifier, old) == "unknown_key"


async def test_unknown_kid_triggers_one_rate_limited_refresh() -> None:
    idp = Provider()
    idp.add("k1")
    idp.add("stranger", publish=False)  # signs, but is never published
    async with idp.serving() as url, started(url, min_refresh=3600) as (jwks, verifier):
        assert idp.requests == 1
        token = idp.token("stranger", channels=["a"])
        # Rate-limited from the start fetch: no new request at all.
        assert await refused(verifier, token) == "unknown_key"
        assert idp.requests == 1

    idp.requests = 0
    async with idp.serving() as url, started(url, min_refresh=0) as (jwks, verifier):
        # Not rate-limited: tokens arriving together still share one request.
        reasons = await asyncio.gather(*(refused(verifier, token) for _ in range(5)))
        assert reasons == ["unknown_key"] * 5
        assert idp.requests == 2  # the start fetch and one refresh for all five


async def test_jwks_down_at_start_refuses_with_retry_and_never_fails_open() -> None:
    idp = Provider()
    idp.add("k1")
    idp.down = True
    async with idp.serving() as url, started(url) as (jwks, verifier):
        assert not jwks.fetched and jwks.failing and jwks.failures >= 1
        assert "503" in (jwks.last_error or "")
        assert await refused(verifier, idp.token("k1", channels=["a"])) == "unavailable"
        idp.down = False  # the endpoint is back: the next token fetches the keys
        assert (await verifier.client_async(idp.token("k1", channels=["a"]))).sub == "agent-7"
        assert jwks.fetched and not jwks.failing


async def test_jwks_down_after_a_fetch_keeps_the_cached_keys_and_reports_it() -> None:
    idp = Provider()
    idp.add("k1")
    idp.add("k2", publish=False)
    async with idp.serving() as url, started(url) as (jwks, verifier):
        idp.down = True
        # An unknown kid asks again; the fetch fails: retry later, not "forged".
        assert await refused(verifier, idp.token("k2", channels=["a"])) == "unavailable"
        assert verifier.client(idp.token("k1", channels=["a"])).sub == "agent-7"
        snapshot = jwks.snapshot()
        assert snapshot["failing"] is True and snapshot["fetched"] is True
        assert snapshot["keys"] == 1 and snapshot["failures"] == 1
        assert snapshot["last_success_age"] is not None


async def test_jwks_unreachable_is_reported_without_raising() -> None:
    idp = Provider()
    async with idp.serving() as url:
        pass  # the server is gone: its port refuses connections
    async with started(url) as (jwks, verifier):
        assert not jwks.fetched and "unreachable" in (jwks.last_error or "")


def test_parse_jwks_keeps_only_signing_keys_of_accepted_algorithms() -> None:
    idp = Provider()
    idp.add("rsa")
    idp.add("ed", "EdDSA")
    document = idp.document()
    document["keys"] += [
        {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hmac"},  # never a secret
        {**document["keys"][0], "kid": "enc", "use": "enc"},
        {**document["keys"][0], "kid": "lying", "alg": "ES256"},  # RSA key claiming EC
        {"kty": "RSA", "kid": "broken", "n": "??", "e": "AQAB"},
    ]
    keys = parse_jwks(json.dumps(document).encode())
    assert [(k.kid, k.alg) for k in keys] == [("rsa", "RS256"), ("ed", "EdDSA")]
    with pytest.raises(ValueError):
        parse_jwks(b"<html>")
