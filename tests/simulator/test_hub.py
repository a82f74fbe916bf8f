"""SignalHub under real uvicorn, spoken to with raw frames of each dialect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any, AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.simulator import hub as hub_module
from bridge.simulator.hub import SignalHub
from bridge.upstream.dialects import codec_for
from bridge.upstream.dialects.base import CallSignal
from tests.simulator.conftest import SCALE, serve

DIALECTS = ("socketio-0.9", "kazoo-json", "engineio-4")
ACCOUNT = "acct-" + secrets.token_hex(3)


class FakeTokens:
    """token -> expiry (Unix seconds); unknown tokens are invalid."""

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}

    def issue(self, ttl: float = 3600.0) -> str:
        token = secrets.token_urlsafe(24)
        self.expiry[token] = time.time() + ttl
        return token

    def check(self, token: str) -> bool:
        return token in self.expiry and time.time() < self.expiry[token]

    def expires_at(self, token: str) -> float | None:
        return self.expiry.get(token)


def create_payload(call_id: str, name: str = "CHANNEL_CREATE") -> dict[str, Any]:
    return {
        "Event-Name": name, "Call-ID": call_id, "Call-Direction": "inbound",
        "Caller-ID-Number": "1001", "Callee-ID-Number": "0901234567",
        "Timestamp": 63890000000, "Duration-Seconds": 12, "Other-Leg-Call-ID": None,
        "Custom-Channel-Vars": {"Account-ID": ACCOUNT, "Username": "user1001", "Bridge-ID": None},
    }


@contextlib.asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[SignalHub, FakeTokens, str]]:
    tokens = FakeTokens()
    hub = SignalHub(tokens, **options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.close()

    async with serve(Starlette(routes=hub.routes(), lifespan=lifespan)) as host:
        yield hub, tokens, host


async def recv(ws: ClientConnection) -> str:
    async with asyncio.timeout(5 * SCALE):
        frame = await ws.recv()
    assert isinstance(frame, str)
    return frame


async def recv_close(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await recv(ws)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def wait_for(predicate: Any, what: str) -> None:
    async with asyncio.timeout(5 * SCALE):
        while not predicate():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def client(dialect: str, host: str) -> AsyncIterator[ClientConnection]:
    """A connected client, past each dialect's opening exchange."""
    if dialect == "socketio-0.9":
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://{host}/socket.io/1/", timeout=5 * SCALE)
        assert answer.status_code == 200
        sid, heartbeat, close, transports = answer.text.split(":")
        assert "websocket" in transports.split(",") and float(close) > 0
        async with connect(f"ws://{host}/socket.io/1/websocket/{sid}") as ws:
            assert await recv(ws) == "1::"
            yield ws
    elif dialect == "engineio-4":
        async with connect(f"ws://{host}/socket.io/?EIO=4&transport=websocket") as ws:
            opening = await recv(ws)
            assert opening[0] == "0"
            assert {"sid", "pingInterval", "pingTimeout"} <= json.loads(opening[1:]).keys()
            await ws.send("40")
            assert (await recv(ws)).startswith("40{")
            yield ws
    else:
        async with connect(f"ws://{host}/") as ws:
            yield ws


def subscribe_frame(dialect: str, token: str, binding: str, account: str = ACCOUNT,
                    request_id: str = "r1") -> str:
    args = {"account_id": account, "auth_token": token, "binding": binding}
    if dialect == "socketio-0.9":
        return "5:::" + json.dumps({"name": "subscribe", "args": [args]})
    if dialect == "engineio-4":
        return "42" + json.dumps(["subscribe", args])
    return json.dumps({"action": "subscribe", "auth_token": token, "request_id": request_id,
                       "data": {"account_id": account, "binding": binding}})


async def subscribe(ws: ClientConnection, hub: SignalHub, dialect: str, token: str,
                    binding: str, account: str = ACCOUNT) -> None:
    before = hub.stats()["subscribes_ok"]
    await ws.send(subscribe_frame(dialect, token, binding, account))
    if dialect == "kazoo-json":
        reply = json.loads(await recv(ws))
        assert reply["status"] == "success" and binding in reply["data"]["subscribed"]
    await wait_for(lambda: hub.stats()["subscribes_ok"] > before, "the subscription")


