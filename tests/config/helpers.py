"""A file to load and the problems it gives, shared by the configuration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.load import ConfigError, load_config

JWT = "jwt-secret-0123456789abcdef-0123456789"
APP_SECRET = "app-secret-5d1f9e"
ENV = {"CALLBRIDGE__AUTH__JWT_SECRET": JWT}


def block(tenant: str = "acme", **keys: str) -> str:
    """An ``[[antbuddy]]`` block that loads, with ``keys`` (TOML values) replaced or added."""
    values = {"tenant": f'"{tenant}"', "oapi_url": '"https://oapi.example.test"',
              "ws_url": '"wss://ws.example.test:5557"', "app_id": '"app-1"',
              "app_secret": f'"{APP_SECRET}"', "account_id": '"acc-1"', **keys}
    return "[[antbuddy]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "callbridge.toml"
    path.write_text(text)
    return str(path)


def problems(path: str | None, environ: dict[str, str]) -> list[str]:
    """The lines of the ConfigError that loading raises."""
    with pytest.raises(ConfigError) as info:
        load_config(path, environ)
    return info.value.problems
