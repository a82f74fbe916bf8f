"""The console entry points, run as real subprocesses."""

from __future__ import annotations

import time

import jwt

from bridge.auth.tokens import verify
from tests.cli.run import callbridge

SECRET = "cli-test-secret-0123456789abcdef"


run = callbridge


def test_token_mints_a_verifiable_token():
    result = run("token", "--sub", "crm-7", "--channels", "calls:acme:*", "system:acme",
                 "--ttl", "120", env={"CALLBRIDGE__AUTH__JWT_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    grant = verify(SECRET, result.stdout.strip())
    assert grant.sub == "crm-7"
    assert grant.channels == ("calls:acme:*", "system:acme")
    assert 100 < grant.expires_at - time.time() <= 121
    assert jwt.get_unverified_header(result.stdout.strip())["alg"] == "HS256"


def test_serve_with_a_bad_config_names_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nport = "eighty"\n[auth]\njwt_secret = "' + SECRET + '"\n')
    result = run("serve", "--config", str(config))
    assert result.returncode != 0
    assert "server.port" in result.stderr
    assert SECRET not in result.stderr


def test_serve_with_an_unknown_key_names_it(tmp_path):
    config = tmp_path / "typo.toml"
    config.write_text('[server]\nprot = 8080\n[auth]\njwt_secret = "' + SECRET + '"\n')
    result = run("serve", "--config", str(config))
    assert result.returncode != 0
    assert "server.prot" in result.stderr


def test_demo_prints_url_token_and_events():
    result = run("demo", "--port", "0", "--rate", "5", "--duration", "6",
                 "--token-lifetime", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/ws" in out
    token_line = next(line for line in out.splitlines() if line.strip().startswith("token"))
    token = token_line.split()[-1]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    event_lines = [line for line in out.splitlines() if " call." in line]
    assert len(event_lines) >= 5, out


def test_api_token_mints_a_scoped_token():
    from bridge.auth.tokens import verify_api

    result = run("api-token", "--sub", "crm-7", "--scopes", "calls:read", "calls:dial",
                 "--tenants", "acme", env={"CALLBRIDGE__AUTH__JWT_SECRET": SECRET})
    assert result.returncode == 0, result.stderr
    principal = verify_api(SECRET, "Bearer " + result.stdout.strip())
    assert principal.scopes == frozenset({"calls:read", "calls:dial"})
    assert principal.tenants == ("acme",)
    bad = run("api-token", "--sub", "x", "--scopes", "calls:everything",
              env={"CALLBRIDGE__AUTH__JWT_SECRET": SECRET})
    assert bad.returncode == 2 and "calls:everything" in bad.stderr


def test_demo_all_runs_every_provider_simulator():
    result = run("demo", "--port", "0", "--rate", "2", "--duration", "14", "--all")
    assert result.returncode == 0, result.stderr
    providers = {line.split()[2] for line in result.stdout.splitlines()
                 if line[:4].isdigit() and len(line.split()) > 2}
    assert {"antbuddy", "quickom", "epacific", "kompaas"} <= providers, result.stdout
