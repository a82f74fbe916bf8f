"""Environment overrides: ``CALLBRIDGE__SECTION__KEY`` and ``CALLBRIDGE__ANTBUDDY__TENANT__KEY``.

Each variable is written into the file's data before validation. A name under ``CALLBRIDGE__``
that sets nothing is a problem, and so is a ``CALLBRIDGE_`` name with single underscores that
would set a key: ignoring either silently leaves the user wondering why the value is not used.
Other ``CALLBRIDGE_`` names (``CALLBRIDGE_ADMIN_TOKEN``, ...) belong to other commands and are
left alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from bridge.config.keys import ACCOUNTS, ENV_PREFIX, SECTIONS, Loc, env_name, heading
from bridge.config.providers import Section
from bridge.config.suggest import closest

_LOOSE_PREFIX = "CALLBRIDGE_"


@dataclass
class Overrides:
    #: The variable that set each key, by location.
    origins: dict[Loc, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: Keys that a misspelt variable meant to set: "missing" would only repeat its problem.
    meant: set[Loc] = field(default_factory=set)


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> Overrides:
    """Write every ``CALLBRIDGE__`` variable of ``environ`` into ``data``."""
    out = Overrides()
    for var in sorted(environ):
        if var.startswith(ENV_PREFIX):
            _override(var, environ[var], data, out)
        elif var.upper().startswith(_LOOSE_PREFIX):
            _single_underscores(var, data, out)
    return out


def _override(var: str, raw: str, data: dict[str, Any], out: Overrides) -> None:
    section, _, rest = var[len(ENV_PREFIX):].partition("__")
    section = section.lower()
    model = SECTIONS.get(section) or ACCOUNTS.get(section)
    respelt = _respelt(var, data)
    if model is None or not rest or (section in ACCOUNTS and "__" not in rest):
        out.problems.append(f"{var}: " + _unknown_section(section, rest, respelt))
        return
    key = rest
    locs: list[Loc] = [(section,)]
    if section in ACCOUNTS:
        tenant, _, key = rest.rpartition("__")
        locs = [(section, i) for i, block in enumerate(data[section])
                if env_name(str(block.get("tenant", ""))) == tenant.upper()]
        if not locs:
            out.problems.append(f"{var}: " + _unknown_tenant(section, tenant, key, data))
            return
    key = key.lower()
    if key not in model.model_fields:
        out.problems.append(f"{var}: " + _unknown_key(var, section, key, respelt))
        return
    for loc in locs:
        table = data[section] if len(loc) == 1 else data[section][loc[1]]
        table[key] = parse(raw, model, key)
        out.origins[(*loc, key)] = var


def _unknown_section(section: str, rest: str, respelt: str | None) -> str:
    if section == "webhook":
        return ("[[webhook]] keys cannot be set from the environment; write \"${NAME}\" in the "
                "file to read the variable NAME")
    if section in ACCOUNTS:
        return (f"must name a tenant and a key: {ENV_PREFIX}{section.upper()}__<TENANT>__<KEY>"
                + (f"; did you mean {respelt}?" if respelt else ""))
    if section in SECTIONS:
        keys = ", ".join(SECTIONS[section].model_fields)
        return f"names no key; write {ENV_PREFIX}{section.upper()}__<KEY>, keys of " \
               f"{heading(section)}: {keys}"
    near = closest(section, [*SECTIONS, *ACCOUNTS])
    if respelt is None and near:
        respelt = f"{ENV_PREFIX}{near.upper()}__{rest}"
    if respelt:
        return f"unknown section {section}; did you mean {respelt}?"
    return f"unknown section {section}; sections: {', '.join([*SECTIONS, *ACCOUNTS])}"


def _unknown_tenant(section: str, tenant: str, key: str, data: dict[str, Any]) -> str:
    tenants = [str(b["tenant"]) for b in data[section] if isinstance(b.get("tenant"), str)]
    if not tenants:
        return (f'no [[{section}]] block has tenant "{tenant}" (the file has none); the '
                f"environment sets keys of blocks the file declares: add a [[{section}]] block")
    head = f"{ENV_PREFIX}{section.upper()}__"
    known_key = key.lower() in ACCOUNTS[section].model_fields
    near = closest(tenant, [env_name(t) for t in tenants])
    text = f'no [[{section}]] block has tenant "{tenant}" (tenants: {", ".join(tenants)}); '
    if near and known_key:
        return text + f"did you mean {head}{near}__{key.upper()}?"
    return text + (f"variables name a block by its tenant, e.g. "
                   f"{head}{env_name(tenants[0])}__{key.upper() or '<KEY>'}")


def _unknown_key(var: str, section: str, key: str, respelt: str | None) -> str:
    keys = list((SECTIONS.get(section) or ACCOUNTS[section]).model_fields)
    text = f"unknown key {key} of {heading(section)}"
    near = closest(key, keys)
    if respelt is None and near:
        respelt = var[: len(var) - len(key)] + near.upper()
    if respelt:
        return f"{text}; did you mean {respelt}?"
    return f"{text}; keys of {heading(section)}: {', '.join(keys)}"


def _known(data: dict[str, Any]) -> dict[str, tuple[str, Loc]]:
    """Every variable that sets a key, by its spelling with single underscores."""
    known: dict[str, tuple[str, Loc]] = {}
    for section, model in SECTIONS.items():
        for key in model.model_fields:
            var = f"{ENV_PREFIX}{section}__{key}".upper()
            known[_squeeze(var)] = (var, (section, key))
    for section, model in ACCOUNTS.items():
        for i, block in enumerate(data[section]):
            if not isinstance(block.get("tenant"), str):
                continue
            for key in model.model_fields:
                var = f"{ENV_PREFIX}{section}__{env_name(block['tenant'])}__{key}".upper()
                known.setdefault(_squeeze(var), (var, (section, i, key)))
    return known


def _squeeze(name: str) -> str:
    return re.sub(r"_+", "_", name.upper())


def _respelt(var: str, data: dict[str, Any]) -> str | None:
    """The variable ``var`` means when only its underscores are wrong."""
    found = _known(data).get(_squeeze(var))
    return found[0] if found and found[0] != var else None


def _single_underscores(var: str, data: dict[str, Any], out: Overrides) -> None:
    """A ``CALLBRIDGE_`` name that would set a key if its parts were joined by ``__``."""
    found = _meant(_squeeze(var)[len(_LOOSE_PREFIX):], data)
    if found is None:
        return
    respelt, meant = found
    why = ("CALLBRIDGE__ is written in capitals" if var.upper().startswith(ENV_PREFIX)
           else "the parts of a name are joined by two underscores")
    out.problems.append(f"{var}: not read, {why}; did you mean {respelt}?")
    out.meant.update(meant)


def _meant(rest: str, data: dict[str, Any]) -> tuple[str, list[Loc]] | None:
    """The variable and keys ``SECTION_KEY`` or ``SECTION_TENANT_KEY`` (upper case) means."""
    for section, model in SECTIONS.items():
        for key in model.model_fields:
            if rest == f"{section}_{key}".upper():
                return f"{ENV_PREFIX}{section.upper()}__{key.upper()}", [(section, key)]
    for section, model in ACCOUNTS.items():
        head = section.upper() + "_"
        for key in sorted(model.model_fields, key=len, reverse=True):
            tail = "_" + key.upper()
            if rest.startswith(head) and rest.endswith(tail) and len(rest) > len(head + tail):
                tenant = rest[len(head):-len(tail)]
                return (f"{ENV_PREFIX}{section.upper()}__{tenant}__{key.upper()}",
                        [(section, i, key) for i, b in enumerate(data[section])
                         if env_name(str(b.get("tenant", ""))) == tenant])
    return None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse(raw: str, model: type[Section], key: str) -> Any:
    """``raw`` converted for the key's type; left as text when it does not convert (the
    validator then reports it, with the variable's name)."""
    info, text = model.model_fields[key], raw.strip()
    try:
        if info.annotation is bool:
            return True if text.lower() in _TRUE else False if text.lower() in _FALSE else raw
        if info.annotation in (int, float):
            return info.annotation(text)
        if info.annotation == list[str]:
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
    except ValueError:
        return raw
    if text == "" and info.default is None:
        return None  # an empty variable unsets an optional key
    return raw

