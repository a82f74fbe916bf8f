"""Which pub/sub reply means what, without a socket."""

from __future__ import annotations

from bridge.redisconn.channelset import ChannelSet


def test_a_subscribe_is_confirmed_by_its_reply_only_for_a_kept_channel() -> None:
    channels = ChannelSet([b"a"])
    channels.sending("SUBSCRIBE", [b"probe", b"a"])
    assert channels.awaiting([b"probe", b"a"])
    assert channels.reply([b"subscribe", b"probe", 1]) is None  # not kept: nobody is told
    assert channels.reply([b"subscribe", b"a", 2]) == ("subscribed", b"a", b"")
    assert not channels.awaiting([b"probe", b"a"])


def test_only_the_reply_to_the_latest_subscribe_confirms() -> None:
    channels = ChannelSet()
    channels.sending("SUBSCRIBE", channels.add([b"x"]))
    channels.sending("UNSUBSCRIBE", channels.remove([b"x"]))
    channels.sending("SUBSCRIBE", channels.add([b"x"]))
    assert channels.reply([b"subscribe", b"x", 1]) is None
    assert channels.reply([b"unsubscribe", b"x", 0]) is None  # ours: not an ended one
    assert channels.reply([b"subscribe", b"x", 1]) == ("subscribed", b"x", b"")


def test_an_unsolicited_unsubscribe_of_a_kept_channel_ends_it() -> None:
    channels = ChannelSet([b"{c}"])
    assert channels.reply([b"sunsubscribe", b"{c}", 0]) == ("ended", b"{c}", b"")
    assert channels.reply([b"sunsubscribe", b"{other}", 0]) is None


def test_messages_are_reported_as_bytes_and_a_new_connection_owes_nothing() -> None:
    channels = ChannelSet([b"a"])
    assert channels.reply([b"message", b"a", b"x"]) == ("message", b"a", b"x")
    assert channels.reply([b"smessage", b"a", "y"]) == ("message", b"a", b"y")
    assert channels.reply(None) is None
    channels.sending("SUBSCRIBE", [b"a"])
    channels.new_connection()
    assert not channels.awaiting([b"a"])
    assert channels.add([b"a", b"b", b"b"]) == [b"b"] and channels.remove([b"c", b"a"]) == [b"a"]
