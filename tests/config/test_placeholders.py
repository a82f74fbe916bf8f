"""``"${NAME}"`` in the file reads the environment variable NAME."""

from __future__ import annotations

from bridge.common.redact import redact
from bridge.config.load import load_config, load_config_with_origins
from tests.config.helpers import JWT, block, problems, write

WEBHOOK = ('[broker]\nurl = "redis://127.0.0.1:6379/0"\n[[webhook]]\nname = "crm"\n'
           'url = "https://crm.example.test/hook"\nchannels = ["calls:acme"]\n'
           'secrets = ["${HOOK_KEY}", "hook-key-kept-in-the-file"]\n')


def test_placeholders_read_the_environment_in_every_section_and_block(tmp_path) -> None:
    secret, hook_key = "app-secret-from-env-91", "hook-key-from-env-0123"
    path = write(tmp_path, '[server]\nport = "${PORT}"\nboard = "${BOARD}"\n'
                 '[auth]\njwt_secret = "${JWT_SECRET}"\n' + WEBHOOK
                 + block(app_secret='"${ACME_SECRET}"'))
    config, origins = load_config_with_origins(path, {
        "PORT": "9100", "BOARD": "yes", "JWT_SECRET": JWT, "ACME_SECRET": secret,
        "HOOK_KEY": hook_key})
    assert config.server.port == 9100 and config.server.board is True
    assert config.auth.jwt_secret.get_secret_value() == JWT
    assert config.antbuddy[0].app_secret.get_secret_value() == secret
    assert config.webhook[0].keys == [hook_key.encode(), b"hook-key-kept-in-the-file"]
    assert origins == {"server.port": "PORT", "server.board": "BOARD",
                       "auth.jwt_secret": "JWT_SECRET", "antbuddy[acme].app_secret": "ACME_SECRET",
                       "webhook[crm].secrets[0]": "HOOK_KEY"}
    for value in (JWT, secret, hook_key):  # registered for redaction
        assert redact(f"saw {value}") == "saw [redacted]"


def test_an_unset_variable_is_a_problem_naming_key_and_variable(tmp_path) -> None:
    path = write(tmp_path, '[auth]\njwt_secret = "${JWT_SECRET}"\n' + WEBHOOK
                 + block(sip_user='"1001"', sip_password='"${SIP_PASSWORD}"'))
    assert problems(path, {}) == [
        'auth.jwt_secret: "${JWT_SECRET}" names an environment variable that is not set',
        'webhook[crm].secrets[0]: "${HOOK_KEY}" names an environment variable that is not set',
        'antbuddy[acme].sip_password: "${SIP_PASSWORD}" names an environment variable that '
        "is not set",
    ]


def test_a_value_from_a_placeholder_names_its_variable_in_problems(tmp_path) -> None:
    path = write(tmp_path, '[server]\nport = "${PORT}"\n[auth]\njwt_secret = "${JWT_SECRET}"\n')
    assert problems(path, {"PORT": "eighty", "JWT_SECRET": "short-jwt-secret"}) == [
        "server.port (from PORT): must be an integer, got 'eighty'",
        "auth.jwt_secret (from JWT_SECRET): must be at least 32 characters",
    ]


def test_an_override_beats_an_unset_placeholder(tmp_path) -> None:
    path = write(tmp_path, '[auth]\njwt_secret = "${JWT_SECRET}"\n')
    config, origins = load_config_with_origins(path, {"CALLBRIDGE__AUTH__JWT_SECRET": JWT})
    assert config.auth.jwt_secret.get_secret_value() == JWT
    assert origins == {"auth.jwt_secret": "CALLBRIDGE__AUTH__JWT_SECRET"}


def test_only_a_whole_value_is_a_placeholder(tmp_path) -> None:
    path = write(tmp_path, '[lease]\ninstance_id = "node-${HOST}"\n[auth]\n'
                 f'jwt_secret = "{JWT}"\n')
    assert load_config(path, {"HOST": "a"}).lease.instance_id == "node-${HOST}"


def test_a_variable_of_the_environment_names_its_block_by_tenant_from_a_placeholder(
        tmp_path) -> None:
    path = write(tmp_path, block(tenant="${TENANT}"))
    config, origins = load_config_with_origins(path, {
        "TENANT": "globex", "CALLBRIDGE__AUTH__JWT_SECRET": JWT,
        "CALLBRIDGE__ANTBUDDY__GLOBEX__ACCOUNT_ID": "acc-9"})
    assert (config.antbuddy[0].tenant, config.antbuddy[0].account_id) == ("globex", "acc-9")
    assert origins["antbuddy[globex].account_id"] == "CALLBRIDGE__ANTBUDDY__GLOBEX__ACCOUNT_ID"
