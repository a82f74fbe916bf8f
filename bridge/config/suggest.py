""""Did you mean": the known name closest to a misspelt one, and what to say when none is."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from bridge.config.keys import BLOCKS, SECTIONS, every_heading, heading, model_of


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice nearest to ``word`` (case-insensitive), if one is near enough."""
    by_lower = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


def unknown_key(section: str, key: str) -> str:
    """Why ``key`` is not a key of ``section``, and the next step."""
    model = model_of(section)
    keys = list(model.model_fields) if model else []
    near = closest(key, keys)
    if near:
        return f"unknown key; did you mean {near}?"
    homes = [heading(s) for s, m in SECTIONS.items() if key in m.model_fields]
    if homes and section in SECTIONS:
        return f"unknown key here; {key} is a key of {homes[0]}: move it there"
    return f"unknown key; keys of {heading(section)}: {', '.join(keys)}"


def unknown_section(name: str, value: object) -> str:
    """Why a top-level ``name`` of the file is not known, and the next step."""
    if not isinstance(value, (dict, list)):
        homes = [heading(s) for s, m in SECTIONS.items() if name in m.model_fields]
        if homes:
            return f"a key outside any section; {name} belongs under {homes[0]}: move it there"
        return f"unknown key outside any section; sections: {every_heading()}"
    near = closest(name, [*SECTIONS, *BLOCKS])
    if near:
        return f"unknown section; did you mean {heading(near)}?"
    return f"unknown section; sections: {every_heading()}"

