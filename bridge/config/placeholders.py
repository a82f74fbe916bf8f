"""Environment placeholders in the file: a string that is exactly ``"${NAME}"`` reads NAME.

A file can then be committed with its secrets left to the environment, under names the
deployment already uses (``jwt_secret = "${JWT_SECRET}"``), in any section or block, list items
included. Only a whole value is replaced: ``"redis://${HOST}"`` stays as written.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from bridge.config.env import parse
from bridge.config.keys import Loc, model_of

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def resolve(data: dict[str, Any], environ: Mapping[str, str]
            ) -> tuple[dict[Loc, str], dict[Loc, str]]:
    """Replace every placeholder of ``data`` by its variable's value.

    Returns ``(origins, unset)``: the variable read for each location, and the variable named
    by each placeholder whose variable is not set (its key is removed).
    """
    origins: dict[Loc, str] = {}
    unset: dict[Loc, str] = {}
    for section, value in data.items():
        tables: list[tuple[Loc, Any]] = [((section,), value)]
        if isinstance(value, list):
            tables = [((section, i), block) for i, block in enumerate(value)]
        for loc, table in tables:
            if isinstance(table, dict):
                _resolve_table(section, loc, table, environ, origins, unset)
    return origins, unset


def _resolve_table(section: str, loc: Loc, table: dict[str, Any], environ: Mapping[str, str],
                   origins: dict[Loc, str], unset: dict[Loc, str]) -> None:
    model = model_of(section)
    for key, value in list(table.items()):
        name = _name(value)
        if name is not None:
            if name not in environ:
                unset[(*loc, key)] = name
                del table[key]
                continue
            known = model is not None and key in model.model_fields
            table[key] = parse(environ[name], model, key) if model and known else environ[name]
            origins[(*loc, key)] = name
        elif isinstance(value, list):
            for i, item in enumerate(value):
                name = _name(item)
                if name is None:
                    continue
                if name in environ:
                    value[i] = environ[name]
                    origins[(*loc, key, i)] = name
                else:
                    unset[(*loc, key, i)] = name


def _name(value: Any) -> str | None:
    match = _PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
    return match.group(1) if match else None
