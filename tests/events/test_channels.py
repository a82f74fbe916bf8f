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
