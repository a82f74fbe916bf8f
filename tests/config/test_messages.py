"""One style for every problem: ``<key>: <what is wrong>, got <value>; <next step>``, blocks
named by tenant, no pydantic wording, no secret."""

from __future__ import annotations

import pytest

from tests.config.helpers import APP_SECRET, ENV, JWT, block, problems, write


def lines_for(tmp_path, text: str, environ: dict[str, str] = ENV) -> list[str]:
    return problems(write(tmp_path, text), environ)


@pytest.mark.parametrize("toml, line", [
    ("[server]\nport = -5\n", "server.port: must be at least 0, got -5"),
    ("[server]\nport = 70000\n", "server.port: must be at most 65535, got 70000"),
    ("[server]\nauth_timeout = 0.0\n", "server.auth_timeout: must be more than 0, got 0"),
    ("[server]\nport = 80.5\n", "server.port: must be an integer, got 80.5"),
    ('[server]\nport = "8080"\n',
     "server.port: must be an integer, got '8080'; write it without quotes"),
    ('[server]\nboard = "true"\n',
     "server.board: must be true or false, got 'true'; write it without quotes"),
    ("[server]\nhost = 5\n", "server.host: must be a string, got 5; write it in quotes"),
    ('[server]\nallowed_origins = "https://a.test"\n',
     "server.allowed_origins: must be a list, got 'https://a.test'; write it as [\"a\", \"b\"]"),
    ('[server]\ntrusted_proxies = ["10.0.0.300"]\n', "server.trusted_proxies: must list IP "
     "addresses or networks, got '10.0.0.300'; e.g. 10.0.0.5 or 10.0.0.0/8"),
    ('[logging]\nlevel = "verbose"\n', "logging.level: must be one of DEBUG, INFO, WARNING, "
     "ERROR, CRITICAL; got 'VERBOSE'"),
    (f'[broker]\nprefix = "{"p" * 101}"\n',
     "broker.prefix: must be at most 100 characters, got 101"),
    ('[broker]\nurl = "redis://"\n',
     "broker.url: must name a host, got 'redis://'; e.g. redis://127.0.0.1:6379/0"),
    ("[upstream]\nreconnect_initial = 5.0\nreconnect_max = 1.0\n",
     "upstream: reconnect_max must be at least reconnect_initial, got 1.0 < 5.0"),
    ("[broker]\nhistroy_length = 5\n",
     "broker.histroy_length: unknown key; did you mean history_length?"),
    ('[server]\njwt_secret = "x"\n',
     "server.jwt_secret: unknown key here; jwt_secret is a key of [auth]: move it there"),
    ("port = 8080\n", "port: a key outside any section; port belongs under [server]: move it "
     "there"),
    ("[sever]\nport = 1\n", "sever: unknown section; did you mean [server]?"),
    ("[[antbudy]]\ntenant = 'a'\n", "antbudy: unknown section; did you mean [[antbuddy]]?"),
    ("[[server]]\nport = 1\n",
     "server: must be one [server] table, got [[server]] blocks; write [server]"),
    ("[antbuddy]\ntenant = 'a'\n",
     "antbuddy: must be [[antbuddy]] blocks, got a [antbuddy] table; write [[antbuddy]]"),
])
def test_each_kind_of_problem(tmp_path, toml: str, line: str) -> None:
    assert lines_for(tmp_path, toml) == [line]


