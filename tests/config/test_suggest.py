""""Did you mean": near names found, far ones not, the next step said either way."""

from __future__ import annotations

from bridge.config.suggest import closest, unknown_key, unknown_section


def test_closest_finds_near_misses_whatever_the_case() -> None:
    assert closest("histroy_length", ["url", "prefix", "history_length"]) == "history_length"
    assert closest("PROT", ["host", "port"]) == "port"
    assert closest("colour", ["host", "port", "board"]) is None


def test_unknown_keys_and_sections_say_what_there_is() -> None:
    assert unknown_key("broker", "histroy_length") == "unknown key; did you mean history_length?"
    assert unknown_key("lease", "colour") == (
        "unknown key; keys of [lease]: ttl, instance_id, handover_timeout")
    assert unknown_key("quickom", "api_kye") == "unknown key; did you mean api_key?"
    assert unknown_section("upstreams", {}) == "unknown section; did you mean [upstream]?"
    assert unknown_section("kompass", [{}]) == "unknown section; did you mean [[kompaas]]?"
    assert unknown_section("metrics", {}).startswith("unknown section; sections: [server], ")
