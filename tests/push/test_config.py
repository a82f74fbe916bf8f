"""``[[webhook]]`` blocks at configuration load: accepted, and every refusal naming its key
without showing a secret or URL credentials."""

from __future__ import annotations

import pytest

from bridge.common.redact import redact
from bridge.config.load import ConfigError, load_config

JWT = "j" * 40
SECRET = "webhook-secret-0123456789"
REDIS = 'url = "redis://127.0.0.1:6379/0"'


def _load(tmp_path, webhook: str, broker: str = REDIS):
    path = tmp_path / "callbridge.toml"
    path.write_text(f'[auth]\njwt_secret = "{JWT}"\n[broker]\n{broker}\n{webhook}')
    return load_config(str(path), {})


def _block(**keys: str) -> str:
    values = {"name": '"crm"', "url": '"https://crm.example.com/hook"',
              "channels": '["calls:acme"]', "secrets": f'["{SECRET}"]', **keys}
    return "[[webhook]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v)


def _problems(tmp_path, webhook: str, broker: str = REDIS) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, webhook, broker)
    return str(caught.value)


def test_a_target_loads_with_its_defaults(tmp_path):
    config = _load(tmp_path, _block(secrets=f'["{SECRET}", "{SECRET}-next"]'))
    (target,) = config.webhook
    assert (target.name, target.url, target.channels) == (
        "crm", "https://crm.example.com/hook", ["calls:acme"])
    assert target.keys == [SECRET.encode(), f"{SECRET}-next".encode()]
    assert (target.timeout, target.retry_for) == (10.0, 3600.0)
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump_safe())
    assert redact(f"key {SECRET}") == "key [redacted]", "secrets are registered"


def test_no_target_by_default(tmp_path):
    assert _load(tmp_path, "").webhook == []


def test_a_memory_broker_is_refused(tmp_path):
    text = _problems(tmp_path, _block(), broker='url = "memory://"')
    assert "webhook" in text and "Redis" in text and "memory://" in text


def test_url_credentials_are_refused_and_never_shown(tmp_path):
    text = _problems(tmp_path, _block(url='"https://bob:hunter2-pass@crm.example.com/hook"'))
    assert text.startswith("webhook[crm].url: must not hold credentials")
    assert "crm.example.com/hook" in text
    assert "hunter2" not in text and "bob" not in text


@pytest.mark.parametrize("url", ['"ftp://crm.example.com/"', '"crm.example.com/hook"',
                                 '"https:///nohost"'])
def test_only_http_and_https_urls_with_a_host(tmp_path, url):
    assert _problems(tmp_path, _block(url=url)).startswith(
        "webhook[crm].url: must be an http:// or https:// URL with a host")


def test_short_secrets_are_refused_without_being_shown(tmp_path):
    text = _problems(tmp_path, _block(secrets=f'["{SECRET}", "short-secret-15"]'))
    assert text == "webhook[crm].secrets: secrets[1] must be at least 16 bytes"
    assert "short" not in text


def test_secrets_are_required_and_not_empty(tmp_path):
    assert _problems(tmp_path, _block(secrets="")) == "webhook[crm].secrets: missing: set it in the block"
    assert "webhook[crm].secrets" in _problems(tmp_path, _block(secrets="[]"))


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path):
    text = _problems(tmp_path, _block(secrets="[12345678901234567]"))
    assert text.startswith("webhook[crm].secrets[0]: must be a string, got **********") and "1234567" not in text


@pytest.mark.parametrize("channels, problem", [
    ("[]", "webhook[crm].channels"),
    ('["calls acme"]', "is not a channel name"),
    ('["calls:*"]', "is not a channel name"),
    ('["calls:acme", "calls:acme"]', "listed twice"),
])
def test_channels_are_exact_names(tmp_path, channels, problem):
    assert problem in _problems(tmp_path, _block(channels=channels))


def test_names_are_unique_and_keys_known(tmp_path):
    text = _problems(tmp_path, _block() + _block(url='"http://other.example.com/"'))
    assert text == "webhook[1]: repeats name 'crm' of webhook[0]; give each target its own name"
    assert _problems(tmp_path, _block(colour='"red"')) == (
        "webhook[crm].colour: unknown key; keys of [[webhook]]: name, url, channels, secrets, "
        "timeout, retry_for")
    assert "webhook[crm].timeout" in _problems(tmp_path, _block(timeout="0"))
    assert "webhook[crm].retry_for" in _problems(tmp_path, _block(retry_for="-1.0"))