@pytest.mark.parametrize("keys, line", [
    ({"dialect": '"socketio"'}, "antbuddy[acme].dialect: must be one of auto, socketio-0.9, "
     "kazoo-json, engineio-4; got 'socketio'; did you mean socketio-0.9?"),
    ({"app_id": '""'}, "antbuddy[acme].app_id: must not be empty"),
    ({"bindings": "[]"}, "antbuddy[acme].bindings: must list at least 1 item, got 0; leave the "
     "key out for its default"),
    ({"apps_ecret": '"x"'}, "antbuddy[acme].apps_ecret: unknown key; did you mean app_secret?"),
    ({"port": "1"}, "antbuddy[acme].port: unknown key; keys of [[antbuddy]]: tenant, oapi_url, "
     "ws_url, dialect, app_id, app_secret, account_id, bindings, sip_user, sip_password, "
     "raw_payload"),
    ({"ws_url": '"ftp://bob:ws-pass-77@ws.example.test"'}, "antbuddy[acme].ws_url: must be a "
     "URL with a host and the scheme ws, wss, http or https, got "
     "'ftp://**********@ws.example.test'"),
    ({"sip_user": '"1001"'},
     "antbuddy[acme]: sip_user is set without sip_password; set both or neither"),
    ({"app_secret": "12345678"}, "antbuddy[acme].app_secret: must be a string, got **********"),
    ({"app_secret": '"abc"'}, "antbuddy[acme].app_secret: must be at least 4 characters"),
    ({"app_secret": ""}, "antbuddy[acme].app_secret: missing: set it in the block or with "
     "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET"),
])
def test_each_kind_of_problem_in_a_block(tmp_path, keys: dict[str, str], line: str) -> None:
    found = lines_for(tmp_path, block(**keys))
    assert found == [line]
    assert "ws-pass-77" not in line and "12345678" not in line


def test_a_block_without_a_usable_tenant_is_named_by_position(tmp_path) -> None:
    assert lines_for(tmp_path, block("acme east")) == [
        "antbuddy[0].tenant: must hold only letters, digits and _ . + -, got 'acme east'"]


def test_missing_names_the_variable_that_sets_it(tmp_path) -> None:
    assert problems(None, {}) == [
        "auth.jwt_secret: missing: set it in the file or with CALLBRIDGE__AUTH__JWT_SECRET"]


def test_blocks_are_named_by_tenant_else_by_position(tmp_path) -> None:
    text = (block("acme", dialect='"x"') + block("globex", dialect='"y"')
            + block("twice", dialect='"z"') + block("twice", account_id='"acc-2"', dialect='"w"')
            + block("", dialect='"v"'))
    found = [line.split(":")[0] for line in lines_for(tmp_path, text)]
    assert found == ["antbuddy[acme].dialect", "antbuddy[globex].dialect",
                     "antbuddy[2].dialect", "antbuddy[3].dialect", "antbuddy[4].tenant",
                     "antbuddy[4].dialect"]


def test_repeated_tenants_are_named_by_position(tmp_path) -> None:
    assert lines_for(tmp_path, block() + block()) == [
        "antbuddy[1]: repeats tenant 'acme' with account_id 'acc-1' of antbuddy[0]; one block "
        "per account"]


def test_provider_blocks_are_named_by_tenant_too(tmp_path) -> None:
    text = ('[[quickom]]\ntenant = "acme"\napi_key = "quickom-key-1"\n'
            'signing_secret = "short"\nbackfill_limit = 80\napi_url = "ftp://q.test"\n')
    assert lines_for(tmp_path, text) == [
        "quickom[acme].api_url: must be an http:// or https:// URL, got 'ftp://q.test'",
        "quickom[acme].signing_secret: must be at least 8 characters",
        "quickom[acme].backfill_limit: must be at most 50, got 80",
    ]


def test_no_pydantic_wording_and_no_secret_in_any_problem(tmp_path) -> None:
    text = ('port = 1\n[server]\nport = "x"\nhost = 1\nmax_channels = -1\n[broker]\nprefix = 1\n'
            '[auth]\njwt_secret = 5\n[logging]\nlevel = 1\n' + block(
                app_secret=f'"{APP_SECRET}"', sip_password="77665544", bindings='"x"',
                dialect="1", raw_payload='"maybe"'))
    found = lines_for(tmp_path, text, {"CALLBRIDGE__AUTH__JWT_SECRET": "short"})
    assert len(found) >= 9
    for line in found:
        for wording in ("Input should", "String should", "List should", "Field required",
                        "Extra inputs", "Value error", "valid "):
            assert wording not in line, line
        for secret in (APP_SECRET, "77665544", JWT, "short"):
            assert secret not in line, line
