"""The strict field readers shared by every provider: ASCII digits, bounds, printable ids."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.common import fields
from bridge.common.fields import FieldError

NOT_INTEGERS: list[Any] = [1e40, 10**40, -1e308, 2**63, True, False, None, "", " ", "١٢٣",
                           "１２", "²", "NaN", "nan", "inf", "-inf", "1e3", "1_000", "0x10",
                           "12\x00", "1 2", "+5", 12.5, float("nan"), float("inf"), [1], {}]


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_integer_refuses(value: Any) -> None:
    with pytest.raises(FieldError) as info:
        fields.integer(value, "count", lo=0, hi=1000)
    assert info.value.field == "count" and str(info.value).startswith("count ")
    if isinstance(value, str) and len(value) > 2:
        assert value not in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (1000, 1000), ("17", 17),
                                                 (" 17 ", 17), (16.0, 16), ("0007", 7)])
def test_integer_reads(value: Any, expected: int) -> None:
    assert fields.integer(value, "count", lo=0, hi=1000) == expected


def test_integer_options() -> None:
    with pytest.raises(FieldError):
        fields.integer("5", "n", lo=0, hi=9, text=False)
    with pytest.raises(FieldError):
        fields.integer(5.0, "n", lo=0, hi=9, integral_floats=False)
    assert fields.integer("-5", "n", lo=-9, hi=9) == -5


@pytest.mark.parametrize("value", [1e40, 10**400, -1e308, True, "NaN", "inf", "1e3", "١.٥",
                                   "1,5", float("nan"), float("inf"), "", None, "1.5\x00"])
def test_number_refuses(value: Any) -> None:
    with pytest.raises(FieldError):
        fields.number(value, "mos", lo=0.0, hi=5.0)


@pytest.mark.parametrize(("value", "expected"), [(4.1, 4.1), ("4.1", 4.1), (3, 3.0),
                                                 (" 0 ", 0.0)])
def test_number_reads(value: Any, expected: float) -> None:
    assert fields.number(value, "mos", lo=0.0, hi=5.0) == expected


@pytest.mark.parametrize("value", ["", "   ", "a\x00b", "a\nb", "a b", "a\u2028b", "x" * 65,
                                   12, 1.5, True, None, ["a"]])
def test_identifier_refuses(value: Any) -> None:
    with pytest.raises(FieldError) as info:
        fields.identifier(value, "call_id", max_length=64)
    assert info.value.field == "call_id"


def test_identifier_reads() -> None:
    assert fields.identifier(" fa278be48dc2_117793 ", "id") == "fa278be48dc2_117793"
    assert fields.identifier(12, "id", numbers=True) == "12"
    for bad in (-1, 2**63, True):
        with pytest.raises(FieldError):
            fields.identifier(bad, "id", numbers=True)


def test_text() -> None:
    assert fields.text(None, "name") is None and fields.text("  ", "name") is None
    assert fields.text(" Thanh Nguyen ", "name") == "Thanh Nguyen"
    assert fields.text(84901234567, "phone", numbers=True) == "84901234567"
    for bad in ("a\x00", "a\x1b[31m", "a\x85b", "x" * 257, 5, True, 1.5):
        with pytest.raises(FieldError):
            fields.text(bad, "name")
    with pytest.raises(FieldError):
        fields.text(10**40, "phone", numbers=True)
