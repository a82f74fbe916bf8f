"""``callbridge init`` and ``callbridge check``: the starter against the schema, and the real
command against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest

from bridge.config import starter
from bridge.config.model import _SECRET_KEYS, _SECTIONS, Config
from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings
from bridge.simulator.suite import ProviderFakes
from tests.cli.run import callbridge

JWT = "check-test-jwt-secret-0123456789abcdef"
APP, APP_SECRET = "acme-app", "acme-app-secret-for-check"
REDIS_PASSWORD = "redis-pass-never-shown"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
_PLACEHOLDER = re.compile(r'"\$\{([A-Z_]+)\}"')


# -- the starter file, held to the schema ------------------------------------------------------

def _uncommented(text: str) -> str:
    """The starter with every commented key and block uncommented."""
    key = re.compile(r"^# ([a-z0-9_]+ = |\[\[?[a-z]+\]\]?$)")
    return "\n".join(line[2:] if key.match(line) else line for line in text.splitlines())


def _full() -> dict[str, Any]:
    return tomllib.loads(_uncommented(starter.TEXT))


def _tables(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, value in data.items():
        for table in value if isinstance(value, list) else [value]:
            yield name, table


def _model(name: str) -> Any:
    """The model of a section, or of one block of an array of tables."""
    annotation = Config.model_fields[name].annotation
    return get_args(annotation)[0] if get_origin(annotation) is list else annotation


def test_every_starter_key_is_a_key_of_the_model() -> None:
    for name, table in _tables(_full()):
        assert name in Config.model_fields, f"[{name}] is no section of the model"
        unknown = set(table) - set(_model(name).model_fields)
        assert not unknown, f"[{name}] has keys the model lacks: {unknown}"


def test_every_section_and_key_of_the_model_is_in_the_starter() -> None:
    data = _full()
    assert set(data) == set(Config.model_fields)
    for name, table in _tables(data):
        missing = set(_model(name).model_fields) - set(table)
        assert not missing, f"[{name}] of the starter lacks {missing}"


def test_the_defaults_shown_are_the_models() -> None:
    for name, table in _full().items():
        if name in _SECTIONS:
            fields = _SECTIONS[name].model_fields
            for key, value in table.items():
                if key != "jwt_secret":
                    assert fields[key].get_default(call_default_factory=True) == value, key


def test_every_block_is_valid_with_its_secrets_set() -> None:
    text = _PLACEHOLDER.sub('"a-secret-long-enough-for-every-key-0123456789"',
                           _uncommented(starter.TEXT))
    for name, table in _tables(tomllib.loads(text)):
        _model(name).model_validate(table)


def test_no_secret_is_literal() -> None:
    for name, table in _tables(_full()):
        for key in _SECRET_KEYS & table.keys():
            values = table[key] if isinstance(table[key], list) else [table[key]]
            assert all(re.fullmatch(r"\$\{[A-Z_]+\}", v) for v in values), f"{name}.{key}"
            assert not any(v.startswith("${CALLBRIDGE_") for v in values)


# -- callbridge init ---------------------------------------------------------------------------

def test_init_writes_the_starter_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "callbridge.toml"
    first = callbridge("init", cwd=str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert target.read_text() == starter.TEXT
    assert "export JWT_SECRET=" in first.stdout
    assert "callbridge check --config callbridge.toml" in first.stdout

    target.write_text("# mine\n")
    second = callbridge("init", cwd=str(tmp_path))
    assert second.returncode == 2
    assert second.stderr == ("callbridge: callbridge.toml already exists; to replace it, run "
                             "again with --force\n")
    assert target.read_text() == "# mine\n"

    forced = callbridge("init", "--path", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text() == starter.TEXT


def test_init_then_check_with_the_variables_set(tmp_path: Path) -> None:
    """Needs the loader's "${NAME}" placeholders."""
    target = tmp_path / "callbridge.toml"
    assert callbridge("init", "--path", str(target)).returncode == 0
    result = callbridge("check", "--config", str(target), env={"JWT_SECRET": JWT})
    assert result.returncode == 0, result.stderr
    assert "auth.jwt_secret (JWT_SECRET)" in result.stdout
    assert JWT not in result.stdout + result.stderr


# -- callbridge check, offline -----------------------------------------------------------------

def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "check.toml"
    path.write_text(text)
    return str(path)


def _antbuddy(url: str, secret: str) -> str:
    return (f'[[antbuddy]]\ntenant = "acme"\noapi_url = "{url}"\n'
            f'ws_url = "{url.replace("http", "ws", 1)}"\napp_id = "{APP}"\n'
            f'app_secret = "{secret}"\naccount_id = "acct-1"\n'
            'sip_user = "1001"\nsip_password = "sip-password-never-shown"\n')


def test_check_prints_what_would_run_and_no_secret(tmp_path: Path) -> None:
    config = _write(tmp_path, f'[server]\nport = 9001\nboard = true\n[broker]\nurl = '
                              f'"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"\n'
                              + _antbuddy("https://oapi.example.com", APP_SECRET))
    result = callbridge("check", "--config", config,
                        env={"CALLBRIDGE__AUTH__JWT_SECRET": JWT})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "listen    127.0.0.1:9001   board on" in out
    assert "broker    redis://:**********@127.0.0.1:6379/0   prefix 'callbridge:'" in out
    assert "auth      jwt_secret set" in out
    assert "antbuddy[acme]  account acct-1, app_id acme-app, oapi_url https://oapi." in out
    assert "from the environment: auth.jwt_secret (CALLBRIDGE__AUTH__JWT_SECRET)" in out
    for secret in (JWT, APP_SECRET, REDIS_PASSWORD, "sip-password-never-shown"):
        assert secret not in out + result.stderr


