"""Pure helpers for reading Kazoo event payloads, whatever their dialect.

Kazoo 3.x and Socket.IO gateways send Title-Case-With-Dashes keys (``Call-ID``,
``Custom-Channel-Vars`` -> ``Account-ID``) and numbers as strings; Kazoo 4.x sends
lower_snake_case keys (``call_id``, ``custom_channel_vars`` -> ``account_id``), integers, and
drops null values. :func:`canonical` folds both into one shape (lower_snake keys, recursively),
and the typed getters read values of either type. Nothing here raises on odd input: a value of
the wrong type reads as ``None``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

#: Seconds from 0000-01-01 (proleptic Gregorian) to the Unix epoch: Kazoo's ``Timestamp`` base.
GREGORIAN_OFFSET = 62_167_219_200

#: Nesting kept by :func:`canonical`; deeper values are dropped (Kazoo nests two levels).
MAX_DEPTH = 32

#: ``Msg-ID`` values read as microseconds only inside this window (2000-01-01 .. 2100-01-01),
#: so a millisecond or second count, or a random id made of digits, is not mistaken for one.
_MIN_MICROS = 946_684_800 * 1_000_000
_MAX_MICROS = 4_102_444_800 * 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def canonical_key(key: object) -> str:
    """``Call-ID`` and ``call_id`` both give ``call_id``."""
    return str(key).strip().lower().replace("-", "_")


def canonical(payload: dict[Any, Any], _depth: int = 0) -> dict[str, Any]:
    """A copy of ``payload`` with every dict key (nested ones too) in lower_snake_case.

    Lists are walked, so dicts inside lists are converted as well. When two keys fold to the
    same name (``Call-ID`` and ``call_id`` in one payload) the first non-null one wins.
    """
    out: dict[str, Any] = {}
    for key, value in payload.items():
        name = canonical_key(key)
        if out.get(name) is None:
            out[name] = _canonical_value(value, _depth + 1)
    return out


def _canonical_value(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return canonical(value, depth)
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v, depth + 1) for v in value]
    return value


def get(payload: dict[str, Any], *path: str) -> Any:
    """The value at ``path`` in a canonical payload, or None.

    Nested dicts are followed; a flattened dotted key (``custom_channel_vars.account_id``) is
    accepted too. A non-dict on the way reads as missing.
    """
    node: Any = payload
    for part in path:
        if not isinstance(node, dict):
            node = None
            break
        node = node.get(part)
    if node is None and len(path) > 1:
        node = payload.get(".".join(path))
    return node


def as_str(value: Any) -> str | None:
    """A non-empty string, from a string or a number; None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def as_int(value: Any) -> int | None:
    """An integer from ``12``, ``"12"``, ``12.0`` or ``" 12 "``; None for ``""`` and the rest.

    Fractions are truncated towards zero (Kazoo counts whole seconds).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) else None
    return None


def user_part(uri: Any) -> str | None:
    """The user of ``1001@realm``, ``sip:1001@realm`` or ``"Name" <sip:1001@realm>;tag=x``.

    A value without ``@`` is returned whole (after removing a ``sip:`` scheme).
    """
    text = as_str(uri)
    if text is None:
        return None
    if "<" in text and ">" in text.split("<", 1)[1]:
        text = text.split("<", 1)[1].split(">", 1)[0]
    text = text.strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    user = text.split("@", 1)[0].split(";", 1)[0].strip()
    return user or None


def micros_from_msg_id(value: Any) -> int | None:
    """``Msg-ID`` as microseconds since the Unix epoch, when it plausibly is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or len(text) > 19:
            return None
        micros = int(text)
    elif isinstance(value, int):
        micros = value
    else:
        return None
    return micros if _MIN_MICROS <= micros < _MAX_MICROS else None


def micros_from_gregorian(value: Any) -> int | None:
    """Kazoo ``Timestamp`` (seconds since year 0) as microseconds since the Unix epoch."""
    micros: int | None = None
    whole = as_int(value)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        micros = None if whole is None else (whole - GREGORIAN_OFFSET) * 1_000_000
    elif whole is not None:
        # A fractional value ("63879...5.25"): keep the fraction, to the microsecond.
        seconds = float(value) - GREGORIAN_OFFSET
        micros = round(seconds * 1_000_000)
    if micros is None:
        return None
    # Same plausibility window as Msg-ID: a Unix time sent by mistake lands near year 0.
    return micros if _MIN_MICROS <= micros < _MAX_MICROS else None


def iso_from_micros(micros: int) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2024-05-06T07:08:09.123Z`` (truncated)."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