def event_of(dialect: str, frame: str) -> tuple[str, dict[str, Any]]:
    if dialect == "socketio-0.9":
        assert frame.startswith("5:::")
        body = json.loads(frame[4:])
        return body["name"], body["args"]
    if dialect == "engineio-4":
        assert frame.startswith("42")
        name, payload = json.loads(frame[2:])
        return name, payload
    body = json.loads(frame)
    assert body["action"] == "event"
    return body["name"], body["data"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_subscribe_then_receive_in_the_dialects_payload_convention(dialect: str) -> None:
    async with running() as (hub, tokens, host), client(dialect, host) as ws:
        await subscribe(ws, hub, dialect, tokens.issue(), "call.CHANNEL_CREATE.*")
        assert hub.stats()["subscriptions"] == 1
        assert hub.emit(ACCOUNT, "CHANNEL_ANSWER", create_payload("c0", "CHANNEL_ANSWER")) == 0
        assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c1")) == 1
        name, payload = event_of(dialect, await recv(ws))
    assert name == "CHANNEL_CREATE"
    if dialect == "socketio-0.9":  # Kazoo 3.x: numbers as strings
        assert payload["Call-ID"] == "c1" and payload["Duration-Seconds"] == "12"
        assert payload["Timestamp"] == "63890000000"
    elif dialect == "engineio-4":
        assert payload["Call-ID"] == "c1" and payload["Duration-Seconds"] == 12
    else:  # Kazoo 4.x: snake_case keys, nulls dropped
        assert payload["call_id"] == "c1" and payload["duration_seconds"] == 12
        assert payload["custom_channel_vars"] == {"account_id": ACCOUNT, "username": "user1001"}
        assert "other_leg_call_id" not in payload


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_bad_token_is_refused_and_echoed_like_kazoo(dialect: str) -> None:
    async with running() as (hub, tokens, host), client(dialect, host) as ws:
        bad = "bad-" + secrets.token_hex(8)
        await ws.send(subscribe_frame(dialect, bad, "call.*.*"))
        frame = await recv(ws)
        assert bad in frame
        if dialect == "kazoo-json":
            reply = json.loads(frame)
            assert reply["status"] == "error" and reply["request_id"] == "r1"
            assert reply["data"]["errors"] == [f"failed to authenticate token {bad}"]
        else:
            name, args = event_of(dialect, frame)
            args = args[0] if isinstance(args, list) else args
            assert name == "auth_failure" and args["cause"] == bad
        assert hub.stats()["auth_failures"] == 1 and hub.stats()["subscriptions"] == 0
        assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c1")) == 0


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_account_and_binding_are_required(dialect: str) -> None:
    async with running() as (hub, tokens, host), client(dialect, host) as ws:
        await ws.send(subscribe_frame(dialect, tokens.issue(), "", account=ACCOUNT))
        frame = await recv(ws)
        if dialect == "kazoo-json":
            assert json.loads(frame)["status"] == "error"
        else:
            assert event_of(dialect, frame)[0] == "error"
        await ws.send(subscribe_frame(dialect, tokens.issue(), "call.*.*", account=""))
        await recv(ws)
        assert hub.stats()["subscriptions"] == 0 and hub.stats()["subscribes_ok"] == 0


async def test_emit_reaches_only_matching_subscriptions() -> None:
    async with running() as (hub, tokens, host):
        async with client("kazoo-json", host) as by_call, client("engineio-4", host) as by_name, \
                client("socketio-0.9", host) as other_account:
            await subscribe(by_call, hub, "kazoo-json", tokens.issue(), "call.*.call-A")
            await subscribe(by_name, hub, "engineio-4", tokens.issue(), "call.CHANNEL_ANSWER.*")
            await subscribe(other_account, hub, "socketio-0.9", tokens.issue(), "call.*.*",
                            account="acct-other")
            assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("call-B")) == 0
            assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("call-A")) == 1
            assert hub.emit(ACCOUNT, "CHANNEL_ANSWER",
                            create_payload("call-A", "CHANNEL_ANSWER")) == 2
            assert hub.emit("acct-other", "CHANNEL_DESTROY",
                            create_payload("call-Z", "CHANNEL_DESTROY")) == 1
            got_call = [event_of("kazoo-json", await recv(by_call)) for _ in range(2)]
            assert [(n, p["call_id"]) for n, p in got_call] == [
                ("CHANNEL_CREATE", "call-A"), ("CHANNEL_ANSWER", "call-A")]
            name, payload = event_of("engineio-4", await recv(by_name))
            assert (name, payload["Call-ID"]) == ("CHANNEL_ANSWER", "call-A")
            name, payload = event_of("socketio-0.9", await recv(other_account))
            assert (name, payload["Call-ID"]) == ("CHANNEL_DESTROY", "call-Z")


