"""Socket.IO 0.9 (Kazoo 3.x Blackhole): the client codec.

Session: GET ``/socket.io/1/`` answers ``<sid>:<heartbeat s>:<close s>:<transports>``; the
websocket at ``/socket.io/1/websocket/<sid>`` then carries packets ``type:id:endpoint:data``,
several per frame as ``\\ufffd<length>\\ufffd<packet>...``. The server greets with ``1::``
(:class:`Ready`) and sends heartbeats ``2::``, each answered with ``2::``.

Packet types: ``0`` disconnect -> :class:`ServerClosed`; ``1`` connect -> :class:`Ready` (once);
``2`` heartbeat -> answered; ``5`` event -> :class:`CallSignal`, or :class:`AuthFailed` for
``auth_failure``, :class:`UpstreamError` for ``error``; ``7`` error -> :class:`UpstreamError`;
``3`` message, ``4`` json, ``6`` ack and ``8`` noop are ignored: they carry no event name, so no
call signal can come from them, and Kazoo never sends them to a subscriber.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import orjson

from bridge.upstream.dialects import _common
from bridge.upstream.dialects.base import (
    ClientCodec,
    HandshakeError,
    Ready,
    ServerClosed,
    Signal,
    UpstreamError,
)

SEPARATOR = "\ufffd"
DEFAULT_CLOSE_TIMEOUT = 60.0
_PACKET = re.compile(r"([0-9]):([0-9]*\+?):([^:]*):?(.*)", re.DOTALL)
_LENGTH = re.compile(r"[0-9]{1,9}")
_SID = re.compile(r"[A-Za-z0-9_.~+=-]{1,128}")
_ERROR_REASONS = ("transport not supported", "client not handshaken", "unauthorized")
_ERROR_ADVICE = ("reconnect",)


@dataclass
class SocketIO09Codec(_common.SocketIOEvents, ClientCodec):
    name: ClassVar[str] = "socketio-0.9"

    sid: str | None = field(default=None, init=False)
    #: Seconds the server promises between heartbeats at most (None: heartbeats disabled).
    heartbeat_timeout: float | None = field(default=None, init=False)
    _ready: bool = field(default=False, init=False, repr=False)
    _tokens: dict[str, None] = field(default_factory=dict, init=False, repr=False)

    def handshake_url(self, base_url: str) -> str:
        return _common.url_for(base_url, "/socket.io/1/", websocket=False)

    def handshake_response(self, status: int, body: str) -> None:
        """Keep the sid and timeouts of ``<sid>:<heartbeat>:<close>:<transports>``.

        Raises :class:`HandshakeError` when the status is not 200, the body is malformed or
        the server does not offer the websocket transport.
        """
        text = body.strip()
        if status != 200:
            raise HandshakeError(f"handshake refused: HTTP {status}: {_common.excerpt(text)!r}")
        parts = text.split(":")
        if len(parts) != 4 or not _SID.fullmatch(parts[0]):
            raise HandshakeError(f"malformed handshake body {_common.excerpt(text)!r}")
        try:
            heartbeat = float(parts[1]) if parts[1] else None
            close = float(parts[2]) if parts[2] else None
        except ValueError:
            raise HandshakeError(f"bad handshake timeouts {_common.excerpt(text)!r}") from None
        if any(v is not None and not 0 < v < 1e6 for v in (heartbeat, close)):
            raise HandshakeError(f"handshake timeouts out of range {_common.excerpt(text)!r}")
        transports = [t.strip() for t in parts[3].split(",")]
        if "websocket" not in transports:
            offered = _common.excerpt(parts[3])
            raise HandshakeError(f"server offers no websocket transport: {offered!r}")
        self.sid = parts[0]
        self.heartbeat_timeout = heartbeat
        self.dead_after = close if close is not None else DEFAULT_CLOSE_TIMEOUT

    def websocket_url(self, base_url: str) -> str:
        if self.sid is None:
            raise RuntimeError("websocket_url() called before a successful handshake_response()")
        return _common.url_for(base_url, f"/socket.io/1/websocket/{self.sid}", websocket=True)

    def receive(self, frame: str) -> list[Signal]:
        if not frame.startswith(SEPARATOR):
            return self._packet(frame, frame)
        packets, error = split_frame(frame)
        signals: list[Signal] = []
        for packet in packets:
            signals.extend(self._packet(packet, frame))
        if error is not None:
            signals.append(_common.malformed(error, frame, self._tokens))
        return signals

    def close(self) -> None:
        self._out.append("0::")

    def _event_frame(self, name: str, args: dict[str, str]) -> str:
        return "5:::" + _common.dumps({"name": name, "args": [args]})

    def _packet(self, packet: str, frame: str) -> list[Signal]:
        match = _PACKET.fullmatch(packet)
        if match is None:
            reason = "empty frame" if not packet else "truncated or garbled packet"
            return [_common.malformed(reason, frame, self._tokens)]
        kind, data = match.group(1), match.group(4)
        if kind == "0":
            return [ServerClosed("disconnect packet")]
        if kind == "1":
            if self._ready:
                return []
            self._ready = True
            return [Ready()]
        if kind == "2":
            self._out.append("2::")
            return []
        if kind == "5":
            return [self._event(data, frame)]
        if kind == "7":
            return [UpstreamError(_error_text(data, self._tokens))]
        if kind in "3468":
            return []
        return [_common.malformed(f"unknown packet type {kind}", frame, self._tokens)]

    def _event(self, data: str, frame: str) -> Signal:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _common.malformed("event packet with invalid JSON", frame, self._tokens)
        if not isinstance(body, dict):
            return _common.malformed("event packet is not a JSON object", frame, self._tokens)
        return _common.event_signal(body.get("name"), body.get("args"), frame, self._tokens)


def split_frame(frame: str) -> tuple[list[str], str | None]:
    """The packets of a ``\\ufffd<length>\\ufffd<packet>...`` frame, and an error or None.

    Lengths count characters (code points). Servers that count UTF-16 code units, as
    JavaScript does, are understood too: when the code-point reading does not land on the next
    separator or the frame's end, the UTF-16 reading is tried. Packets before a bad prefix are
    returned; the rest of the frame cannot be resynchronised and is reported.
    """
    packets: list[str] = []
    i, n = 0, len(frame)
    while i < n:
        if frame[i] != SEPARATOR:
            return packets, "multi-packet frame: expected a length prefix"
        j = frame.find(SEPARATOR, i + 1)
        if j < 0 or not _LENGTH.fullmatch(frame[i + 1 : j]):
            return packets, "multi-packet frame: bad length prefix"
        end = _packet_end(frame, j + 1, int(frame[i + 1 : j]))
        if end is None:
            return packets, "multi-packet frame: length prefix does not match the frame"
        packets.append(frame[j + 1 : end])
        i = end
    return packets, None


def _packet_end(frame: str, start: int, length: int) -> int | None:
    n = len(frame)

    def boundary(end: int) -> bool:
        return end == n or (end < n and frame[end] == SEPARATOR)

    if start + length <= n and boundary(start + length):
        return start + length
    units, k = 0, start
    while k < n and units < length:
        units += 2 if ord(frame[k]) > 0xFFFF else 1
        k += 1
    return k if units == length and boundary(k) else None


def _error_text(data: str, secrets: dict[str, None]) -> str:
    reason, _, advice = data.partition("+")
    reason, advice = _decode(reason, _ERROR_REASONS), _decode(advice, _ERROR_ADVICE)
    text = f"{reason} (advice: {advice})" if advice else reason
    return _common.message_text(text or "error packet", secrets)


def _decode(code: str, table: tuple[str, ...]) -> str:
    """Socket.IO 0.9 sends error reasons and advice as indexes into fixed tables."""
    if code in {str(i) for i in range(len(table))}:
        return table[int(code)]
    return code
