"""The first day's wrong turns in a configuration, through the real command: exit status 2,
``callbridge: configuration error:``, then one line per problem that says the next step, and
never a secret."""

from __future__ import annotations

from pathlib import Path

from tests.cli.run import callbridge

JWT = "cli-config-jwt-0123456789abcdef-0123"
APP_SECRET = "acme-app-secret-5f3a"
ACME = f"""
[[antbuddy]]
tenant = "acme"
oapi_url = "https://oapi.example.test"
ws_url = "wss://ws.example.test:5557"
app_id = "app-1"
account_id = "acc-1"
app_secret = "{APP_SECRET}"
"""
SECRETS = (JWT, APP_SECRET)


def problems(result, *secrets: str) -> list[str]:
    """The problem lines of a refused configuration, checked for what every refusal shows."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "callbridge: configuration error:", result.stderr
    assert "Traceback" not in result.stderr
    for secret in (*SECRETS, *secrets):
        assert secret not in result.stderr + result.stdout
    return lines[1:]


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "callbridge.toml"
    path.write_text(text)
    return str(path)


def serve(path: str, env: dict[str, str] | None = None):
    return callbridge("serve", "--config", path, env=env)


def token(path: str, env: dict[str, str] | None = None):
    return callbridge("token", "--sub", "crm", "--channels", "calls:acme:*", "--config", path,
                      env=env)


def test_a_key_typo_suggests_the_key(tmp_path):
    path = config_file(tmp_path, f'[broker]\nhistroy_length = 500\n[auth]\njwt_secret = "{JWT}"\n')
    assert problems(serve(path)) == [
        "broker.histroy_length: unknown key; did you mean history_length?"]


def test_a_section_typo_suggests_the_section(tmp_path):
    path = config_file(tmp_path, f'[sever]\nport = 9000\n[auth]\njwt_secret = "{JWT}"\n')
    assert problems(serve(path)) == ["sever: unknown section; did you mean [server]?"]


def test_single_underscores_name_the_variable_meant(tmp_path):
    path = config_file(tmp_path, "[server]\nport = 9000\n")
    lines = problems(token(path, env={"CALLBRIDGE_AUTH_JWT_SECRET": JWT}))
    assert lines == ["CALLBRIDGE_AUTH_JWT_SECRET: not read, the parts of a name are joined by "
                     "two underscores; did you mean CALLBRIDGE__AUTH__JWT_SECRET?"]


def test_single_underscores_in_a_block_variable(tmp_path):
    path = config_file(tmp_path, f'[auth]\njwt_secret = "{JWT}"\n' + ACME)
    secret = "env-app-secret-77aa"
    lines = problems(serve(path, env={"CALLBRIDGE_ANTBUDDY_ACME_APP_SECRET": secret}), secret)
    assert lines == ["CALLBRIDGE_ANTBUDDY_ACME_APP_SECRET: not read, the parts of a name are "
                     "joined by two underscores; did you mean "
                     "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET?"]


def test_a_block_is_named_by_its_tenant_in_variables_and_messages(tmp_path):
    path = config_file(tmp_path, f'[auth]\njwt_secret = "{JWT}"\n'
                       + ACME.replace('app_id = "app-1"', 'app_id = ""'))
    secret = "env-app-secret-0c1d"
    lines = problems(serve(path, env={"CALLBRIDGE__ANTBUDDY__0__APP_SECRET": secret}), secret)
    assert lines == [
        'CALLBRIDGE__ANTBUDDY__0__APP_SECRET: no [[antbuddy]] block has tenant "0" (tenants: '
        "acme); variables name a block by its tenant, e.g. "
        "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET",
        "antbuddy[acme].app_id: must not be empty",
    ]


def test_values_are_judged_in_callbridge_words(tmp_path):
    path = config_file(tmp_path, '[broker]\nhistory_length = -5\n[logging]\nlevel = "loud"\n'
                       '[auth]\njwt_secret = "too-short-jwt"\n')
    result = token(path, env={"CALLBRIDGE__SERVER__PORT": "eighty"})
    assert problems(result, "too-short-jwt") == [
        "server.port (from CALLBRIDGE__SERVER__PORT): must be an integer, got 'eighty'",
        "broker.history_length: must be at least 0, got -5",
        "auth.jwt_secret: must be at least 32 characters",
        "logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got 'LOUD'",
    ]
    assert "should" not in result.stderr and "Input" not in result.stderr


def test_a_missing_secret_says_where_to_set_it(tmp_path):
    path = config_file(tmp_path, "[server]\nport = 9000\n")
    assert problems(token(path)) == [
        "auth.jwt_secret: missing: set it in the file or with CALLBRIDGE__AUTH__JWT_SECRET"]


def test_placeholders_read_the_environment(tmp_path):
    path = config_file(tmp_path, '[auth]\njwt_secret = "${JWT_SECRET}"\n'
                       + ACME.replace(f'"{APP_SECRET}"', '"${ACME_SECRET}"'))
    assert problems(serve(path, env={"JWT_SECRET": JWT})) == [
        'antbuddy[acme].app_secret: "${ACME_SECRET}" names an environment variable that is '
        "not set"]
    result = token(path, env={"JWT_SECRET": JWT, "ACME_SECRET": APP_SECRET})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2  # a JWT


def test_every_wrong_turn_at_once(tmp_path):
    path = config_file(tmp_path, "[broker]\nhistroy_length = 500\nhistory_max_age = -1\n" + ACME)
    lines = problems(serve(path, env={"CALLBRIDGE_AUTH_JWT_SECRET": JWT,
                                      "CALLBRIDGE__ANTBUDDY__ACMEE__APP_SECRET": APP_SECRET}))
    assert lines == [
        "CALLBRIDGE_AUTH_JWT_SECRET: not read, the parts of a name are joined by two "
        "underscores; did you mean CALLBRIDGE__AUTH__JWT_SECRET?",
        'CALLBRIDGE__ANTBUDDY__ACMEE__APP_SECRET: no [[antbuddy]] block has tenant "ACMEE" '
        "(tenants: acme); did you mean CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET?",
        "broker.history_max_age: must be at least 0, got -1",
        "broker.histroy_length: unknown key; did you mean history_length?",
    ]
