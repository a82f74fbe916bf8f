"""The consumer groups' names and script replies, without Redis."""

from __future__ import annotations

from bridge.consumer.groupwire import DeadLetter, dead_key, group_name, parse_settled


def test_names_live_under_the_prefix_and_the_channels_slot() -> None:
    assert group_name("callbridge:", "webhooks") == "callbridge:webhooks"
    assert dead_key("callbridge:", "calls:acme", "webhooks") == (
        "callbridge:{calls:acme}:dead:webhooks")


def test_a_reply_gives_deliveries_and_dead_letters() -> None:
    reply = [b"0-0",
             [[b"1-0", b'{"id":"a"}', 2]],
             [[b"2-0", b"max_deliveries", 5, b"w1", b'{"id":"b"}', b"9-0"],
              [b"3-0", b"trimmed", 1, b"w2", False, b"9-1"]]]
    cursor, delivered, dead = parse_settled("calls:acme", "hooks", 1000, reply)
    assert cursor == "0-0"
    assert delivered == [("1-0", b'{"id":"a"}', 2)]
    assert dead == [
        DeadLetter("calls:acme", "hooks", "2-0", "max_deliveries", 5, "w1", 1000,
                   b'{"id":"b"}', "9-0"),
        DeadLetter("calls:acme", "hooks", "3-0", "trimmed", 1, "w2", 1000, None, "9-1"),
    ]
