"""``[auth]`` with the identity provider's keys: what loads, and the errors that teach."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from bridge.config.load import load_config
from tests.auth.idp import private_key, public_pem
from tests.cli.run import callbridge
from tests.config.helpers import problems, write

RSA_PEM = public_pem(private_key("RS256"))
ED_PEM = public_pem(private_key("EdDSA"))


def auth_file(tmp_path: Path, auth: dict[str, object]) -> str:
    return write(tmp_path, tomli_w.dumps({"broker": {"url": "memory://"}, "auth": auth}))


def test_a_pem_from_the_environment_and_no_jwt_secret_load(tmp_path: Path) -> None:
    path = auth_file(tmp_path, {"public_keys": ["${IDP_KEY}"]})
    config = load_config(path, {"IDP_KEY": ED_PEM})
    assert config.auth.public_keys == [ED_PEM]
    assert config.auth.jwt_secret.get_secret_value() == ""


def test_errors_name_the_key_and_the_fix(tmp_path: Path) -> None:
    lines = problems(auth_file(tmp_path, {"leeway": 5.0}), {})
    assert any(line.startswith("auth.jwt_secret: missing") for line in lines), lines
    lines = problems(auth_file(tmp_path, {"jwt_secret": ""}), {})
    assert any("neither public_keys nor jwks_url is set" in line for line in lines), lines
    lines = problems(auth_file(tmp_path, {"jwks_url": "http://idp.example.test/jwks"}), {})
    assert any("jwks_url" in line and "only on a loopback host" in line for line in lines)
    lines = problems(auth_file(tmp_path, {"public_keys": [RSA_PEM, "-----BEGIN PUBLIC KEY---"]}),
                     {})
    assert any("public_keys: item 2 is not a PEM public key" in line for line in lines), lines
    lines = problems(auth_file(tmp_path, {"public_keys": ["/nonexistent.pem"]}), {})
    assert any("neither PEM text nor a readable file" in line for line in lines), lines
    lines = problems(auth_file(tmp_path, {"jwks_url": "https://idp.example.test/jwks",
                                          "roles_claim": "roles",
                                          "roles": {"ops": {"scopes": ["root"]}}}), {})
    assert any("'root' is not a scope" in line for line in lines), lines


def test_a_loopback_jwks_over_http_loads(tmp_path: Path) -> None:
    config = load_config(auth_file(tmp_path, {"jwks_url": "http://127.0.0.1:9000/jwks"}), {})
    assert config.auth.jwks_url.startswith("http://127.0.0.1")


def test_token_without_jwt_secret_says_so(tmp_path: Path) -> None:
    path = auth_file(tmp_path, {"jwks_url": "https://idp.example.test/jwks"})
    for command in (["token", "--sub", "crm", "--channels", "calls:acme"],
                    ["api-token", "--sub", "crm", "--scopes", "calls:read"]):
        done = callbridge(*command, "--config", path)
        assert done.returncode == 2
        assert "auth.jwt_secret is not set" in done.stderr and "Traceback" not in done.stderr
