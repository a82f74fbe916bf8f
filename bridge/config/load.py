"""Reading the configuration: a TOML file, its ``"${NAME}"`` placeholders, then
``CALLBRIDGE__`` environment overrides.

Every problem is reported at once in one :class:`ConfigError` whose lines each name a key (and
the variable its value came from); no secret is ever echoed. The schema itself is
:mod:`bridge.config.model`; how keys are named, :mod:`bridge.config.keys`; the wording of each
problem, :mod:`bridge.config.describe`.
"""

from __future__ import annotations

import tomllib
from typing import Any, Mapping

from pydantic import ValidationError

from bridge.common.redact import register
from bridge.config.describe import describe, problem, shown
from bridge.config.env import apply_env
from bridge.config.keys import (
    BLOCKS,
    ENV_PREFIX,
    SECRET_KEYS,
    SECTIONS,
    Loc,
    block_labels,
    display,
    heading,
)
from bridge.config.model import Config
from bridge.config.placeholders import resolve

__all__ = ["ENV_PREFIX", "ConfigError", "load_config", "load_config_with_origins"]


class ConfigError(Exception):
    """The configuration is unusable; ``str()`` has one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """Read ``path`` (TOML; None for none), apply ``environ``, validate.

    Raises :class:`ConfigError` listing every problem found.
    """
    return load_config_with_origins(path, environ)[0]


def load_config_with_origins(path: str | None, environ: Mapping[str, str]
                             ) -> tuple[Config, dict[str, str]]:
    """:func:`load_config`, and which keys came from the environment: the variable read for
    each key, by the key's name in messages (``antbuddy[acme].app_secret``; a list item as
    ``webhook[crm].secrets[0]``)."""
    data = _read(path)
    placed, unset = resolve(data, environ)
    overrides = apply_env(data, environ)
    origins = {**placed, **overrides.origins}
    labels = block_labels(data)
    problems = [problem(display(loc, labels), f'"${{{name}}}" names an environment variable '
                        "that is not set")
                for loc, name in unset.items() if loc not in overrides.origins]
    problems += overrides.problems
    _register_secrets(data)
    # Keys whose problem is already told: an unset placeholder's (and a rule of its table, such
    # as "sip_user is set without sip_password"), and "missing" for a key a misspelt variable
    # meant to set.
    told = {path for loc in unset if loc not in origins
            for path in (_key_path(loc), _key_path(loc)[:-1])}
    meant = {loc for loc in overrides.meant if loc not in origins}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += [describe(e, labels, origins, data) for e in exc.errors()
                     if _key_path(tuple(e["loc"])) not in told
                     and not (e["type"] == "missing" and tuple(e["loc"]) in meant)]
    if problems:
        raise ConfigError(problems)
    return config, {display(loc, labels): var for loc, var in origins.items()}


def _read(path: str | None) -> dict[str, Any]:
    """The file as a dict, each section of the right shape; raises on anything else."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError([problem(path, "file not found")]) from None
        except OSError as exc:
            raise ConfigError([problem(path, f"cannot read ({exc.strerror})")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([problem(path, f"invalid TOML: {exc}")]) from None
    problems = []
    for name in SECTIONS:
        value = data.setdefault(name, {})
        if isinstance(value, list):
            problems.append(f"{name}: must be one {heading(name)} table, got [[{name}]] blocks; "
                            f"write {heading(name)}")
        elif not isinstance(value, dict):
            problems.append(f"{name}: must be a {heading(name)} table, got "
                            f"{shown(value, name == 'auth')}")
    for name in BLOCKS:
        blocks = data.setdefault(name, [])
        if isinstance(blocks, dict):
            problems.append(f"{name}: must be {heading(name)} blocks, got a [{name}] table; "
                            f"write {heading(name)}")
        elif not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            problems.append(f"{name}: must be {heading(name)} blocks, got "
                            f"{shown(blocks, True)}")
    if problems:
        raise ConfigError(problems)
    return data


def _key_path(loc: Loc) -> Loc:
    """The key a location is in: ``("webhook", 0, "secrets")`` for one of its items."""
    return loc[:3] if loc and loc[0] in BLOCKS else loc[:2]


def _register_secrets(data: dict[str, Any]) -> None:
    for table in [data["auth"], *(t for name in BLOCKS for t in data.get(name, ()))]:
        for key in SECRET_KEYS & table.keys():
            values = table[key] if isinstance(table[key], list) else [table[key]]
            for value in values:
                if isinstance(value, str):
                    register(value)

