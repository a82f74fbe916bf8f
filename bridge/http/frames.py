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
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from bridge.downstream.link import DIRECT_FRAMES


class DirectFrames(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol, offering the app direct frame writes.

    Whether a write is safe is kept in one flag, recomputed whenever something that decides
    it happens (a send, a pause or resume of writing, a close received, the connection lost),
    so the write itself checks only the flag and the transport.
    """

    _direct = False

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
