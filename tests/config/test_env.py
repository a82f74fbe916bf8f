"""Environment variables: misspelt names are problems that say the name meant, blocks are
named by tenant, and ``CALLBRIDGE_`` names of other commands are left alone."""

from __future__ import annotations

import pytest

from bridge.config.load import load_config
from tests.config.helpers import APP_SECRET, ENV, JWT, block, problems, write


def test_single_underscores_for_a_key_is_a_problem_naming_the_variable_meant() -> None:
    # Not "auth.jwt_secret: missing" as well: the line says what to do.
    assert problems(None, {"CALLBRIDGE_AUTH_JWT_SECRET": JWT}) == [
        "CALLBRIDGE_AUTH_JWT_SECRET: not read, the parts of a name are joined by two "
        "underscores; did you mean CALLBRIDGE__AUTH__JWT_SECRET?"]


def test_single_underscores_for_a_block_key(tmp_path) -> None:
    path = write(tmp_path, block("acme-east.vn"))
    assert problems(path, {**ENV, "CALLBRIDGE_ANTBUDDY_ACME_EAST_VN_APP_SECRET": "x" * 9}) == [
        "CALLBRIDGE_ANTBUDDY_ACME_EAST_VN_APP_SECRET: not read, the parts of a name are joined "
        "by two underscores; did you mean CALLBRIDGE__ANTBUDDY__ACME_EAST_VN__APP_SECRET?"]


def test_a_lower_case_prefix_is_named() -> None:
    assert problems(None, {**ENV, "callbridge__server__port": "1"}) == [
        "callbridge__server__port: not read, CALLBRIDGE__ is written in capitals; did you "
        "mean CALLBRIDGE__SERVER__PORT?"]


@pytest.mark.parametrize("var", ["CALLBRIDGE_ADMIN_TOKEN", "CALLBRIDGE_ADMIN_URL",
                                 "CALLBRIDGE_TEST_TIMEOUT_SCALE", "CALLBRIDGE_CHROMIUM",
                                 "CALLBRIDGE_CHAOS_SEED", "CALLBRIDGE_SERVER_COLOUR"])
def test_other_single_underscore_names_are_left_alone(var: str) -> None:
    assert load_config(None, {**ENV, var: "1"}).server.port == 8080


def test_single_underscores_beside_the_right_name_is_still_a_problem() -> None:
    # Both set: the right one is used, the wrong one is told, nothing else is.
    assert problems(None, {**ENV, "CALLBRIDGE_AUTH_JWT_SECRET": JWT}) == [
        "CALLBRIDGE_AUTH_JWT_SECRET: not read, the parts of a name are joined by two "
        "underscores; did you mean CALLBRIDGE__AUTH__JWT_SECRET?"]


@pytest.mark.parametrize("var, line", [
    ("CALLBRIDGE__SERVR__PORT",
     "unknown section servr; did you mean CALLBRIDGE__SERVER__PORT?"),
    ("CALLBRIDGE__SERVER__PROT", "unknown key prot of [server]; did you mean "
     "CALLBRIDGE__SERVER__PORT?"),
    ("CALLBRIDGE__BROKER__HISTROY_LENGTH", "unknown key histroy_length of [broker]; did you "
     "mean CALLBRIDGE__BROKER__HISTORY_LENGTH?"),
    ("CALLBRIDGE__AUTH_JWT_SECRET", "unknown section auth_jwt_secret; did you mean "
     "CALLBRIDGE__AUTH__JWT_SECRET?"),
    ("CALLBRIDGE__ANTBUDDY__ACME__SECRET", "unknown key secret of [[antbuddy]]; did you mean "
     "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET?"),
    ("CALLBRIDGE__ANTBUDDY__ACME_APP_SECRET", "must name a tenant and a key: "
     "CALLBRIDGE__ANTBUDDY__<TENANT>__<KEY>; did you mean "
     "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET?"),
    ("CALLBRIDGE__ANTBUDDY__ACMEE__APP_SECRET", 'no [[antbuddy]] block has tenant "ACMEE" '
     "(tenants: acme); did you mean CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET?"),
    ("CALLBRIDGE__ANTBUDDY__0__APP_SECRET", 'no [[antbuddy]] block has tenant "0" (tenants: '
     "acme); variables name a block by its tenant, e.g. "
     "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET"),
    ("CALLBRIDGE__QUICKOM__ACME__API_KEY", 'no [[quickom]] block has tenant "ACME" (the file '
     "has none); the environment sets keys of blocks the file declares: add a [[quickom]] "
     "block"),
    ("CALLBRIDGE__WEBHOOK__CRM__URL", '[[webhook]] keys cannot be set from the environment; '
     'write "${NAME}" in the file to read the variable NAME'),
])
def test_unknown_names_say_the_name_meant(tmp_path, var: str, line: str) -> None:
    assert problems(write(tmp_path, block()), {**ENV, var: "1"}) == [f"{var}: {line}"]


def test_unknown_names_far_from_any_list_what_there_is() -> None:
    assert problems(None, {**ENV, "CALLBRIDGE__METRICS__PORT": "1"}) == [
        "CALLBRIDGE__METRICS__PORT: unknown section metrics; sections: server, broker, auth, "
        "logging, upstream, lease, state, antbuddy, quickom, epacific, kompaas"]
    (line,) = problems(None, {**ENV, "CALLBRIDGE__SERVER__COLOUR": "red"})
    assert line.startswith("CALLBRIDGE__SERVER__COLOUR: unknown key colour of [server]; keys "
                           "of [server]: host, port, ")


def test_values_from_the_environment_name_their_variable(tmp_path) -> None:
    path = write(tmp_path, block())
    assert problems(path, {**ENV, "CALLBRIDGE__SERVER__PORT": "-5",
                           "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET": "ab"}) == [
        "server.port (from CALLBRIDGE__SERVER__PORT): must be at least 0, got -5",
        "antbuddy[acme].app_secret (from CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET): must be at "
        "least 4 characters",
    ]


def test_every_problem_at_once(tmp_path) -> None:
    path = write(tmp_path, '[broker]\nhistroy_length = 5\n' + block(app_secret=""))
    assert problems(path, {"CALLBRIDGE_AUTH_JWT_SECRET": JWT,
                           "CALLBRIDGE__ANTBUDDY__0__APP_SECRET": APP_SECRET}) == [
        "CALLBRIDGE_AUTH_JWT_SECRET: not read, the parts of a name are joined by two "
        "underscores; did you mean CALLBRIDGE__AUTH__JWT_SECRET?",
        'CALLBRIDGE__ANTBUDDY__0__APP_SECRET: no [[antbuddy]] block has tenant "0" (tenants: '
        "acme); variables name a block by its tenant, e.g. "
        "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET",
        "broker.histroy_length: unknown key; did you mean history_length?",
        "antbuddy[acme].app_secret: missing: set it in the block or with "
        "CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET",
    ]
