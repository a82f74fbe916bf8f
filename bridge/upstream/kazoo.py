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
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from bridge.common.fields import INT64_MAX, MAX_CALL_SECONDS

#: Seconds from 0000-01-01 (proleptic Gregorian) to the Unix epoch: Kazoo's ``Timestamp`` base.
GREGORIAN_OFFSET = 62_167_219_200

#: Nesting kept by :func:`canonical`; deeper values are dropped (Kazoo nests two levels).
MAX_DEPTH = 32

#: ``Msg-ID`` values read as microseconds only inside this window (2000-01-01 .. 2100-01-01),
#: so a millisecond or second count, or a random id made of digits, is not mistaken for one.
_MIN_MICROS = 946_684_800 * 1_000_000
_MAX_MICROS = 4_102_444_800 * 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: Longest identifier read from a payload (Kazoo call ids are UUIDs or SIP Call-IDs).
MAX_ID = 256
_DIGITS = re.compile(r"[0-9]{1,19}")
_DECIMAL = re.compile(r"[+-]?[0-9]{1,19}(?:\.[0-9]{1,9})?")


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


def as_id(value: Any, max_length: int = MAX_ID) -> str | None:
    """An identifier (call id, Msg-ID, account id, extension): :func:`as_str`, but None
    unless it has at most ``max_length`` characters, all printable and none a blank (a NUL
    or newline in an id is never Kazoo's)."""
    text = as_str(value)
    if text is None or isinstance(value, bool):
        return None
    text = text.strip()
    if len(text) > max_length or not text.isprintable() or any(c.isspace() for c in text):
        return None
    return text


def as_int(value: Any) -> int | None:
    """An integer from ``12``, ``"12"``, ``12.0`` or ``" 12 "``; None for ``""`` and the rest.

    Text must be ASCII digits (an optional sign and decimal fraction; no exponent, ``nan``
    or Unicode digits), and the value must fit a signed 64-bit integer. Fractions are
    truncated towards zero (Kazoo counts whole seconds).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -INT64_MAX <= value <= INT64_MAX else None
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL.fullmatch(text):
            return None
        value = float(text) if "." in text else int(text)
        if isinstance(value, int):
            return value if -INT64_MAX <= value <= INT64_MAX else None
    if isinstance(value, float):
        if not math.isfinite(value) or not -INT64_MAX <= value <= INT64_MAX:
            return None
        return int(value)
    return None


def as_seconds(value: Any) -> int | None:
    """A duration in whole seconds (:func:`as_int`) within 0..31 days; None otherwise."""
    seconds = as_int(value)
    return seconds if seconds is not None and 0 <= seconds <= MAX_CALL_SECONDS else None


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
        if not _DIGITS.fullmatch(text):  # ASCII only: str.isdigit() accepts "²" and "١"
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
    if isinstance(value, int) or (isinstance(value, str) and _DIGITS.fullmatch(value.strip())):
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