async def test_kazoo_event_frame_names_binding_and_routing_key() -> None:
    async with running() as (hub, tokens, host), client("kazoo-json", host) as ws:
        await subscribe(ws, hub, "kazoo-json", tokens.issue(), "call.CHANNEL_CREATE.*")
        hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c9"))
        frame = json.loads(await recv(ws))
    assert frame["subscribed_key"] == "call.CHANNEL_CREATE.*"
    assert frame["routing_key"] == f"call.{ACCOUNT}.CHANNEL_CREATE.c9"


async def test_drop_closes_only_the_accounts_sockets() -> None:
    async with running() as (hub, tokens, host):
        async with client("socketio-0.9", host) as mine, client("kazoo-json", host) as theirs:
            await subscribe(mine, hub, "socketio-0.9", tokens.issue(), "call.*.*")
            await subscribe(theirs, hub, "kazoo-json", tokens.issue(), "call.*.*",
                            account="acct-other")
            assert await hub.drop(ACCOUNT) == 1
            assert await recv_close(mine) == 1011
            assert hub.stats()["connections"] == 1
            assert hub.emit("acct-other", "CHANNEL_CREATE", create_payload("c1")) == 1
            assert event_of("kazoo-json", await recv(theirs))[0] == "CHANNEL_CREATE"
            assert await hub.drop() == 1
            assert await recv_close(theirs) == 1011


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_events_beyond_the_queue_limit_are_dropped_and_counted(dialect: str) -> None:
    async with running(queue_limit=5) as (hub, tokens, host), client(dialect, host) as ws:
        await subscribe(ws, hub, dialect, tokens.issue(), "call.*.*")
        # No await between emits: the writer cannot drain, as with a client that stopped reading.
        results = [hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload(f"c{i}")) for i in range(12)]
        assert results == [1] * 5 + [0] * 7
        assert hub.stats()["dropped_frames"] == 7
        got = [event_of(dialect, await recv(ws))[1] for _ in range(5)]
        hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("after"))
        after = event_of(dialect, await recv(ws))[1]
    key = "call_id" if dialect == "kazoo-json" else "Call-ID"
    assert [p[key] for p in got] == [f"c{i}" for i in range(5)]
    assert after[key] == "after"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_disconnect_policy_closes_when_the_token_expires(dialect: str) -> None:
    async with running(expiry_policy="disconnect") as (hub, tokens, host), \
            client(dialect, host) as ws:
        await subscribe(ws, hub, dialect, tokens.issue(ttl=0.3 * SCALE), "call.*.*")
        assert await recv_close(ws) == 1008
        await wait_for(lambda: hub.stats()["connections"] == 0, "the connection to go")


async def test_disconnect_policy_keeps_a_connection_that_rotated_its_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "EXPIRY_POLL", 0.02)
    async with running(expiry_policy="disconnect") as (hub, tokens, host):
        async with client("kazoo-json", host) as rotated, client("kazoo-json", host) as stale:
            old = tokens.issue()
            await subscribe(rotated, hub, "kazoo-json", old, "call.*.*")
            await subscribe(stale, hub, "kazoo-json", old, "call.*.*")
            await subscribe(rotated, hub, "kazoo-json", tokens.issue(), "call.*.*")
            tokens.expiry[old] = time.time() - 1
            assert await recv_close(stale) == 1008
            await asyncio.sleep(0.1)  # several more expiry checks of the rotated connection
            assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c1")) == 1
            assert event_of("kazoo-json", await recv(rotated))[0] == "CHANNEL_CREATE"


async def test_subscribe_policy_keeps_receiving_after_expiry_like_kazoo() -> None:
    async with running() as (hub, tokens, host), client("socketio-0.9", host) as ws:
        token = tokens.issue()
        await subscribe(ws, hub, "socketio-0.9", token, "call.*.*")
        tokens.expiry[token] = time.time() - 1
        assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c1")) == 1
        assert event_of("socketio-0.9", await recv(ws))[0] == "CHANNEL_CREATE"
        await ws.send(subscribe_frame("socketio-0.9", token, "call.CHANNEL_ANSWER.*"))
        assert event_of("socketio-0.9", await recv(ws))[0] == "auth_failure"


async def test_sio09_heartbeats_and_silence_timeout() -> None:
    async with running(heartbeat_interval=0.05) as (hub, tokens, host), \
            client("socketio-0.9", host) as ws:
        assert await recv(ws) == "2::"
        await ws.send("2::")
        assert await recv(ws) == "2::"
        # Stop answering: closed after the close timeout (three heartbeats).
        assert await recv_close(ws) == 1001


