"""How keys are named for a user: in messages and in environment variables.

A key is written ``section.key``, or ``antbuddy[acme].key`` inside a block. A block is named by
its tenant (a ``[[webhook]]`` block by its name), as the environment names it; only a block
whose tenant does not single it out (absent, malformed or shared) is named by its position,
``antbuddy[2]``, counting from 0.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.fields import FieldInfo

from bridge.config.model import _ARRAYS, _SECRET_KEYS, _SECTIONS, WebhookTarget
from bridge.config.providers import TENANT, Section

ENV_PREFIX = "CALLBRIDGE__"

#: ``[section]`` tables.
SECTIONS: dict[str, type[Section]] = _SECTIONS
#: ``[[section]]`` arrays the environment can set, their blocks named by tenant.
ACCOUNTS: dict[str, type[Section]] = _ARRAYS
#: Every ``[[section]]`` array.
BLOCKS: dict[str, type[Section]] = {**_ARRAYS, "webhook": WebhookTarget}
SECRET_KEYS = _SECRET_KEYS

Loc = tuple[str | int, ...]
Labels = dict[tuple[str, int], str]


def model_of(section: str) -> type[Section] | None:
    return SECTIONS.get(section) or BLOCKS.get(section)


def heading(section: str) -> str:
    """``[server]`` or ``[[antbuddy]]``: the section as the file writes it."""
    return f"[[{section}]]" if section in BLOCKS else f"[{section}]"


def every_heading() -> str:
    return ", ".join(heading(s) for s in [*SECTIONS, *BLOCKS])


def field(section: str, key: str) -> FieldInfo | None:
    model = model_of(section)
    return model.model_fields.get(key) if model else None


def env_name(tenant: str) -> str:
    """How a tenant is spelled in a variable name: upper case, ``-``, ``.``, ``+`` as ``_``."""
    return re.sub(r"[-.+]", "_", tenant.upper())


def _label_key(section: str) -> str:
    return "name" if section == "webhook" else "tenant"


def block_labels(data: dict[str, Any]) -> Labels:
    """The name of every block of ``data`` (the file, before validation), by position."""
    labels: Labels = {}
    for section in BLOCKS:
        blocks = data.get(section)
        if not isinstance(blocks, list):
            continue
        names = [b.get(_label_key(section)) if isinstance(b, dict) else None for b in blocks]
        for i, name in enumerate(names):
            usable = (isinstance(name, str) and re.fullmatch(TENANT, name) is not None
                      and len(name) <= 64 and names.count(name) == 1)
            labels[(section, i)] = str(name) if usable else str(i)
    return labels


def display(loc: Loc, labels: Labels) -> str:
    """``antbuddy[acme].app_secret`` for the location ``("antbuddy", 0, "app_secret")``."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            block = i == 1 and isinstance(loc[0], str)
            label = labels.get((str(loc[0]), part), str(part)) if block else str(part)
            out += f"[{label}]"
        else:
            out += f".{part}" if out else part
    return out


def is_secret(loc: Loc) -> bool:
    return any(part in SECRET_KEYS for part in loc)


def variable(loc: Loc, data: dict[str, Any]) -> str | None:
    """The ``CALLBRIDGE__`` variable that sets the key at ``loc``; None when none can."""
    if len(loc) == 2 and loc[0] in SECTIONS:
        return f"{ENV_PREFIX}{str(loc[0]).upper()}__{str(loc[1]).upper()}"
    if len(loc) == 3 and loc[0] in ACCOUNTS and isinstance(loc[1], int):
        block = data[loc[0]][loc[1]]
        tenant = block.get("tenant") if isinstance(block, dict) else None
        if isinstance(tenant, str) and re.fullmatch(TENANT, tenant):
            return f"{ENV_PREFIX}{str(loc[0]).upper()}__{env_name(tenant)}__{str(loc[2]).upper()}"
    return None
