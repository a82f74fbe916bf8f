"""bridge.downstream.protocol: pure parsing and encoding, no sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge.downstream import protocol as p


def test_parse_each_client_message() -> None:
    assert p.parse('{"type":"auth","token":"abc.def.ghi"}') == p.Auth("abc.def.ghi")
    assert p.parse(b'{"type":"subscribe","id":"s1","channels":["calls:acme:1001","calls:acme"]}') \
        == p.Subscribe("s1", ("calls:acme:1001", "calls:acme"))
    assert p.parse('{"type":"unsubscribe","id":7,"channels":["system:acme"]}') \
        == p.Unsubscribe(7, ("system:acme",))
    assert p.parse('{"type":"ping"}') == p.Ping(None)
    assert p.parse('{"type":"ping","id":"x"}') == p.Ping("x")


def test_duplicate_channels_are_collapsed_in_order() -> None:
    msg = p.parse('{"type":"subscribe","channels":["b:1","a:1","b:1"]}')
    assert msg == p.Subscribe(None, ("b:1", "a:1"))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", p.E_MALFORMED),
        ("", p.E_MALFORMED),
        ("[1,2]", p.E_MALFORMED),
        ('"ping"', p.E_MALFORMED),
        ('{"type":"shout"}', p.E_UNKNOWN_TYPE),
        ('{"id":1}', p.E_BAD_REQUEST),
        ('{"type":3}', p.E_BAD_REQUEST),
        ('{"type":"auth"}', p.E_BAD_REQUEST),
        ('{"type":"auth","token":""}', p.E_BAD_REQUEST),
        ('{"type":"subscribe"}', p.E_BAD_REQUEST),
        ('{"type":"subscribe","channels":[]}', p.E_BAD_REQUEST),
        ('{"type":"subscribe","channels":"calls:acme"}', p.E_BAD_REQUEST),
        ('{"type":"subscribe","channels":[1]}', p.E_BAD_REQUEST),
        ('{"type":"subscribe","channels":["calls:acme:*"]}', p.E_BAD_CHANNEL),
        ('{"type":"subscribe","channels":["calls::x"]}', p.E_BAD_CHANNEL),
        ('{"type":"unsubscribe","channels":["calls acme"]}', p.E_BAD_CHANNEL),
        ('{"type":"ping","id":true}', p.E_BAD_REQUEST),
        ('{"type":"ping","id":1.5}', p.E_BAD_REQUEST),
        ('{"type":"ping","id":{"a":1}}', p.E_BAD_REQUEST),
        ('{"type":"ping","id":"' + "x" * 65 + '"}', p.E_BAD_REQUEST),
        ('{"type":"ping","id":9007199254740993}', p.E_BAD_REQUEST),
    ],
)
def test_refused_messages(frame: str, code: str) -> None:
    error = p.parse(frame)
    assert isinstance(error, p.ProtocolError)
    assert error.code == code
    assert error.message


def test_error_keeps_the_client_id_when_readable() -> None:
    error = p.parse('{"type":"subscribe","id":"s9","channels":["bad channel"]}')
    assert isinstance(error, p.ProtocolError) and error.id == "s9"
    unknown = p.parse('{"type":"nope","id":4}')
    assert isinstance(unknown, p.ProtocolError) and unknown.id == 4


def test_error_message_does_not_echo_long_input() -> None:
    junk = "Z" * 5000
    error = p.parse('{"type":"' + junk + '"}')
    assert isinstance(error, p.ProtocolError)
    assert len(error.message) < 100


def decode(frame: str) -> dict[str, Any]:
    obj = orjson.loads(frame)
    assert isinstance(obj, dict)
    return obj


def test_encoders_produce_the_documented_shapes() -> None:
    assert decode(p.encode_welcome(sub="crm", expires_at=1.5e9, session="s", heartbeat=25,
                                   expiry_grace=10, idle_timeout=75)) == {
        "type": "welcome", "sub": "crm", "expires_at": 1.5e9, "session": "s", "heartbeat": 25,
        "expiry_grace": 10, "idle_timeout": 75}
    assert decode(p.encode_subscribed("a", ("x:1", "x:2"), {"x:1": "e1", "x:2": "e2"},
                                      {"x:1": "0-0", "x:2": "17-3"})) == {
        "type": "subscribed", "id": "a", "channels": ["x:1", "x:2"],
        "epochs": {"x:1": "e1", "x:2": "e2"}, "offsets": {"x:1": "0-0", "x:2": "17-3"}}
    assert decode(p.encode_unsubscribed(None, ["x:1"])) == {
        "type": "unsubscribed", "id": None, "channels": ["x:1"]}
    assert decode(p.encode_unsubscribed(None, ["x:1"], reason="not_granted")) == {
        "type": "unsubscribed", "id": None, "channels": ["x:1"], "reason": "not_granted"}
    assert decode(p.encode_renewed(4, 1.6e9)) == {"type": "renewed", "id": 4, "expires_at": 1.6e9}
    assert decode(p.encode_gap("x:1", "trimmed", "e2")) == {
        "type": "gap", "channel": "x:1", "reason": "trimmed", "epoch": "e2"}
    assert decode(p.encode_pong(3)) == {"type": "pong", "id": 3}
    assert decode(p.encode_error(p.ProtocolError("forbidden", "no", "q"))) == {
        "type": "error", "id": "q", "code": "forbidden", "message": "no"}
    beat = decode(p.encode_heartbeat(1234.56789))
    assert beat["type"] == "heartbeat" and abs(beat["ts"] - 1234.56789) < 0.001


def test_close_codes_are_distinct_and_grouped() -> None:
    codes = [p.NORMAL, p.GOING_AWAY, p.POLICY_VIOLATION, p.MESSAGE_TOO_BIG, p.INTERNAL_ERROR,
             p.SERVICE_RESTART, p.TRY_AGAIN_LATER, p.PROTOCOL_ERROR, p.AUTH_FAILED,
             p.AUTH_TIMEOUT, p.TOKEN_EXPIRED, p.TOKEN_REVOKED, p.SLOW_CONSUMER, p.CLIENT_IDLE,
             p.DISCONNECTED]
    assert len(set(codes)) == len(codes)
    assert all(1000 <= c < 1016 or 4000 <= c < 5000 for c in codes)
    assert set(p.CLOSE_ADVICE) <= set(codes)
    groups = {"now": {1001, 1012}, "backoff": {4008, 1011, 1013, 4002, 4009, 4010, 1000, 1006},
              "new_token": {4001, 4003, 4004}, "never": {4000, 1008, 1009}}
    for advice, members in groups.items():
        for code in members:
            assert p.reconnect_advice(code) == advice, code
    assert p.NEVER == frozenset(groups["never"])


def test_subscribe_with_resume() -> None:
    msg = p.parse(orjson.dumps({"type": "subscribe", "id": 1, "channels": ["a:1", "b:1"],
                                "resume": {"b:1": {"epoch": "abc", "offset": "17-2"}}}))
    assert msg == p.Subscribe(1, ("a:1", "b:1"), (("b:1", "abc", "17-2"),))
    assert p.parse('{"type":"renew","id":"r","token":"a.b.c"}') == p.Renew("r", "a.b.c")


@pytest.mark.parametrize(
    "resume",
    [[], {"c:1": {"epoch": "abc", "offset": "1-0"}}, {"a:1": "1-0"},
     {"a:1": {"epoch": "a b", "offset": "1-0"}}, {"a:1": {"epoch": "abc", "offset": "1"}},
     {"a:1": {"offset": "1-0"}}],
)
def test_bad_resume_is_refused(resume: Any) -> None:
    msg = p.parse(orjson.dumps({"type": "subscribe", "id": 2, "channels": ["a:1"],
                                "resume": resume}))
    assert msg == p.ProtocolError(p.E_BAD_REQUEST, msg.message, 2)  # type: ignore[union-attr]


def test_subscribe_with_state() -> None:
    assert p.parse('{"type":"subscribe","channels":["a:1"],"state":true}') == p.Subscribe(
        None, ("a:1",), state=True)
    assert p.parse('{"type":"subscribe","channels":["a:1"],"state":false}') == p.Subscribe(
        None, ("a:1",))


@pytest.mark.parametrize("state", [1, "true", None, {}])
def test_state_must_be_a_boolean(state: Any) -> None:
    msg = p.parse(orjson.dumps({"type": "subscribe", "id": 3, "channels": ["a:1"],
                                "state": state}))
    if state is None:  # JSON null: the option is absent
        assert msg == p.Subscribe(3, ("a:1",))
    else:
        assert msg == p.ProtocolError(p.E_BAD_REQUEST, "'state' must be true or false", 3)


LEGS = {
    "leg:a": {"call_id": "a", "extension": "10 1", "rank": 2, "started_at": "2024-05-01T10:00Z"},
    "leg:b": {"call_id": "b", "extension": "1002", "rank": 1, "started_at": "2024-05-01T10:01Z"},
}


def test_state_message_per_channel_kind() -> None:
    # An extension channel's extension is read back from its escaped name.
    ext = decode(p.encode_state("s", "calls:acme:10%201", "e1", "5-0", LEGS))
    assert ext["extensions"] == [{"extension": "10 1", "status": "talking", "calls": ["a"]}]
    assert [c["call_id"] for c in ext["calls"]] == ["a", "b"]  # the channel's own records
    tenant = decode(p.encode_state(None, "calls:acme", "e1", "5-0", LEGS))
    assert tenant == {"type": "state", "id": None, "channel": "calls:acme", "epoch": "e1",
                      "offset": "5-0", "calls": tenant["calls"],
                      "extensions": [{"extension": "10 1", "status": "talking", "calls": ["a"]},
                                     {"extension": "1002", "status": "ringing", "calls": ["b"]}]}
    presence = {"ext:1001": {"extension": "1001", "online": False, "online_at": "x"}}
    assert p.state_lists("presence:acme", presence) == (
        [], [{"extension": "1001", "status": "idle", "calls": [], "online": False}])
    for other in ("system:acme", "verifications:acme"):
        assert p.state_lists(other, LEGS) == ([], [])
