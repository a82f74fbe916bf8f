"""One problem of a validated file, in callbridge's words.

Every line reads ``<key>: <what is wrong>, got <value>; <what is allowed or the next step>``,
with `` (from VARIABLE)`` after the key when its value came from the environment. A secret's
value is never shown (``**********`` stands for it).
"""

from __future__ import annotations

import re
from typing import Any

from bridge.common.redact import redact
from bridge.config.keys import SECTIONS, Labels, Loc, display, field, is_secret, variable
from bridge.config.model import MASK, safe_url
from bridge.config.providers import TENANT
from bridge.config.suggest import closest, unknown_key, unknown_section

_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false",
          "string": "a string", "list": "a list", "dict": "a table", "model": "a table"}
_BOUNDS = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
           "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}


def problem(name: str, text: str) -> str:
    """``name: text`` with any registered secret in ``text`` masked."""
    # Only the description is redacted: key names like "app_secret: " would otherwise look
    # like a "key: value" pair to redact() and mask the description itself.
    return f"{name}: {redact(text)}" if name else redact(text)


def shown(value: Any, secret: bool) -> str:
    """``value`` as a message shows it: TOML's spelling, short, secrets masked."""
    if secret:
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(safe_url(value) if "://" in value else value)[:80]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "a table"
    return repr(value)[:80]


def describe(error: Any, labels: Labels, origins: dict[Loc, str], data: dict[str, Any]) -> str:
    """The line for one pydantic error (an item of ``ValidationError.errors()``)."""
    loc: Loc = tuple(error["loc"])
    name = display(loc, labels)
    if loc in origins:
        name += f" (from {origins[loc]})"
    return problem(name, _text(error, loc, data))


def _text(error: Any, loc: Loc, data: dict[str, Any]) -> str:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    secret = is_secret(loc)
    got = shown(value, secret)
    section, key = (str(loc[0]), str(loc[-1])) if loc else ("", "")
    if kind == "missing":
        where = "the file" if loc[0] in SECTIONS else "the block"
        var = variable(loc, data)
        return f"missing: set it in {where}" + (f" or with {var}" if var else "")
    if kind == "extra_forbidden":
        return unknown_section(section, value) if len(loc) == 1 else unknown_key(section, key)
    if kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        return f"must be {words} {shown(ctx[bound], False)}, got {got}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        text = f"must be one of {', '.join(allowed)}; got {got}"
        near = closest(str(value), allowed) if isinstance(value, str) else None
        return text + (f"; did you mean {near}?" if near else "")
    if kind == "string_too_short":
        n = ctx["min_length"]
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters, got {len(str(value))}"
    if kind == "too_short":
        text = f"must list at least {_items(ctx['min_length'])}, got {ctx.get('actual_length')}"
        info = field(section, key) if len(loc) in (2, 3) else None
        return text + ("; leave the key out for its default"
                       if info is not None and not info.is_required() else "")
    if kind == "too_long":
        return f"must list at most {_items(ctx['max_length'])}, got {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == TENANT:
        return f"must hold only letters, digits and _ . + -, got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind == "int_from_float":
        return f"must be a whole number, got {got}"
    prefix = kind.split("_")[0]
    if prefix in _KINDS and kind.endswith(("_type", "_parsing")):
        return _wrong_type(prefix, loc, value, got)
    if kind in ("value_error", "assertion_error"):
        return str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"not accepted ({str(error['msg']).lower()}), got {got}"


def _wrong_type(prefix: str, loc: Loc, value: Any, got: str) -> str:
    if len(loc) == 1:
        return f"must be a [{loc[0]}] table, got {got}"
    text = f"must be {_KINDS[prefix]}, got {got}"
    if prefix == "string" and isinstance(value, (int, float)) and not is_secret(loc):
        return text + "; write it in quotes"
    if isinstance(value, str) and _reads_as(prefix, value):
        return text + "; write it without quotes"
    if prefix == "list":
        return text + '; write it as ["a", "b"]'
    return text


def _reads_as(prefix: str, text: str) -> bool:
    if prefix == "bool":
        return text in ("true", "false")
    try:
        (int if prefix == "int" else float)(text)
    except ValueError:
        return False
    return prefix in ("int", "float")


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"
