"""Strict readers for the fields of provider input: webhook bodies, polled answers, API bodies.

Pure code that imports nothing from callbridge, so every provider (and
:mod:`bridge.upstream.kazoo`) can use it without an import cycle. Each reader takes the raw JSON value and the field's name and
returns the value in its documented form, or raises :class:`FieldError`, whose message names the
field and the rule but never repeats the value (it may be a secret, or megabytes of junk).

The rules, common to every reader:

- booleans are never numbers (``True`` is an ``int`` in Python, never in a provider's JSON);
- digits are ASCII ``0-9`` only: Python's ``int()`` and ``float()`` also read Arabic-Indic,
  full-width and other Unicode digits, ``"1_000"``, ``"nan"``, ``"inf"`` and ``"1e40"``;
- every number has explicit bounds, checked before it is converted, so nothing past them (a
  JSON ``1e40`` or ``10**40``) is ever turned into a huge ``int`` or kept as an infinite float;
- identifiers are non-empty, bounded and printable (no NUL or other control character, no
  line or paragraph separator); text may contain spaces but no control character.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: The largest value of a signed 64-bit integer: what JSON encoders and Redis accept.
INT64_MAX = 2**63 - 1
#: The longest call any provider reports, in seconds (31 days, AntBuddy's history window).
MAX_CALL_SECONDS = 31 * 86_400

_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,19}(?:\.[0-9]{1,9})?")
#: C0 and C1 control characters, DEL, line/paragraph separators and lone surrogates.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class FieldError(ValueError):
    """A provider field that is missing or malformed.

    ``field`` names it (as the provider spells it, with its path when nested); the message is
    ``"<field> <problem>"`` and never includes the value.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def integer(value: Any, field: str, *, lo: int, hi: int, text: bool = True,
            integral_floats: bool = True) -> int:
    """An integer in ``lo..hi`` from a JSON integer, a whole JSON float (``16.0``, when
    ``integral_floats``), or a string of ASCII digits with an optional ``-`` (when ``text``;
    blanks around it are ignored). FieldError otherwise, and for None."""
    if value is None:
        raise FieldError(field, "is missing")
    if isinstance(value, bool):
        raise FieldError(field, "must be a number, not a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not integral_floats or not math.isfinite(value) or not value.is_integer():
            raise FieldError(field, "must be a whole number")
        if not lo <= value <= hi:  # compared as a float: never build int(1e308)
            raise FieldError(field, f"must be in {lo}..{hi}")
        number = int(value)
    elif isinstance(value, str) and text:
        stripped = value.strip()
        if not _INTEGER_TEXT.fullmatch(stripped):
            raise FieldError(field, "must be a whole number written in ASCII digits")
        number = int(stripped)
    else:
        raise FieldError(field, "must be a number")
    if not lo <= number <= hi:
        raise FieldError(field, f"must be in {lo}..{hi}")
    return number


def number(value: Any, field: str, *, lo: float, hi: float, text: bool = True) -> float:
    """A finite number in ``lo..hi`` from a JSON number or (when ``text``) a decimal string
    of ASCII digits (``"1.5"``, ``"-3"``; no exponent, no ``nan``/``inf``). FieldError
    otherwise, and for None."""
    if value is None:
        raise FieldError(field, "is missing")
    if isinstance(value, bool):
        raise FieldError(field, "must be a number, not a boolean")
    if isinstance(value, int):
        if not lo <= value <= hi:  # before float(): float(10**400) overflows
            raise FieldError(field, f"must be in {lo:g}..{hi:g}")
        return float(value)
    if isinstance(value, float):
        result = value
    elif isinstance(value, str) and text:
        stripped = value.strip()
        if not _DECIMAL_TEXT.fullmatch(stripped):
            raise FieldError(field, "must be a decimal number written in ASCII digits")
        result = float(stripped)
    else:
        raise FieldError(field, "must be a number")
    if not math.isfinite(result) or not lo <= result <= hi:
        raise FieldError(field, f"must be a finite number in {lo:g}..{hi:g}")
    return result


def identifier(value: Any, field: str, *, max_length: int = 256, numbers: bool = False) -> str:
    """An id: a string of 1..``max_length`` printable characters (blanks around it removed,
    none inside). With ``numbers``, a non-negative JSON integer is accepted as its decimal
    text (for providers that send numeric ids). FieldError otherwise, and for None."""
    if value is None:
        raise FieldError(field, "is missing")
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= INT64_MAX:
            raise FieldError(field, f"must be in 0..{INT64_MAX}")
        return str(value)
    if not isinstance(value, str):
        raise FieldError(field, "must be a string")
    stripped = value.strip()
    if not stripped:
        raise FieldError(field, "is empty")
    if len(stripped) > max_length:
        raise FieldError(field, f"is longer than {max_length} characters")
    if not stripped.isprintable() or any(c.isspace() for c in stripped):
        raise FieldError(field, "must be printable, without blanks or control characters")
    return stripped


def text(value: Any, field: str, *, max_length: int = 256, numbers: bool = False) -> str | None:
    """Display text: None for None or a blank string, else the string (blanks around it
    removed) of at most ``max_length`` characters with no control character. With
    ``numbers``, a JSON integer in the signed 64-bit range reads as its decimal text (phone
    numbers sent unquoted). FieldError otherwise."""
    if value is None:
        return None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        if not -INT64_MAX <= value <= INT64_MAX:
            raise FieldError(field, "is out of range")
        return str(value)
    if not isinstance(value, str):
        raise FieldError(field, "must be a string")
    stripped = value.strip()
    if len(stripped) > max_length:
        raise FieldError(field, f"is longer than {max_length} characters")
    if _CONTROL.search(stripped):
        raise FieldError(field, "must not contain control characters")
    return stripped or None


def has_control(value: str) -> bool:
    """Whether ``value`` holds a control character (see :func:`text`)."""
    return _CONTROL.search(value) is not None
