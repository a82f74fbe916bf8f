"""``callbridge token`` and ``api-token``: the token on stdout, what it holds on stderr (or all
as JSON), and channel patterns checked before anything is signed."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from bridge.auth.tokens import verify, verify_api
from tests.cli.run import callbridge

SECRET = "token-test-secret-0123456789abcdef"
ENV = {"CALLBRIDGE__AUTH__JWT_SECRET": SECRET}


def test_token_prints_the_token_and_its_jti():
    result = callbridge("token", "--sub", "crm-1", "--channels", "calls:acme:*", "system:acme",
                        "--ttl", "600", env=ENV)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "\n" not in token  # $(callbridge token ...) captures the token alone
    grant = verify(SECRET, token)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    assert result.stderr.strip() == (
        f"jti={grant.token_id} sub=crm-1 channels=calls:acme:*,system:acme "
        f"expires_at={expiry} (to revoke it: callbridge admin revoke {grant.token_id})")
    assert SECRET not in result.stdout + result.stderr


def test_token_json():
    result = callbridge("token", "--sub", "crm-1", "--channels", "calls:acme", "--json",
                        env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = json.loads(result.stdout)
    assert set(out) == {"token", "jti", "sub", "channels", "expires_at"}
    grant = verify(SECRET, out["token"])
    assert out["jti"] == grant.token_id
    assert out["sub"] == "crm-1" and out["channels"] == ["calls:acme"]
    assert out["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime(grant.expires_at))


def test_api_token_prints_its_jti_scopes_and_tenants():
    result = callbridge("api-token", "--sub", "crm-backend", "--scopes", "calls:read",
                        "--tenants", "acme", env=ENV)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    principal = verify_api(SECRET, f"Bearer {token}")
    assert principal.tenants == ("acme",)
    jti = jwt.decode(token, SECRET, algorithms=["HS256"], audience="callbridge-api")["jti"]
    assert result.stderr.startswith(f"jti={jti} sub=crm-backend scopes=calls:read "
                                    "tenants=acme expires_at=")
    as_json = callbridge("api-token", "--sub", "crm-backend", "--scopes", "admin", "--json",
                         env=ENV)
    out = json.loads(as_json.stdout)
    assert set(out) == {"token", "jti", "sub", "scopes", "tenants", "expires_at"}
    assert out["scopes"] == ["admin"] and out["tenants"] == ["*"]


def test_api_token_names_unknown_scopes():
    result = callbridge("api-token", "--sub", "x", "--scopes", "calls:write", env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip() == ("callbridge api-token: unknown scope(s) calls:write: "
                                     "scopes are admin, calls:dial, calls:read, "
                                     "verifications:write")


WHOLE_SEGMENT = ("'*' stands for a whole segment: calls:acme:* or calls:*:1001 "
                 "('**' for any number of segments: calls:acme:**)")
EMPTY = "a segment is empty: segments are separated by one ':', e.g. calls:acme:1001"


@pytest.mark.parametrize(("pattern", "why"), [
    ("calls:acme:**x", WHOLE_SEGMENT),
    ("calls:acme:1001*", WHOLE_SEGMENT),
    ("calls:acme*", WHOLE_SEGMENT),
    ("calls::*", EMPTY),
    ("calls:acme:", EMPTY),
    ("calls:a b", "a pattern is made of A-Z a-z 0-9 _ . + -"),
])
def test_token_refuses_a_malformed_pattern(pattern, why):
    result = callbridge("token", "--sub", "x", "--channels", "calls:acme", pattern, env=ENV)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"callbridge token: channel pattern {pattern!r} refused: "
                                    f"{why}")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("pattern", "warning"), [
    ("calls:*", "it grants the channels of every tenant (one tenant: e.g. calls:acme)"),
    ("calls:*:1001", "it grants the channels of every tenant (one tenant: e.g. "
                     "calls:acme:1001)"),
    ("call:acme", "callbridge publishes no 'call' channels; did you mean calls:acme?"),
    ("presense:acme", "callbridge publishes no 'presense' channels; did you mean "
                      "presence:acme?"),
    ("system:acme:1001", "it matches no channel callbridge publishes (channels: "
                         "system:<tenant>)"),
    ("*", "'*' matches one segment and every channel has two or three"),
])
def test_token_warns_about_odd_patterns_and_mints(pattern, warning):
    result = callbridge("token", "--sub", "x", "--channels", pattern, env=ENV)
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"callbridge token: warning: channel pattern {pattern!r}: {warning}")
    assert verify(SECRET, result.stdout.strip()).channels == (pattern,)


def test_token_without_warnings_for_plain_patterns():
    result = callbridge("token", "--sub", "x", "--channels", "calls:acme", "calls:acme:*",
                        "calls:acme:10?", "system:acme", "presence:acme", "verifications:acme",
                        "calls:acme:**", env=ENV)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_token_refuses_a_non_positive_ttl():
    result = callbridge("token", "--sub", "x", "--channels", "calls:acme", "--ttl", "0",
                        env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip() == ("callbridge token: --ttl must be a positive number of "
                                     "seconds, not 0")
