"""Redaction: every registered secret is masked wherever it appears, however many there are."""

from __future__ import annotations

import secrets

from bridge.common import redact as r


def fresh(n: int = 24) -> str:
    return secrets.token_urlsafe(n)


def test_registered_secrets_are_masked_anywhere_in_the_text() -> None:
    a, b = fresh(), fresh()
    r.register(a)
    r.register(b)
    text = f"{a}start, middle {b}{a} end {b}"
    assert r.redact(text) == f"{r.MASK}start, middle {r.MASK}{r.MASK} end {r.MASK}"
    assert r.redact("nothing secret here") == "nothing secret here"


def test_the_longest_secret_at_a_place_wins() -> None:
    short = "pfx" + fresh(6)
    long = short + fresh(6)
    r.register(short)
    r.register(long)
    assert r.redact(f"<{long}>") == f"<{r.MASK}>"
    assert r.redact(f"<{short}>") == f"<{r.MASK}>"
    assert r.redact(f"<{short}{short}>") == f"<{r.MASK}{r.MASK}>"


def test_short_values_are_not_registered() -> None:
    r.register("abc")
    r.register(None)
    r.register("")
    assert r.redact("abc abc") == "abc abc"


def test_token_shaped_values_are_masked_without_registration() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert r.MASK in r.redact(f"token {jwt}") and jwt not in r.redact(f"token {jwt}")
    assert r.redact("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer " + r.MASK
    assert r.redact('{"app_secret": "hunter2hunter2"}') == '{"app_secret": "' + r.MASK + '"}'


def test_thousands_of_secrets_each_masked_and_the_oldest_evicted(monkeypatch) -> None:
    values = ["k" + secrets.token_hex(16) for _ in range(5000)]  # hex: no "-" or "_" inside
    for value in values:
        r.register(value)
    line = " | ".join(values[::500])
    assert r.redact(line) == " | ".join([r.MASK] * 10)
    # Past the limit the oldest go first; newer ones stay masked.
    oldest = list(r._secrets)[:3]
    monkeypatch.setattr(r, "_LIMIT", len(r._secrets) - 2)
    newest = "k" + secrets.token_hex(16)
    r.register(newest)
    assert r.redact(newest) == r.MASK
    assert [r.redact(v) for v in oldest] == oldest and len(r._secrets) == r._LIMIT
    assert r.redact(values[-1]) == r.MASK


def test_the_filter_redacts_arguments_and_exceptions() -> None:
    import logging

    secret = fresh()
    r.register(secret)
    try:
        raise ValueError(f"server said: bad token {secret}")
    except ValueError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "got %s", (secret,),
                                   sys.exc_info())
    assert r.RedactingFilter().filter(record)
    assert secret not in record.getMessage() and record.getMessage().count(r.MASK) == 2
