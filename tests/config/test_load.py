"""load_config: the documented example, env overrides, error messages naming keys, no leaks."""

from __future__ import annotations

import logging
import re
import tomllib
import typing
from pathlib import Path

import pytest

from bridge.common.redact import redact
from bridge.config.load import ConfigError, load_config
from bridge.config.model import DEFAULT_BINDINGS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
JWT = "jwt-secret-0123456789abcdef-0123456789"
APP_SECRET = "app-secret-5d1f9e"
SIP_PASSWORD = "sip-pass-88c1a7"
ENV = {"CALLBRIDGE__AUTH__JWT_SECRET": JWT}


def documented_example() -> str:
    text = DOCS.read_text()
    section = text.split("## Example", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "callbridge.toml"
    path.write_text(text)
    return str(path)


ACCOUNT = f"""
[[antbuddy]]
tenant = "acme-east.vn"
oapi_url = "https://oapi.example.test"
ws_url = "wss://ws.example.test:5557"
app_id = "app-1"
app_secret = "{APP_SECRET}"
account_id = "acc-1"
"""


def errors(path: str | None, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ)
    return str(info.value)


def test_documented_example_loads_as_written(tmp_path) -> None:
    example = documented_example()
    raw = tomllib.loads(example)
    config = load_config(write(tmp_path, example), {})
    assert config.server.host == raw["server"]["host"]
    assert config.broker.url == raw["broker"]["url"]
    assert config.auth.jwt_secret.get_secret_value() == raw["auth"]["jwt_secret"]
    assert [a.tenant for a in config.antbuddy] == [a["tenant"] for a in raw["antbuddy"]]
    first, second = config.antbuddy
    assert first.bindings == list(DEFAULT_BINDINGS) and first.dialect == "auto"
    assert second.bindings == raw["antbuddy"][1]["bindings"]
    assert second.sip_password.get_secret_value() == raw["antbuddy"][1]["sip_password"]
    assert second.raw_payload is True


def test_no_file_defaults_plus_environment() -> None:
    config = load_config(None, ENV)
    assert config.server.port == 8080 and config.broker.url == "memory://"
    assert config.upstream.default_lifetime == 3600.0 and config.antbuddy == []
    assert config.auth.jwt_secret.get_secret_value() == JWT


def test_default_bindings_are_every_call_event() -> None:
    assert len(DEFAULT_BINDINGS) == 9
    assert all(b.startswith("call.") and b.endswith(".*") for b in DEFAULT_BINDINGS)
    assert "call.CHANNEL_CREATE.*" in DEFAULT_BINDINGS
    assert "call.PARK_ABANDONED.*" in DEFAULT_BINDINGS


def test_environment_overrides_the_file(tmp_path) -> None:
    path = write(tmp_path, f'[server]\nport = 8000\n[auth]\njwt_secret = "{"f" * 40}"\n' + ACCOUNT)
    config = load_config(path, {
        **ENV,
        "CALLBRIDGE__SERVER__PORT": "9001",
        "CALLBRIDGE__server__auth_timeout": "2.5",
        "CALLBRIDGE__BROKER__URL": "redis://:pw-in-url-31@127.0.0.1:6379/2",
        "CALLBRIDGE__LOGGING__LEVEL": "debug",
        "CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__RAW_PAYLOAD": "yes",
        "CALLBRIDGE__ANTBUDDY__acme_east_vn__BINDINGS": "call.CHANNEL_CREATE.*, call.PARK_PARKED.*",
        "CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__SIP_USER": "1001",
        "CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__SIP_PASSWORD": SIP_PASSWORD,
        "UNRELATED": "ignored",
    })
    assert config.server.port == 9001 and config.server.auth_timeout == 2.5
    assert config.auth.jwt_secret.get_secret_value() == JWT  # env beats the file
    assert config.broker.url.endswith("@127.0.0.1:6379/2")
    assert config.logging.level == "DEBUG"
    account = config.antbuddy[0]
    assert account.raw_payload is True
    assert account.bindings == ["call.CHANNEL_CREATE.*", "call.PARK_PARKED.*"]
    assert account.sip_user == "1001" and account.sip_password.get_secret_value() == SIP_PASSWORD


def test_json_list_from_environment(tmp_path) -> None:
    path = write(tmp_path, ACCOUNT)
    config = load_config(path, {**ENV, "CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__BINDINGS":
                                 '["call.CHANNEL_ANSWER.*"]'})
    assert config.antbuddy[0].bindings == ["call.CHANNEL_ANSWER.*"]


def test_missing_keys_are_named(tmp_path) -> None:
    path = write(tmp_path, ACCOUNT.replace(f'app_secret = "{APP_SECRET}"\n', ""))
    message = errors(path, {})
    assert ("antbuddy[acme-east.vn].app_secret: missing: set it in the block or with "
            "CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__APP_SECRET") in message.splitlines()
    assert ("auth.jwt_secret: missing: set it in the file or with CALLBRIDGE__AUTH__JWT_SECRET"
            in message.splitlines())


def test_unknown_keys_and_sections_are_named(tmp_path) -> None:
    path = write(tmp_path, '[server]\ncolour = "red"\n[metrics]\nport = 1\n' + ACCOUNT
                 + 'colour = "blue"\n')
    message = errors(path, ENV)
    lines = message.splitlines()
    assert "server.colour: unknown key; keys of [server]: host, port, " in message
    assert next(line for line in lines if line.startswith("metrics: ")).startswith(
        "metrics: unknown section; sections: [server], [broker], [auth]")
    assert "antbuddy[acme-east.vn].colour: unknown key; keys of [[antbuddy]]: tenant, " in message


def test_wrong_types_are_named_with_the_value(tmp_path) -> None:
    path = write(tmp_path, '[server]\nport = "abc"\nhost = 5\n[upstream]\nrefresh_jitter = "x"\n'
                 '[broker]\nurl = "http://example.test"\n' + ACCOUNT + 'dialect = "sio"\n')
    message = errors(path, ENV)
    lines = message.splitlines()
    assert "server.port: must be an integer, got 'abc'" in lines
    assert "server.host: must be a string, got 5; write it in quotes" in lines
    assert "upstream.refresh_jitter: must be a number, got 'x'" in lines
    assert ("broker.url: must have the scheme memory://, redis://, rediss:// or "
            "redis-cluster://, got 'http://example.test'") in lines
    assert ("antbuddy[acme-east.vn].dialect: must be one of auto, socketio-0.9, kazoo-json, "
            "engineio-4; got 'sio'") in lines


def test_environment_type_errors_name_the_variable() -> None:
    message = errors(None, {**ENV, "CALLBRIDGE__SERVER__PORT": "eighty"})
    assert message == ("server.port (from CALLBRIDGE__SERVER__PORT): must be an integer, "
                       "got 'eighty'")


@pytest.mark.parametrize("var", [
    "CALLBRIDGE__SERVR__PORT",                    # unknown section
    "CALLBRIDGE__SERVER__PROT",                   # unknown key
    "CALLBRIDGE__SERVER",                         # no key
    "CALLBRIDGE__ANTBUDDY__GLOBEX__APP_SECRET",   # unknown tenant
    "CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__SECRET", # unknown account key
])
def test_environment_typos_are_errors_naming_the_variable(tmp_path, var: str) -> None:
    message = errors(write(tmp_path, ACCOUNT), {**ENV, var: "1"})
    assert var in message


def test_duplicate_tenant_and_account_is_an_error(tmp_path) -> None:
    message = errors(write(tmp_path, ACCOUNT + ACCOUNT), ENV)
    assert "antbuddy[1]" in message and "acme-east.vn" in message


def test_same_tenant_with_two_accounts_is_fine(tmp_path) -> None:
    config = load_config(write(tmp_path, ACCOUNT + ACCOUNT.replace("acc-1", "acc-2")), ENV)
    assert [a.account_id for a in config.antbuddy] == ["acc-1", "acc-2"]


@pytest.mark.parametrize("bad, key", [
    ('tenant = "acme east"', "antbuddy[0].tenant"),   # no usable tenant: named by position
    ('oapi_url = "ws://x.test"', "antbuddy[acme-east.vn].oapi_url"),
    ('ws_url = "ftp://x.test"', "antbuddy[acme-east.vn].ws_url"),
    ('sip_user = "1001"', "antbuddy[acme-east.vn]"),       # sip_user without sip_password
    ("bindings = []", "antbuddy[acme-east.vn].bindings"),
])
def test_account_values_are_validated(tmp_path, bad: str, key: str) -> None:
    name = bad.split(" =")[0]
    lines = [line for line in ACCOUNT.splitlines() if not line.startswith(name + " =")]
    message = errors(write(tmp_path, "\n".join(lines) + "\n" + bad + "\n"), ENV)
    assert message.startswith(key) or f"\n{key}" in message


def test_short_jwt_secret_is_refused_without_echoing_it() -> None:
    short = "tiny-secret-9"
    message = errors(None, {"CALLBRIDGE__AUTH__JWT_SECRET": short})
    assert "auth.jwt_secret" in message and short not in message


def test_secrets_never_appear_in_repr_str_or_display(tmp_path) -> None:
    path = write(tmp_path, ACCOUNT + f'sip_user = "1001"\nsip_password = "{SIP_PASSWORD}"\n')
    config = load_config(path, {**ENV, "CALLBRIDGE__BROKER__URL":
                                "redis://user:broker-pw-7731@127.0.0.1:6379/0"})
    shown = repr(config) + str(config) + repr(config.model_dump_safe())
    for secret in (JWT, APP_SECRET, SIP_PASSWORD, "broker-pw-7731"):
        assert secret not in shown
        assert redact(f"leaked {secret} here") == "leaked [redacted] here"  # registered
    assert config.model_dump_safe()["broker"]["url"].startswith("redis://user:")


def test_secrets_are_not_echoed_by_errors_about_other_keys(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    path = write(tmp_path, ACCOUNT + f'sip_user = 42\nsip_password = "{SIP_PASSWORD}"\n'
                 'raw_payload = "maybe"\n')
    message = errors(path, {**ENV, "CALLBRIDGE__SERVER__PORT": "x"})
    lines = message.splitlines()
    assert "antbuddy[acme-east.vn].sip_user: must be a string, got 42; write it in quotes" in lines
    assert "antbuddy[acme-east.vn].raw_payload: must be true or false, got 'maybe'" in lines
    for secret in (JWT, APP_SECRET, SIP_PASSWORD):
        assert secret not in message and secret not in caplog.text


def test_secret_of_the_wrong_type_is_not_echoed(tmp_path) -> None:
    path = write(tmp_path, ACCOUNT.replace(f'"{APP_SECRET}"', "918273645"))
    message = errors(path, ENV)
    assert "antbuddy[acme-east.vn].app_secret: must be a string, got **********" in message
    assert "918273645" not in message


def test_file_problems_are_named(tmp_path) -> None:
    assert "file not found" in errors(str(tmp_path / "absent.toml"), ENV)
    assert "invalid TOML" in errors(write(tmp_path, "[server\nport = 1\n"), ENV)


def test_every_key_is_documented() -> None:
    from bridge.config.model import _ARRAYS, Config

    text = DOCS.read_text()
    for section, field in Config.model_fields.items():
        # An array that is not an account array ([[webhook]]) is a list of its block model.
        array = _ARRAYS.get(section) or next(iter(typing.get_args(field.annotation)), None)
        model = array or field.annotation
        heading = f"[[{section}]]" if array else f"[{section}]"
        assert heading in text, f"{heading} is not documented"
        for key in model.model_fields:  # type: ignore[union-attr]
            assert f"| `{key}` |" in text, f"{section}.{key} is not documented"
