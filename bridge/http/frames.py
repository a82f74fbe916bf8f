"""Frames written straight to a websocket's transport, built once for every client.

The fan-out sends the same event to many clients. Through ASGI, each client's copy is a
``websocket.send`` message that uvicorn frames again and writes from that client's writer task:
a task wake-up, an ASGI call and a framing per client per event. :class:`DirectFrames` is
uvicorn's websockets protocol with one addition: once the handshake is done, the connection's
scope carries (under :data:`~bridge.downstream.link.DIRECT_FRAMES`) a function that writes an
already-framed message to the transport when that is safe, and says whether it did.

It is safe when the connection is open, no close was sent, and the transport is not holding
back writes (asyncio paused it: its buffer passed the high-water mark). The caller
(:class:`~bridge.downstream.link.ClientLink`) uses it only while it has nothing queued and its
writer is idle, so frames keep their order; otherwise frames go through its buffer and ASGI as
before, where flow control, the send timeout and the slow-consumer limit apply.

Keepalive pings go by one :class:`~bridge.common.wheel.Wheel` per event loop and interval
instead of two timers per connection (uvicorn's: one for the next ping, one for the pong's
deadline): each connection is visited once per ``ping_interval``; a ping still unanswered at
the next visit fails the connection with 1011, as uvicorn does, and otherwise a new ping goes
out. With 10,000 connections this is one timer instead of a thousand timer handles made and
dropped every second.
"""

from __future__ import annotations

import asyncio
import random
import struct
import weakref
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from bridge.common.wheel import Wheel
from bridge.downstream.link import DIRECT_FRAMES

_Wheels = dict[float, "Wheel[DirectFrames]"]
#: The keepalive wheels of each event loop, by ping interval.
_keepalives: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wheels] = (
    weakref.WeakKeyDictionary())


class DirectFrames(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol, offering the app direct frame writes.

    Whether a write is safe is kept in one flag, recomputed whenever something that decides
    it happens (a send, a pause or resume of writing, a close received, the connection lost),
    so the write itself checks only the flag and the transport.
    """

    _direct = False
    #: The payload of the keepalive ping awaiting its pong.
    _ping: bytes | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused
            scope["extensions"][DIRECT_FRAMES] = self.write_frame

    async def send(self, message: Any) -> None:
        try:
            await super().send(message)
        finally:
            self._direct = self._open()

    def pause_writing(self) -> None:
        self._direct = False
        super().pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._direct = self._open()

    def handle_close(self, event: Any) -> None:
        self._direct = False
        super().handle_close(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._direct = False
        super().connection_lost(exc)

    def start_keepalive(self) -> None:
        if self.ping_interval:
            wheels = _keepalives.setdefault(self.loop, {})
            wheel = wheels.get(self.ping_interval)
            if wheel is None:
                wheel = wheels[self.ping_interval] = Wheel(self.ping_interval, _keepalive)
            wheel.add(self)

    def stop_keepalive(self) -> None:
        if self.ping_interval and (wheels := _keepalives.get(self.loop)) is not None \
                and (wheel := wheels.get(self.ping_interval)) is not None:
            wheel.discard(self)
        self._ping = None
        super().stop_keepalive()

    def handle_pong(self, event: Any) -> None:
        if self._ping is not None and bytes(event.data) == self._ping:
            self._ping = None

    def keepalive(self) -> None:
        """The wheel's visit: fail the connection if the last ping is unanswered, else ping."""
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return
        if self._ping is not None:  # sent one interval ago: no pong within the interval
            self._ping = None
            self._direct = False
            self.conn.fail(1011, "keepalive ping timeout")
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()
            return
        self._ping = struct.pack("!I", random.getrandbits(32))
        self.conn.send_ping(self._ping)
        self.transport.write(b"".join(self.conn.data_to_send()))

    def _open(self) -> bool:
        return (self.handshake_complete and not self.close_sent and not self.disconnected
                and self.writable.is_set() and self.conn.state is State.OPEN
                and not self.transport.is_closing())

    def write_frame(self, data: bytes) -> bool:
        """Write ``data`` (one complete frame) now if nothing holds it back; whether it did."""
        if self._direct and not self.transport.is_closing():
            self.transport.write(data)
            return True
        return False


def _keepalive(protocols: list[DirectFrames]) -> None:
    for protocol in protocols:
        protocol.keepalive()
