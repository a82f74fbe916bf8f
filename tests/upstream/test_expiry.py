"""parse_expire: every accepted form of ``expire``, the magnitude bands, and the fallbacks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bridge.upstream.expiry import parse_expire

NOW = 1_750_000_000.25  # a 2025 wall-clock instant
DEFAULT = 3600.0


def parse(value: object) -> tuple[float, str]:
    return parse_expire(value, now=NOW, default_lifetime=DEFAULT)


@pytest.mark.parametrize("ttl", [0, 1, 2.5, 3600, 86_400 * 365, 999_999_999])
def test_seconds_to_live_is_added_to_now(ttl: float) -> None:
    assert parse(ttl) == (NOW + ttl, "ttl")
    assert parse(str(ttl)) == (NOW + ttl, "ttl")


def test_unix_seconds_milliseconds_microseconds_nanoseconds_name_the_same_instant() -> None:
    instant = NOW + 1800
    cases = {
        "unix": int(instant),
        "unix_ms": int(instant * 1e3),
        "unix_us": int(instant * 1e6),
        "unix_ns": int(instant * 1e9),
    }
    for rule, value in cases.items():
        for form in (value, str(value), float(value)):
            expires_at, got_rule = parse(form)
            assert got_rule == rule, form
            assert expires_at == pytest.approx(instant, abs=1.0), form


def test_band_edges() -> None:
    assert parse(1e9 - 1)[1] == "ttl"
    assert parse(1e9)[1] == "unix"
    assert parse(1e11)[1] == "unix_ms"
    assert parse(1e14)[1] == "unix_us"
    assert parse(1e17)[1] == "unix_ns"
    assert parse(1e20)[1] == "default"


@pytest.mark.parametrize(
    "text, instant",
    [
        ("2025-06-15T12:00:00Z", datetime(2025, 6, 15, 12, tzinfo=timezone.utc)),
        ("2025-06-15T12:00:00.500Z", datetime(2025, 6, 15, 12, 0, 0, 500_000, timezone.utc)),
        ("2025-06-15T19:00:00+07:00", datetime(2025, 6, 15, 12, tzinfo=timezone.utc)),
        ("2025-06-15 12:00:00", datetime(2025, 6, 15, 12, tzinfo=timezone.utc)),  # naive = UTC
        (" 2025-06-15T12:00:00-02:30 ",
         datetime(2025, 6, 15, 12, tzinfo=timezone(-timedelta(hours=2, minutes=30)))),
    ],
)
def test_iso_8601(text: str, instant: datetime) -> None:
    assert parse(text) == (instant.timestamp(), "iso")


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "12 hours", True, False, -5, "-5", float("nan"), float("inf"),
     "inf", 1e25, {"seconds": 60}, [3600], "x" * 1000, "2025-13-45T99:00:00Z"],
)
def test_absent_or_garbage_falls_back_to_default_lifetime(value: object) -> None:
    assert parse(value) == (NOW + DEFAULT, "default")


def test_past_expiry_stays_in_the_past() -> None:
    past_unix = int(NOW) - 600
    for value in (past_unix, past_unix * 1000,
                  datetime.fromtimestamp(past_unix, timezone.utc).isoformat()):
        expires_at, rule = parse(value)
        assert rule != "default"
        assert expires_at < NOW
    assert parse(0) == (NOW, "ttl")  # zero seconds to live: expired on arrival


def test_default_lifetime_is_the_callers() -> None:
    assert parse_expire(None, now=100.0, default_lifetime=42.0) == (142.0, "default")
