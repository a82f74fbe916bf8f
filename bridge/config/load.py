"""Reading the configuration: a TOML file, then ``CALLBRIDGE__`` environment overrides.

Every problem is reported at once in one :class:`ConfigError` whose lines each name a key (and
the variable it came from); no secret is ever echoed. The schema itself is
:mod:`bridge.config.model`.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any, Mapping

from pydantic import ValidationError

from bridge.common.redact import redact, register
from bridge.config.model import _ARRAYS, _SECRET_KEYS, _SECTIONS, Config
from bridge.config.providers import Section

ENV_PREFIX = "CALLBRIDGE__"


class ConfigError(Exception):
    """The configuration is unusable; ``str()`` has one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _problem(name: str, text: str) -> str:
    # Only the description is redacted: key names like "app_secret: " would otherwise look
    # like a "key: value" pair to redact() and mask the description itself.
    return f"{name}: {redact(text)}" if name else redact(text)


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """Read ``path`` (TOML; None for none), apply ``environ`` overrides, validate.

    Raises :class:`ConfigError` listing every problem found.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError([_problem(path, "file not found")]) from None
        except OSError as exc:
            raise ConfigError([_problem(path, f"cannot read ({exc.strerror})")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([_problem(path, f"invalid TOML: {exc}")]) from None
    for name in _SECTIONS:
        if not isinstance(data.setdefault(name, {}), dict):
            raise ConfigError([f"{name}: expected a table [{name}]"])
    for name in _ARRAYS:
        accounts = data.setdefault(name, [])
        if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
            raise ConfigError([f"{name}: expected [[{name}]] tables"])
    origins = _apply_env(data, environ)
    _register_secrets(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, origins) for e in exc.errors()]) from None
    return config


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[tuple[Any, ...], str]:
    """Write each ``CALLBRIDGE__`` variable into ``data``; return {location: variable name}."""
    problems: list[str] = []
    origins: dict[tuple[Any, ...], str] = {}
    for var in sorted(v for v in environ if v.startswith(ENV_PREFIX)):
        section, _, rest = var[len(ENV_PREFIX):].partition("__")
        section = section.lower()
        model = _ARRAYS.get(section) or _SECTIONS.get(section)
        locs: list[tuple[Any, ...]] = [(section,)]
        if section in _ARRAYS:
            rest, _, key = rest.rpartition("__")
            locs = [(section, i) for i, acc in enumerate(data[section])
                    if rest and _env_name(str(acc.get("tenant", ""))) == rest.upper()]
        else:
            key = rest
        key = key.lower()
        if model is None:
            problems.append(_problem(var, f"unknown section {section!r}"))
        elif not locs:
            problems.append(_problem(var, f"unknown {section} tenant {rest!r}"))
        elif key not in model.model_fields:
            problems.append(_problem(var, f"unknown key {section}.{key}"))
        else:
            for loc in locs:
                table = data[section] if len(loc) == 1 else data[section][loc[1]]
                table[key] = _parse(environ[var], model, key)
                origins[(*loc, key)] = var
    if problems:
        _register_secrets(data)
        raise ConfigError(problems)
    return origins


def _env_name(tenant: str) -> str:
    """How a tenant is spelled in a variable name: upper case, ``-``, ``.``, ``+`` as ``_``."""
    return tenant.upper().replace("-", "_").replace(".", "_").replace("+", "_")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse(raw: str, model: type[Section], key: str) -> Any:
    """``raw`` converted for the key's type; left as text when it does not convert (the
    validator then reports it, with the variable name)."""
    field, text = model.model_fields[key], raw.strip()
    try:
        if field.annotation is bool:
            return True if text.lower() in _TRUE else False if text.lower() in _FALSE else raw
        if field.annotation in (int, float):
            return field.annotation(text)
        if field.annotation == list[str]:
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
    except ValueError:
        return raw
    if text == "" and field.default is None:
        return None  # an empty variable unsets an optional key
    return raw


def _register_secrets(data: dict[str, Any]) -> None:
    for table in [data["auth"], *(t for name in _ARRAYS for t in data.get(name, ()))]:
        for key in _SECRET_KEYS & table.keys():
            if isinstance(table[key], str):
                register(table[key])


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a list", "dict": "a table", "model": "a table"}


def _describe(error: Any, origins: dict[tuple[Any, ...], str]) -> str:
    loc = tuple(error["loc"])
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind = error["type"]
    secret = any(p in _SECRET_KEYS for p in loc)
    if kind == "missing":
        text = "missing"
    elif kind == "extra_forbidden":
        text = "unknown key"
    elif kind == "literal_error":
        text = f"expected one of {error['ctx']['expected']}, got {error.get('input')!r}"[:200]
    elif kind.split("_")[0] in _KINDS and kind.endswith(("_type", "_parsing")):
        text = f"expected {_KINDS[kind.split('_')[0]]}"
        value = error.get("input")
        if not secret and isinstance(value, (str, int, float, bool)):
            text += f", got {value!r}"[:120]
    else:
        text = str(error["msg"]).removeprefix("Value error, ")
    if loc in origins:
        name += f" (from {origins[loc]})"
    return _problem(name, text)  # no name: a whole-config rule whose text names the keys
