"""Frames written straight to a websocket's transport, built once for every client.

The fan-out sends the same event to many clients. Through ASGI, each client's copy is a
``websocket.send`` message that uvicorn frames again and writes from that client's writer task:
a task wake-up, an ASGI call and a framing per client per event. :class:`DirectFrames` is
uvicorn's websockets protocol with one addition: once the handshake is done, the connection's
scope carries (under :data:`~bridge.downstream.link.DIRECT_FRAMES`) a function to bind the
connection's :class:`~bridge.downstream.link.ClientLink` to it. From then on the protocol tells
the link, whenever it changes, whether already-framed messages may be written straight to its
transport: it offers the transport, or withdraws it.

Direct writes are safe while the connection is open, no close was sent, and the transport is
not holding back writes (asyncio paused it: its buffer passed the high-water mark). The link
uses the transport only while it has nothing queued and its writer is idle, so frames keep
their order; otherwise frames go through its buffer and ASGI as before, where flow control,
the send timeout and the slow-consumer limit apply. So a frame of the fan-out costs one check
of the link and one write, with the protocol out of the way.

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
from bridge.downstream.link import DIRECT_FRAMES, Offer

_Wheels = dict[float, "Wheel[DirectFrames]"]
#: The keepalive wheels of each event loop, by ping interval.
_keepalives: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wheels] = (
    weakref.WeakKeyDictionary())


class DirectFrames(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol, offering the app's link direct frame writes.

    Whether a write is safe is decided again whenever something that decides it happens (a
    send, a pause or resume of writing, a close received or sent, the connection lost or shut
    down), and pushed to the bound link, so the fan-out's write checks only the link and the
    transport.
    """

    #: The bound link's :meth:`~bridge.downstream.link.ClientLink.offer`.
    _offer: Offer | None = None
    #: The payload of the keepalive ping awaiting its pong.
    _ping: bytes | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused
            scope["extensions"][DIRECT_FRAMES] = self.bind

    def bind(self, offer: Offer) -> None:
        """Tell ``offer`` from now on where frames may be written straight away."""
        self._offer = offer
        self._update()

    def _update(self) -> None:
        if self._offer is not None:
            self._offer(self.transport if self._open() else None)

    def _withdraw(self) -> None:
        if self._offer is not None:
            self._offer(None)

    async def send(self, message: Any) -> None:
        self._withdraw()  # the protocol writes itself: nothing may come between
        try:
            await super().send(message)
        finally:
            self._update()

    def pause_writing(self) -> None:
        self._withdraw()
        super().pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update()

    def handle_close(self, event: Any) -> None:
        self._withdraw()
        super().handle_close(event)

    def handle_parser_exception(self) -> None:
        self._withdraw()
        super().handle_parser_exception()

    def shutdown(self) -> None:
        self._withdraw()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._withdraw()
        self._offer = None
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
            self._withdraw()
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


def _keepalive(protocols: list[DirectFrames]) -> None:
    for protocol in protocols:
        protocol.keepalive()
