"""Kazoo 4.x JSON client codec: requests, replies matched by id, events, errors, redaction."""

from __future__ import annotations

import json
import random
import secrets
from typing import Any

import pytest

from bridge.upstream.dialects import codec_for
from bridge.upstream.dialects.base import (
    AuthFailed,
    CallSignal,
    Malformed,
    Subscribed,
    UpstreamError,
)
from bridge.upstream.dialects.kazoo_json import KazooJsonCodec
from tests.upstream.frames import load

DESTROY = load("kazoo4_channel_destroy.json")
ACCOUNT = DESTROY["custom_channel_vars"]["account_id"]


def reply(request_id: Any, status: str, data: Any) -> str:
    return json.dumps({"action": "reply", "request_id": request_id, "status": status, "data": data})


def event(name: str, data: Any, binding: str = "call.*.*") -> str:
    return json.dumps({
        "action": "event", "subscribed_key": binding,
        "subscription_key": f"call.{ACCOUNT}.*.*", "name": name,
        "routing_key": f"call.{ACCOUNT}.{name}.{DESTROY['call_id']}", "data": data,
    }, ensure_ascii=False)


def sent(codec: KazooJsonCodec) -> list[dict[str, Any]]:
    return [json.loads(f) for f in codec.data_to_send()]


def test_contract_flags_and_defaults() -> None:
    codec = codec_for("kazoo-json")
    assert isinstance(codec, KazooJsonCodec)
    assert codec.ready_on_open and codec.acks_subscribe and codec.handshake_url("ws://h") is None
    assert (codec.keepalive_interval, codec.dead_after) == (30.0, 90.0)
    tuned = KazooJsonCodec(keepalive_interval=5.0, dead_after=15.0)
    assert (tuned.keepalive_interval, tuned.dead_after) == (5.0, 15.0)


@pytest.mark.parametrize(("base", "url"), [
    ("wss://ws.antbuddy.com:5555", "wss://ws.antbuddy.com:5555/"),
    ("http://127.0.0.1:9000/", "ws://127.0.0.1:9000/"),
    ("https://example.net/blackhole", "wss://example.net/blackhole/"),
])
def test_websocket_url(base: str, url: str) -> None:
    assert KazooJsonCodec().websocket_url(base) == url


def test_subscribe_frames_carry_distinct_request_ids() -> None:
    codec = KazooJsonCodec()
    token = secrets.token_urlsafe(24)
    first = codec.subscribe(ACCOUNT, token, "call.CHANNEL_CREATE.*")
    second = codec.subscribe(ACCOUNT, token, "call.CHANNEL_DESTROY.*")
    third = codec.unsubscribe(ACCOUNT, token, "call.CHANNEL_CREATE.*")
    assert len({first, second, third}) == 3
    frames = sent(codec)
    assert frames[0] == {"action": "subscribe", "auth_token": token, "request_id": first,
                         "data": {"account_id": ACCOUNT, "binding": "call.CHANNEL_CREATE.*"}}
    assert frames[1]["request_id"] == second
    assert frames[2]["action"] == "unsubscribe" and frames[2]["request_id"] == third


def test_success_replies_confirm_subscriptions() -> None:
    codec = KazooJsonCodec()
    rid = codec.subscribe(ACCOUNT, secrets.token_urlsafe(24), "call.CHANNEL_CREATE.*")
    bindings = ["call.CHANNEL_CREATE.*"]
    assert codec.receive(reply(rid, "success", {"subscribed": bindings})) == [
        Subscribed(rid, ("call.CHANNEL_CREATE.*",))]
    bare = codec.subscribe(ACCOUNT, secrets.token_urlsafe(24), "call.CHANNEL_ANSWER.*")
    assert codec.receive(reply(bare, "success", {})) == [Subscribed(bare, ())]
    gone = codec.unsubscribe(ACCOUNT, secrets.token_urlsafe(24), "call.CHANNEL_ANSWER.*")
    assert codec.receive(reply(gone, "success", {"unsubscribed": ["call.CHANNEL_ANSWER.*"]})) == []


