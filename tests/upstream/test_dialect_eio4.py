"""Engine.IO 4 / Socket.IO v4 client codec: open, connect, pings, events, refusals, redaction."""

from __future__ import annotations

import json
import random
import secrets

import pytest

from bridge.upstream.dialects import codec_for
from bridge.upstream.dialects.base import (
    AuthFailed,
    CallSignal,
    Malformed,
    Ready,
    ServerClosed,
    UpstreamError,
)
from bridge.upstream.dialects.eio4 import EngineIO4Codec
from tests.upstream.frames import load

CREATE = load("kazoo3_channel_create.json")
OPEN = {"sid": "Lbo5JLzTotvW3g2LAAAA", "upgrades": [], "pingInterval": 10000,
        "pingTimeout": 5000, "maxPayload": 1000000}


def event(name: str, payload: object, ack: str = "") -> str:
    return f"42{ack}" + json.dumps([name, payload], ensure_ascii=False)


def test_contract_flags_and_url() -> None:
    codec = codec_for("engineio-4")
    assert isinstance(codec, EngineIO4Codec)
    assert not codec.ready_on_open and not codec.acks_subscribe
    assert codec.handshake_url("wss://h") is None and codec.keepalive_interval is None
    assert codec.dead_after == 45.0
    assert codec.websocket_url("wss://gw.example.com:5557") == \
        "wss://gw.example.com:5557/socket.io/?EIO=4&transport=websocket"
    assert codec.websocket_url("http://127.0.0.1:8000/") == \
        "ws://127.0.0.1:8000/socket.io/?EIO=4&transport=websocket"


def test_open_connect_ping_and_events() -> None:
    codec = EngineIO4Codec()
    assert codec.receive("0" + json.dumps(OPEN)) == []
    assert codec.data_to_send() == ["40"]
    assert codec.dead_after == (OPEN["pingInterval"] + OPEN["pingTimeout"]) / 1000
    assert codec.sid == OPEN["sid"]
    assert codec.receive('40{"sid":"wZX3oN0bSVIhsaknAAAI"}') == [Ready()]
    assert codec.receive("2") == []
    assert codec.data_to_send() == ["3"]
    assert codec.receive(event("CHANNEL_CREATE", CREATE)) == [CallSignal("CHANNEL_CREATE", CREATE)]
    assert codec.receive(event("CHANNEL_ANSWER", CREATE, ack="12")) == [
        CallSignal("CHANNEL_ANSWER", CREATE)]
    assert codec.receive("41") == [ServerClosed("socket.io disconnect packet")]
    assert isinstance(codec.receive("1")[0], ServerClosed)


def test_open_without_timings_keeps_the_default() -> None:
    codec = EngineIO4Codec()
    codec.receive('0{"sid":"abc"}')
    assert codec.dead_after == 45.0 and codec.data_to_send() == ["40"]


def test_recorded_session_with_malformed_frames_interleaved() -> None:
    codec = EngineIO4Codec()
    frames = [
        "0" + json.dumps(OPEN),
        "40",
        "42[\"CHANNEL_CREATE\",{\"Call-ID\":",        # truncated
        "",
        "9",
        "42{\"name\":\"CHANNEL_CREATE\"}",            # not an array
        "42[]",
        "42[5,{}]",                                   # name not a string
        "451-[\"CHANNEL_CREATE\",{\"_placeholder\":true,\"num\":0}]",  # binary event
        "0not json",
        '42/admin,["CHANNEL_CREATE",{}]',             # another namespace: ignored
        "6",
        "40",                                         # repeated connect: not a second Ready
        event("CHANNEL_CREATE", CREATE),
        "2",
        event("CHANNEL_BRIDGE", ["not", "an", "object"]),
    ]
    signals = [s for f in frames for s in codec.receive(f)]
    assert signals.count(Ready()) == 1
    calls = [s for s in signals if isinstance(s, CallSignal)]
    assert calls == [CallSignal("CHANNEL_CREATE", CREATE)]
    assert sum(isinstance(s, Malformed) for s in signals) == 9
    assert len(signals) == 11
    assert codec.data_to_send() == ["40", "3"]


def test_subscribe_frames() -> None:
    codec = EngineIO4Codec()
    token = secrets.token_urlsafe(24)
    assert codec.subscribe("acct-1", token, "call.CHANNEL_CREATE.*") is None
    codec.unsubscribe("acct-1", token, "call.CHANNEL_CREATE.*")
    first, second = codec.data_to_send()
    args = {"account_id": "acct-1", "auth_token": token, "binding": "call.CHANNEL_CREATE.*"}
    assert first.startswith("42") and json.loads(first[2:]) == ["subscribe", args]
    assert json.loads(second[2:]) == ["unsubscribe", args]
    codec.close()
    assert codec.data_to_send() == ["41"]


def test_auth_failure_event_never_carries_the_token() -> None:
    codec = EngineIO4Codec()
    token = secrets.token_urlsafe(30)
    codec.subscribe("acct-1", token, "call.*.*")
    body = {"message": "invalid auth token", "cause": token}
    (signal,) = codec.receive(event("auth_failure", body))
    assert signal == AuthFailed("invalid auth token")
    (signal,) = codec.receive(event("error", {"message": f"bad request {token}"}))
    assert isinstance(signal, UpstreamError) and token not in signal.message


@pytest.mark.parametrize(("frame", "kind"), [
    ('44{"message":"Invalid token TOKEN"}', AuthFailed),
    ('44{"message":"not authorized","data":{"auth_token":"TOKEN"}}', AuthFailed),
    ('44{"message":"server is full"}', UpstreamError),
    ("44", UpstreamError),
    ('44{"message":"token TOKEN', AuthFailed),
])
def test_connect_refusals_are_classified_and_redacted(frame: str, kind: type) -> None:
    codec = EngineIO4Codec()
    token = secrets.token_urlsafe(30)
    codec.subscribe("acct-1", token, "call.*.*")
    (signal,) = codec.receive(frame.replace("TOKEN", token))
    assert type(signal) is kind
    assert token[:8] not in repr(signal)


def test_never_raises_on_garbage() -> None:
    rng = random.Random(7)
    alphabet = ["0", "1", "2", "4", "42", "44", "40", "/", ",", "[", "]", "{", "}", '"x"', ":",
                "null", '"auth_failure"', '"error"', "😀"]
    codec = EngineIO4Codec()
    for _ in range(3000):
        frame = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 15)))
        assert isinstance(codec.receive(frame), list)
    assert codec.receive(event("CHANNEL_CREATE", CREATE)) == [CallSignal("CHANNEL_CREATE", CREATE)]