async def test_eio4_ping_needs_a_pong() -> None:
    async with running(heartbeat_interval=0.05) as (hub, tokens, host), \
            client("engineio-4", host) as ws:
        assert await recv(ws) == "2"
        await ws.send("3")
        assert await recv(ws) == "2"
        assert await recv_close(ws) == 1001


async def test_kazoo_ping_is_answered_and_garbage_reported() -> None:
    async with running() as (hub, tokens, host), client("kazoo-json", host) as ws:
        await ws.send(json.dumps({"action": "ping", "request_id": "p1"}))
        reply = json.loads(await recv(ws))
        assert reply["request_id"] == "p1" and reply["status"] == "success"
        await ws.send("{not json")
        assert json.loads(await recv(ws))["status"] == "error"
        await subscribe(ws, hub, "kazoo-json", tokens.issue(), "call.*.*")


async def test_garbage_from_socketio_clients_is_survived() -> None:
    async with running() as (hub, tokens, host):
        async with client("socketio-0.9", host) as sio, client("engineio-4", host) as eio:
            await sio.send("5:::{broken")
            await sio.send("\ufffd99\ufffd2::")
            await eio.send("42[nope")
            await eio.send("x")
            await subscribe(sio, hub, "socketio-0.9", tokens.issue(), "call.*.*")
            await subscribe(eio, hub, "engineio-4", tokens.issue(), "call.*.*")
            assert hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c1")) == 2


async def test_sio09_sid_is_required_and_single_use() -> None:
    async with running() as (hub, tokens, host):
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://{host}/socket.io/1/websocket/unknown-sid"):
                pass
        async with httpx.AsyncClient() as http:
            sid = (await http.get(f"http://{host}/socket.io/1/")).text.split(":")[0]
        async with connect(f"ws://{host}/socket.io/1/websocket/{sid}") as ws:
            assert await recv(ws) == "1::"
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://{host}/socket.io/1/websocket/{sid}"):
                pass


async def test_eio_version_is_required() -> None:
    async with running() as (hub, tokens, host):
        for query in ("EIO=3&transport=websocket", "transport=websocket", "EIO=4"):
            with pytest.raises(InvalidStatus):
                async with connect(f"ws://{host}/socket.io/?{query}"):
                    pass


async def test_only_configured_dialects_are_served() -> None:
    async with running(dialects=("kazoo-json",)) as (hub, tokens, host):
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://{host}/socket.io/1/")).status_code == 404
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://{host}/socket.io/?EIO=4&transport=websocket"):
                pass
        async with client("kazoo-json", host) as ws:
            await subscribe(ws, hub, "kazoo-json", tokens.issue(), "call.*.*")


async def test_close_ends_every_connection_with_service_restart() -> None:
    async with running() as (hub, tokens, host):
        async with client("kazoo-json", host) as a, client("engineio-4", host) as b:
            await hub.close()
            assert await recv_close(a) == 1012 and await recv_close(b) == 1012
            assert hub.stats()["connections"] == 0


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_client_codecs_speak_to_the_hub(dialect: str) -> None:
    """The client codecs and the simulator agree on every dialect."""
    async with running() as (hub, tokens, host):
        codec = codec_for(dialect)
        url = codec.handshake_url(f"ws://{host}")
        if url is not None:
            async with httpx.AsyncClient() as http:
                answer = await http.get(url)
            codec.handshake_response(answer.status_code, answer.text)
        signals: list[Any] = []
        async with connect(codec.websocket_url(f"ws://{host}")) as ws:
            async def pump() -> None:
                signals.extend(codec.receive(await recv(ws)))
                for frame in codec.data_to_send():
                    await ws.send(frame)

            while not codec.ready_on_open and not signals:
                await pump()
            codec.subscribe(ACCOUNT, tokens.issue(), "call.CHANNEL_CREATE.*")
            for frame in codec.data_to_send():
                await ws.send(frame)
            await wait_for(lambda: hub.stats()["subscriptions"] == 1, "the subscription")
            hub.emit(ACCOUNT, "CHANNEL_CREATE", create_payload("c1"))
            while not any(isinstance(s, CallSignal) for s in signals):
                await pump()
    call = next(s for s in signals if isinstance(s, CallSignal))
    assert call.name == "CHANNEL_CREATE"
    assert call.payload.get("Call-ID", call.payload.get("call_id")) == "c1"
