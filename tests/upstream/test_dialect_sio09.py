"""Socket.IO 0.9 client codec: handshake, packets, multi-packet frames, errors, redaction."""

from __future__ import annotations

import json
import random
import secrets

import pytest

from bridge.upstream.dialects import CODECS, codec_for
from bridge.upstream.dialects.base import (
    AuthFailed,
    CallSignal,
    HandshakeError,
    Malformed,
    Ready,
    ServerClosed,
    UpstreamError,
)
from bridge.upstream.dialects.sio09 import SocketIO09Codec
from tests.upstream.frames import load

SEP = "\ufffd"
CREATE = load("kazoo3_channel_create.json")


def event(name: str, args: object) -> str:
    return "5:::" + json.dumps({"name": name, "args": args}, ensure_ascii=False)


def multi(*packets: str, utf16: bool = False) -> str:
    """Frame packets as the server does; ``utf16`` counts lengths as JavaScript does."""
    def length(p: str) -> int:
        return len(p.encode("utf-16-le")) // 2 if utf16 else len(p)
    return "".join(f"{SEP}{length(p)}{SEP}{p}" for p in packets)


def ready_codec() -> SocketIO09Codec:
    codec = SocketIO09Codec()
    codec.handshake_response(200, "4Xk2jQ9sLm0pZ7aB:25:60:websocket,xhr-polling")
    return codec


def test_registry_knows_every_dialect() -> None:
    assert set(CODECS) == {"socketio-0.9", "kazoo-json", "engineio-4"}
    first, second = codec_for("socketio-0.9"), codec_for("socketio-0.9")
    assert isinstance(first, SocketIO09Codec) and first is not second
    with pytest.raises(ValueError, match="socketio-2"):
        codec_for("socketio-2")


@pytest.mark.parametrize(("base", "handshake", "ws_base"), [
    ("wss://ws.antbuddy.com:5557", "https://ws.antbuddy.com:5557/socket.io/1/",
     "wss://ws.antbuddy.com:5557"),
    ("ws://127.0.0.1:8080/", "http://127.0.0.1:8080/socket.io/1/", "ws://127.0.0.1:8080"),
    ("https://example.net/gw", "https://example.net/gw/socket.io/1/", "wss://example.net/gw"),
    ("http://example.net:81", "http://example.net:81/socket.io/1/", "ws://example.net:81"),
])
def test_urls_map_schemes_and_keep_host_and_port(base: str, handshake: str, ws_base: str) -> None:
    codec = ready_codec()
    assert codec.handshake_url(base) == handshake
    assert codec.websocket_url(base) == f"{ws_base}/socket.io/1/websocket/4Xk2jQ9sLm0pZ7aB"


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="ftp"):
        SocketIO09Codec().handshake_url("ftp://example.net")


def test_handshake_keeps_sid_and_close_timeout() -> None:
    codec = SocketIO09Codec()
    codec.handshake_response(200, "abc123:15:45:websocket,flashsocket\n")
    assert (codec.sid, codec.heartbeat_timeout, codec.dead_after) == ("abc123", 15.0, 45.0)
    assert codec.keepalive_interval is None


def test_handshake_without_timeouts_falls_back_to_60s() -> None:
    codec = SocketIO09Codec()
    codec.handshake_response(200, "abc123:::websocket")
    assert codec.heartbeat_timeout is None and codec.dead_after == 60.0


@pytest.mark.parametrize(("status", "body"), [
    (503, "abc:25:60:websocket"),
    (403, "handshake unauthorized"),
    (200, ""),
    (200, "<html>hello</html>"),
    (200, "abc:25:60"),
    (200, "abc:25:60:websocket:extra"),
    (200, "abc:soon:60:websocket"),
    (200, "abc:25:-1:websocket"),
    (200, ":25:60:websocket"),
    (200, "abc:25:60:xhr-polling,jsonp-polling"),
])
def test_handshake_refusals(status: int, body: str) -> None:
    codec = SocketIO09Codec()
    with pytest.raises(HandshakeError):
        codec.handshake_response(status, body)
    assert codec.sid is None
    with pytest.raises(RuntimeError):
        codec.websocket_url("wss://example.net")


def test_recorded_session_with_malformed_frames_interleaved() -> None:
    codec = ready_codec()
    answer = dict(CREATE, **{"Event-Name": "CHANNEL_ANSWER"})
    destroy = dict(CREATE, **{"Event-Name": "CHANNEL_DESTROY", "Hangup-Cause": "NORMAL_CLEARING"})
    frames = [
        "1::",
        "2::",
        event("CHANNEL_CREATE", CREATE),
        "5:::{\"name\":\"CHANNEL_ANSWER\",\"args\":",   # truncated JSON
        "8::",
        "1::",                                           # repeated connect: not a second Ready
        "9:::what",                                      # unknown packet type
        "",
        event("CHANNEL_ANSWER", [answer]),               # args as a list holding one object
        "5:::[1,2]",
        "3:::plain message",
        "4:::{\"a\":1}",
        multi("2::", event("CHANNEL_DESTROY", destroy)),
        event("CHANNEL_BRIDGE", "not an object"),
        "2::",
    ]
    signals = [s for f in frames for s in codec.receive(f)]
    assert signals[0] == Ready()
    assert sum(isinstance(s, Ready) for s in signals) == 1
    calls = [s for s in signals if isinstance(s, CallSignal)]
    assert calls == [CallSignal("CHANNEL_CREATE", CREATE), CallSignal("CHANNEL_ANSWER", answer),
                     CallSignal("CHANNEL_DESTROY", destroy)]
    bad = [s for s in signals if isinstance(s, Malformed)]
    assert len(bad) == 5 and all(s.reason for s in bad)
    assert len(signals) == 1 + 3 + 5
    assert codec.data_to_send() == ["2::", "2::", "2::"]
    assert codec.data_to_send() == []


