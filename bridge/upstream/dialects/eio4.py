"""Socket.IO v4/v5 over Engine.IO 4 (websocket transport only): the client codec.

Each websocket frame is one Engine.IO packet: ``0{open}``, ``1`` close, ``2`` ping, ``3`` pong,
``4<socket.io packet>`` message, ``6`` noop. The server opens with
``0{"sid","pingInterval","pingTimeout"}`` (milliseconds); the codec then queues ``40`` to join the
default namespace and the server answers ``40{"sid"}`` (:class:`Ready`) or ``44{..}`` (refused:
:class:`AuthFailed` when the text is about authentication, else :class:`UpstreamError`). Server
pings ``2`` are answered ``3`` at once. Events ``42["name",{..}]`` (an ack id may precede the
array) map as in Socket.IO 0.9: call events, ``auth_failure``, ``error``. ``41`` and ``1`` ->
:class:`ServerClosed`. Packets for other namespaces, acks, pongs, upgrades and noops are
ignored; binary packets are reported Malformed. Only EIO=4 is spoken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

import orjson

from bridge.upstream.dialects import _common
from bridge.upstream.dialects.base import (
    AuthFailed,
    ClientCodec,
    Ready,
    ServerClosed,
    Signal,
    UpstreamError,
)

DEFAULT_DEAD_AFTER = 45.0
# Socket.IO packet after the Engine.IO "4": type, optional "/nsp,", optional ack id, payload.
_SOCKET_PACKET = re.compile(r"([0-9])(?:(/[^,]*),)?([0-9]*)(.*)", re.DOTALL)


@dataclass
class EngineIO4Codec(_common.SocketIOEvents, ClientCodec):
    name: ClassVar[str] = "engineio-4"

    dead_after: float = DEFAULT_DEAD_AFTER
    sid: str | None = field(default=None, init=False)
    _ready: bool = field(default=False, init=False, repr=False)
    _tokens: dict[str, None] = field(default_factory=dict, init=False, repr=False)

    def websocket_url(self, base_url: str) -> str:
        return _common.url_for(base_url, "/socket.io/", websocket=True,
                               query="EIO=4&transport=websocket")

    def receive(self, frame: str) -> list[Signal]:
        kind, data = frame[:1], frame[1:]
        if kind == "0":
            return self._open(data, frame)
        if kind == "1":
            return [ServerClosed("engine.io close packet")]
        if kind == "2":
            self._out.append("3" + data)
            return []
        if kind == "4":
            return self._message(data, frame)
        if kind in ("3", "5", "6"):
            return []
        reason = "empty frame" if not frame else "unknown engine.io packet type"
        return [_common.malformed(reason, frame, self._tokens)]

    def close(self) -> None:
        self._out.append("41")

    def _event_frame(self, name: str, args: dict[str, str]) -> str:
        return "42" + _common.dumps([name, args])

    def _open(self, data: str, frame: str) -> list[Signal]:
        body = _loads(data)
        if not isinstance(body, dict):
            return [_common.malformed("open packet is not a JSON object", frame, self._tokens)]
        interval, timeout = body.get("pingInterval"), body.get("pingTimeout")
        if _positive(interval) and _positive(timeout):
            self.dead_after = (interval + timeout) / 1000.0
        if isinstance(body.get("sid"), str):
            self.sid = body["sid"]
        self._out.append("40")
        return []

    def _message(self, data: str, frame: str) -> list[Signal]:
        match = _SOCKET_PACKET.fullmatch(data)
        if match is None:
            return [_common.malformed("empty socket.io packet", frame, self._tokens)]
        kind, namespace, _ack_id, payload = match.groups()
        if namespace not in (None, "/"):
            return []
        if kind == "0":
            if self._ready:
                return []
            self._ready = True
            return [Ready()]
        if kind == "1":
            return [ServerClosed("socket.io disconnect packet")]
        if kind == "2":
            body = _loads(payload)
            if not isinstance(body, list) or not body:
                reason = "event is not a non-empty JSON array"
                return [_common.malformed(reason, frame, self._tokens)]
            return [_common.event_signal(body[0], body[1:], frame, self._tokens)]
        if kind == "4":
            body = _loads(payload) if payload else "connect refused"
            text = _common.message_text(payload if body is _INVALID else body, self._tokens)
            refused = AuthFailed if _common.mentions_auth(payload) else UpstreamError
            return [refused(text)]
        if kind == "3":
            return []
        return [_common.malformed(f"unsupported socket.io packet type {kind}", frame, self._tokens)]


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _INVALID


_INVALID = object()


def _positive(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9