def test_check_reports_configuration_errors_as_serve_does(tmp_path: Path) -> None:
    config = _write(tmp_path, f'[server]\nport = "eighty"\n[auth]\njwt_secret = "{JWT}"\n')
    checked = callbridge("check", "--config", config)
    served = callbridge("serve", "--config", config)
    assert checked.returncode == served.returncode == 2
    assert checked.stderr == served.stderr
    assert checked.stderr.startswith("callbridge: configuration error:\nserver.port: ")


# -- callbridge check --online, against real servers -------------------------------------------

@pytest.fixture
async def oapi() -> AsyncIterator[AppServer]:
    sim = Simulator(SimulatorSettings(apps={APP: APP_SECRET}, accounts=["acct-1"],
                                      traffic=False))
    async with AppServer(sim.build_app()) as server:
        yield server


async def _check(config: str, *args: str) -> Any:
    return await asyncio.to_thread(callbridge, "check", "--config", config, "--online", *args,
                                   env={"CALLBRIDGE__AUTH__JWT_SECRET": JWT}, timeout=60)


async def test_online_with_good_credentials(tmp_path: Path, oapi: AppServer) -> None:
    config = _write(tmp_path, '[broker]\nurl = "redis://127.0.0.1:6379/0"\n'
                              + _antbuddy(oapi.url, APP_SECRET))
    result = await _check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"  ok      broker          Redis at 127\.0\.0\.1:6379: PING answered, "
                     r"Redis \d", result.stdout)
    assert (f"  ok      antbuddy[acme]  token fetched from 127.0.0.1:{oapi.port} for app "
            f"{APP}") in result.stdout
    assert result.stdout.rstrip().endswith(f"all reachable; next: callbridge serve --config "
                                           f"{config}")
    assert APP_SECRET not in result.stdout + result.stderr


async def test_online_with_a_wrong_secret_names_the_block_and_keys(
        tmp_path: Path, oapi: AppServer) -> None:
    wrong = "a-wrong-app-secret-value"
    config = _write(tmp_path, _antbuddy(oapi.url, wrong))
    result = await _check(config)
    assert result.returncode == 4, result.stdout + result.stderr
    assert (f"  FAILED  antbuddy[acme]  credentials refused by 127.0.0.1:{oapi.port} (HTTP 401): "
            "check antbuddy[acme].app_id, app_secret, sip_user and sip_password") in result.stdout
    assert result.stdout.rstrip().endswith("1 online check(s) failed")
    for secret in (wrong, JWT, "sip-password-never-shown"):
        assert secret not in result.stdout + result.stderr


async def test_online_with_redis_down_shows_host_port_not_password(
        tmp_path: Path, closed_port: int) -> None:
    config = _write(tmp_path, f'[broker]\nurl = "redis://:{REDIS_PASSWORD}@127.0.0.1:'
                              f'{closed_port}/0"\n')
    result = await _check(config, "--timeout", "3")
    assert result.returncode == 4
    assert (f"  FAILED  broker  Redis at 127.0.0.1:{closed_port} is unreachable (connection "
            "refused): is redis-server running there? check [broker] url") in result.stdout
    assert REDIS_PASSWORD not in result.stdout + result.stderr


async def test_online_json_with_every_other_provider(tmp_path: Path) -> None:
    fakes = ProviderFakes("acme")
    async with fakes.running():
        blocks = fakes.config()
        lines = []
        for section, tables in blocks.items():
            for table in tables:
                lines.append(f"[[{section}]]")
                lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        result = await _check(_write(tmp_path, "\n".join(lines) + "\n"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [p["name"] for p in report["providers"]] == [
        "quickom[acme]", "epacific[acme]", "kompaas[acme]"]
    assert {p["name"]: p["status"] for p in report["probes"]} == {
        "broker": "ok", "quickom[acme]": "ok", "epacific[acme]": "ok",
        "kompaas[acme]": "skipped"}
    for tables in blocks.values():
        for key in ("api_key", "api_secret", "signing_secret", "api_token", "webhook_secret"):
            if key in tables[0]:
                assert tables[0][key] not in result.stdout + result.stderr


# -- docs/configuration.md ---------------------------------------------------------------------

def _doc_blocks() -> list[tuple[int, str]]:
    """Every ```toml block of the configuration guide not marked ``<!-- fragment -->``."""
    text = DOCS.read_text()
    found = []
    for match in re.finditer(r"(<!-- fragment -->\s*)?```toml\n(.*?)```", text, re.S):
        if not match.group(1):
            found.append((text.count("\n", 0, match.start()) + 1, match.group(2)))
    return found


@pytest.mark.parametrize("line, block", _doc_blocks(), ids=lambda v: str(v)[:12])
def test_every_toml_block_of_the_guide_checks(tmp_path: Path, line: int, block: str) -> None:
    config = _write(tmp_path, block)
    names = set(re.findall(r'"\$\{([A-Za-z_][A-Za-z0-9_]*)\}"', block))
    env = {name: "a-value-long-enough-for-any-secret-0123456789" for name in names}
    for command in (("check",), ("serve", "--check")):
        result = callbridge(*command, "--config", config, env=env)
        assert result.returncode == 0, f"docs/configuration.md:{line}: {result.stderr}"
        assert "configuration valid; serve would run:" in result.stdout