def test_ping_replies_are_not_subscriptions() -> None:
    codec = KazooJsonCodec()
    codec.keepalive()
    codec.keepalive()
    pings = sent(codec)
    assert [p["action"] for p in pings] == ["ping", "ping"]
    assert "auth_token" not in pings[0]
    assert codec.receive(reply(pings[0]["request_id"], "success", {"response": "pong"})) == []
    refused = {"errors": ["unknown action"]}
    assert codec.receive(reply(pings[1]["request_id"], "error", refused)) == []
    assert codec.receive(json.dumps({"action": "pong", "request_id": "x"})) == []
    # A reply nobody asked for, without bindings, is not a subscription either.
    assert codec.receive(reply("never-sent", "success", {"response": "pong"})) == []


def test_auth_error_reply_is_redacted_and_keeps_its_request_id() -> None:
    codec = KazooJsonCodec()
    token = secrets.token_urlsafe(30)
    rid = codec.subscribe(ACCOUNT, token, "call.*.*")
    (signal,) = codec.receive(reply(rid, "error",
                                    {"errors": [f"failed to authenticate token {token}"]}))
    assert isinstance(signal, AuthFailed) and signal.request_id == rid
    assert "failed to authenticate token" in signal.message
    assert token not in repr(signal)


def test_other_error_replies_are_upstream_errors() -> None:
    codec = KazooJsonCodec()
    rid = codec.subscribe(ACCOUNT, secrets.token_urlsafe(24), "conference.*")
    (signal,) = codec.receive(reply(rid, "error", {"errors": ["binding not supported"]}))
    assert signal == UpstreamError("binding not supported", rid)
    (signal,) = codec.receive(reply(None, "error", {"message": "rate limited"}))
    assert isinstance(signal, UpstreamError) and "rate limited" in signal.message


def test_recorded_events_with_malformed_frames_interleaved() -> None:
    codec = KazooJsonCodec()
    create = {k: v for k, v in DESTROY.items() if not k.startswith(("hangup", "billing"))}
    no_name = json.loads(event("CHANNEL_ANSWER", create))
    del no_name["name"]
    frames = [
        event("CHANNEL_CREATE", create),
        "{not json",
        "[1,2,3]",
        json.dumps({"action": "dance"}),
        json.dumps({"action": "event", "name": "CHANNEL_ANSWER", "data": [1]}),
        json.dumps({"action": "reply", "request_id": "r9"}),
        json.dumps({"action": "event", "data": {}}),
        json.dumps(no_name),
        event("CHANNEL_DESTROY", DESTROY),
        "",
    ]
    signals = [s for f in frames for s in codec.receive(f)]
    calls = [s for s in signals if isinstance(s, CallSignal)]
    assert calls == [CallSignal("CHANNEL_CREATE", create), CallSignal("CHANNEL_ANSWER", create),
                     CallSignal("CHANNEL_DESTROY", DESTROY)]
    assert sum(isinstance(s, Malformed) for s in signals) == 7
    assert len(signals) == 10


def test_malformed_excerpts_never_carry_the_token() -> None:
    codec = KazooJsonCodec()
    token = secrets.token_urlsafe(30)
    codec.subscribe(ACCOUNT, token, "call.*.*")
    (signal,) = codec.receive('{"action":"reply","status":"error","data":"' + token)
    assert isinstance(signal, Malformed) and token[:8] not in repr(signal)


def test_never_raises_on_garbage() -> None:
    rng = random.Random(4)
    alphabet = ['{', '}', '"action"', ':', '"reply"', '"event"', '"status"', '"error"', '"data"',
                ',', '[', ']', '"errors"', 'null', '1', '"request_id"', '"cb-1"', '"name"']
    codec = KazooJsonCodec()
    codec.subscribe(ACCOUNT, secrets.token_urlsafe(24), "call.*.*")
    for _ in range(3000):
        frame = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert isinstance(codec.receive(frame), list)
    final = codec.receive(event("CHANNEL_DESTROY", DESTROY))
    assert final == [CallSignal("CHANNEL_DESTROY", DESTROY)]
