"""Channel names and the patterns tokens grant them with (pure)."""

from __future__ import annotations

import pytest

from bridge.events import channels


@pytest.mark.parametrize(("value", "escaped"), [
    ("1001", "1001"),
    ("user.name+x_y-z", "user.name+x_y-z"),
    ("a:b", "a%3Ab"),
    ("a b", "a%20b"),
    ("Đức", "%C4%90%E1%BB%A9c"),
    ('x"}', "x%22%7D"),
])
def test_segments_escape_everything_outside_the_alphabet(value, escaped):
    assert channels.segment(value) == escaped
    name = channels.extension_calls("acme", value)
    assert channels.is_valid_channel(name)
    assert name.count(":") == 2


def test_channel_builders():
    assert channels.tenant_calls("acme") == "calls:acme"
    assert channels.extension_calls("acme", "1001") == "calls:acme:1001"
    assert channels.system("acme") == "system:acme"


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("calls:acme:*", ["calls:acme:1001", "calls:acme:"], ["calls:acme", "calls:acme2:1",
                                                          "calls:acme:1:2", "system:acme"]),
    ("calls:acme*", ["calls:acme", "calls:acme2"], ["calls:acme:1001"]),
    ("calls:**", ["calls:acme", "calls:acme:1001", "calls:x:y:z"], ["system:acme", "calls"]),
    ("calls:acme:10?", ["calls:acme:101"], ["calls:acme:10", "calls:acme:1011",
                                            "calls:acme:10:"]),
    ("calls:acme.b", ["calls:acme.b"], ["calls:acmexb"]),
])
def test_granted_is_segment_aware(pattern, yes, no):
    assert channels.is_valid_pattern(pattern)
    for channel in yes:
        assert channels.granted(channel, [pattern]), channel
    for channel in no:
        assert not channels.granted(channel, [pattern]), channel


def test_patterns_reject_characters_outside_the_alphabet():
    assert not channels.is_valid_pattern("calls:[ab]")
    assert not channels.is_valid_pattern("calls:a b")
    assert not channels.is_valid_pattern("")


@pytest.mark.parametrize("pattern", ["calls:acme", "calls:acme:*", "calls:*:1001", "calls:**",
                                     "calls:acme:10?", "*:acme", "**", "calls:ac%20me"])
def test_well_formed_patterns(pattern):
    assert channels.pattern_problem(pattern) is None


@pytest.mark.parametrize(("pattern", "words"), [
    ("calls:acme:**x", "'*' stands for a whole segment"),
    ("calls:acme:1001*", "'*' stands for a whole segment"),
    ("calls:acme*", "'*' stands for a whole segment"),
    ("calls:*x:1", "'*' stands for a whole segment"),
    ("calls::*", "a segment is empty"),
    (":calls", "a segment is empty"),
    ("calls:acme:", "a segment is empty"),
    ("", "may not be empty"),
    ("calls:[ab]", "a pattern is made of"),
    ("calls:" + "a" * 200, "at most 200 characters"),
])
def test_malformed_patterns_say_why(pattern, words):
    problem = channels.pattern_problem(pattern)
    assert problem is not None and words in problem


def test_tokens_already_issued_keep_their_meaning():
    # A pattern new tokens may not carry still verifies, and still grants what it granted.
    for pattern in ("calls:acme*", "calls:acme:1001*", "calls::*"):
        assert channels.is_valid_pattern(pattern)
    assert channels.granted("calls:acme2", ["calls:acme*"])
    assert not channels.granted("calls:acme:1", ["calls:acme*"])


@pytest.mark.parametrize(("pattern", "words"), [
    ("calls:*", "every tenant"),
    ("**", "every channel of every tenant"),
    ("call:acme", "did you mean calls:acme?"),
    ("verification:acme", "did you mean verifications:acme?"),
    ("zzz:acme", "(kinds: calls, system, presence, verifications)"),
    ("calls:acme:1:2", "matches no channel"),
    ("presence:acme:1001", "matches no channel"),
    ("*", "'**' grants every channel"),
])
def test_odd_patterns_are_named(pattern, words):
    assert any(words in warning for warning in channels.pattern_warnings(pattern))


@pytest.mark.parametrize("pattern", ["calls:acme", "calls:acme:*", "*:acme", "calls:acme:**",
                                     "system:acme", "calls:ac?e"])
def test_plain_patterns_have_no_warning(pattern):
    assert channels.pattern_warnings(pattern) == []