@pytest.mark.parametrize("utf16", [False, True])
def test_multi_packet_lengths_count_characters_or_utf16_units(utf16: bool) -> None:
    codec = ready_codec()
    named = dict(CREATE, **{"Caller-ID-Name": "Trần 😀 Bảo"})
    other = dict(CREATE, **{"Call-ID": "second-leg"})
    frame = multi("1::", event("CHANNEL_CREATE", named), event("CHANNEL_CREATE", other),
                  utf16=utf16)
    assert codec.receive(frame) == [Ready(), CallSignal("CHANNEL_CREATE", named),
                                    CallSignal("CHANNEL_CREATE", other)]


@pytest.mark.parametrize("frame", [
    f"{SEP}99{SEP}2::",                        # length beyond the frame
    f"{SEP}2{SEP}2::",                         # length short of the next separator
    f"{SEP}x{SEP}2::",                         # not a number
    f"{SEP}3",                                  # unterminated prefix
    f"{SEP}3{SEP}2::junk",                     # trailing bytes after the last packet
])
def test_bad_length_prefixes_are_malformed_and_the_codec_goes_on(frame: str) -> None:
    codec = ready_codec()
    signals = codec.receive(frame)
    assert signals and isinstance(signals[-1], Malformed)
    assert codec.receive(event("CHANNEL_CREATE", CREATE)) == [CallSignal("CHANNEL_CREATE", CREATE)]


def test_packets_before_a_bad_prefix_are_kept() -> None:
    codec = ready_codec()
    signals = codec.receive(multi("1::", event("CHANNEL_CREATE", CREATE)) + f"{SEP}7{SEP}2::")
    assert signals[:2] == [Ready(), CallSignal("CHANNEL_CREATE", CREATE)]
    assert isinstance(signals[2], Malformed)


def test_subscribe_and_unsubscribe_frames() -> None:
    codec = ready_codec()
    token = secrets.token_urlsafe(24)
    assert codec.subscribe("acct-1", token, "call.CHANNEL_CREATE.*") is None
    assert codec.unsubscribe("acct-1", token, "call.CHANNEL_CREATE.*") is None
    sent = codec.data_to_send()
    assert [f[:4] for f in sent] == ["5:::", "5:::"]
    args = {"account_id": "acct-1", "auth_token": token, "binding": "call.CHANNEL_CREATE.*"}
    assert json.loads(sent[0][4:]) == {"name": "subscribe", "args": [args]}
    assert json.loads(sent[1][4:]) == {"name": "unsubscribe", "args": [args]}
    codec.close()
    assert codec.data_to_send() == ["0::"]


@pytest.mark.parametrize("args_as_list", [False, True])
def test_auth_failure_never_carries_the_token(args_as_list: bool) -> None:
    codec = ready_codec()
    token = "tok" + secrets.token_hex(20)
    codec.subscribe("acct-1", token, "call.*.*")
    body = {"message": f"invalid auth token {token}", "cause": token}
    (signal,) = codec.receive(event("auth_failure", [body] if args_as_list else body))
    assert isinstance(signal, AuthFailed)
    assert "invalid auth token" in signal.message
    assert token not in repr(signal)


def test_error_event_and_error_packet_are_redacted() -> None:
    codec = ready_codec()
    token = "tok" + secrets.token_hex(20)
    codec.subscribe("acct-1", token, "call.*.*")
    (err,) = codec.receive(event("error", {"message": f"no such binding for {token}"}))
    assert isinstance(err, UpstreamError) and "no such binding" in err.message
    assert token not in err.message
    (packet,) = codec.receive("7:::2+0")
    assert isinstance(packet, UpstreamError)
    assert "unauthorized" in packet.message and "reconnect" in packet.message
    (closed,) = codec.receive("0::")
    assert isinstance(closed, ServerClosed)


def test_malformed_excerpts_never_carry_the_token() -> None:
    codec = ready_codec()
    token = "tok" + secrets.token_hex(20)
    codec.subscribe("acct-1", token, "call.*.*")
    frames = ['5:::{"name":"auth_failure","args":{"cause":"' + token + '"',
              f"{SEP}999{SEP}" + token, "x" * 70 + token]
    for frame in frames:
        (signal,) = codec.receive(frame)
        assert isinstance(signal, Malformed)
        assert token[:8] not in repr(signal)  # not even the part that fits the excerpt


def test_never_raises_on_garbage() -> None:
    rng = random.Random(9)
    alphabet = ["0", "1", "2", "5", "7", ":", "+", SEP, "{", "}", '"', "[", "]", "name", "args",
                "a", "9", ",", "😀", "\\", "null"]
    codec = ready_codec()
    for _ in range(3000):
        frame = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        assert isinstance(codec.receive(frame), list)
    assert codec.receive(event("CHANNEL_CREATE", CREATE)) == [CallSignal("CHANNEL_CREATE", CREATE)]
