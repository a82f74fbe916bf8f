"""One websocket client's outgoing buffer: bounded in bytes, drained by exactly one writer.

The hub (:mod:`bridge.downstream.hub`) appends each frame for a client here without blocking; the
connection's writer (:meth:`ClientLink.run`) sends them in order. A frame that would overflow
the byte limit closes the link with :data:`SLOW_CONSUMER` instead: fan-out cannot wait for one
slow client. The one exception is a reply larger than the whole buffer (a ``state`` message):
:meth:`ClientLink.put_large` queues it outside the count once the buffer is empty, so the limit
bounds what waits behind it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable, Protocol

from websockets.frames import Frame, Opcode

SLOW_CONSUMER = 4008  # same value as bridge.downstream.protocol.SLOW_CONSUMER
#: The ASGI scope extension under which the server offers direct frame writes
#: (:class:`bridge.http.frames.DirectFrames`): a function :data:`Bind`, given
#: :meth:`ClientLink.offer`.
DIRECT_FRAMES = "callbridge.frames"


class Sink(Protocol):
    """Where complete websocket frames can be written straight away: the connection's
    transport, offered while nothing but the link writes to it."""

    def is_closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


#: Called by the connection with its :class:`Sink` whenever frames may go straight to it, and
#: with None whenever they may not (a send of its own, writes held back, a close):
#: :meth:`ClientLink.offer`.
Offer = Callable[[Sink | None], None]
#: Binds a link's :data:`Offer` to the connection.
Bind = Callable[[Offer], None]
PEER_GONE = 1006  # close() code meaning "the peer is gone, send no close frame"


class ClientLink:
    """One client's outgoing buffer: frames, their byte count, and a wake-up for its writer.

    Tens of thousands of these live at once, mostly idle, so a link holds no event objects and
    no empty buffer: the frame deque exists while frames wait, and a waiter's future exists
    while someone waits.
    """

    __slots__ = ("max_bytes", "queued_bytes", "close_code", "_sink", "_frames", "_writer",
                 "_room", "_finished", "_done", "_on_slow", "_large", "_idle", "_offered")

    def __init__(self, max_bytes: int, on_slow: Callable[[], None] | None = None) -> None:
        self.max_bytes = max_bytes
        #: Called once if the link is closed as a slow consumer, whoever found it slow (the
        #: fan-out, a blocked send, a stalled replay).
        self._on_slow = on_slow
        self.queued_bytes = 0
        #: Set once, by the first :meth:`close`; the writer stops and the owner closes with it.
        self.close_code: int | None = None
        #: What the connection offers for direct writes (:meth:`offer`), None while it
        #: offers nothing: every frame then goes through the buffer and the writer.
        self._offered: Sink | None = None
        #: The offered sink while the link is idle (open, nothing queued, the writer waiting):
        #: a frame may be written to it straight away. Else None. One attribute, so the
        #: fan-out reads one field of the link per frame.
        self._sink: Sink | None = None
        self._frames: deque[tuple[str, int]] | None = None
        self._writer: asyncio.Future[None] | None = None  # the writer waiting for frames
        self._room: asyncio.Future[None] | None = None  # producers waiting for room
        self._finished = False
        self._done: asyncio.Future[None] | None = None  # waiters for finished()
        self._large: str | None = None  # the frame of put_large() until it is sent
        #: Open, nothing queued, the writer waiting (kept by the writer, :meth:`put` and
        #: :meth:`close`).
        self._idle = False

    def offer(self, sink: Sink | None) -> None:
        """The connection says where frames may go straight away (None: nowhere, for now).

        Called by the connection whenever that changes; the link writes there only while it
        is idle, so a direct frame never overtakes one queued before it.
        """
        self._offered = sink
        self._sink = sink if self._idle else None

    def put(self, frame: str, size: int | None = None, wire: bytes | None = None) -> bool:
        """Queue ``frame`` (``size`` its UTF-8 length when known). Never blocks.

        ``wire``: the same frame, framed for the websocket (:func:`text_frame`, built once for
        every client). It is written straight to the connection's sink, with no task switch,
        when nothing is queued, the writer is idle (not in a send) and the connection offers
        its sink (:meth:`offer`); otherwise the frame is queued as usual.

        Returns False, and closes the link with 4008, when the frame would overflow the buffer.
        Frames put after :meth:`close` are dropped (and True is returned: nothing to report).
        """
        if (sink := self._sink) is not None and wire is not None and not sink.is_closing():
            sink.write(wire)
            return True
        if self.close_code is not None:
            return True
        if size is None:
            size = len(frame.encode())
        if self.queued_bytes + size > self.max_bytes:
            self.close(SLOW_CONSUMER)
            return False
        if self._frames is None:
            self._frames = deque()
        self._frames.append((frame, size))
        self.queued_bytes += size
        self._idle = False
        self._sink = None
        _wake(self._writer)
        return True

    def put_large(self, frame: str) -> None:
        """Queue ``frame``, larger than the whole buffer, without counting it. Never blocks.

        Call it once :meth:`wait_room` for ``max_bytes`` returned True (the buffer is empty):
        the frames queued behind it are counted as usual, so a client reading the frame at its
        own pace is not closed for its size, and one that stops reading is still closed once
        the buffer behind it fills. :meth:`wait_room` waits until the frame is sent, so at most
        one such frame is queued at a time.
        """
        if self.close_code is not None:
            return
        if self._frames is None:
            self._frames = deque()
        self._frames.append((frame, 0))
        self._large = frame
        self._idle = False
        self._sink = None
        _wake(self._writer)

    def close(self, code: int) -> None:
        """Ask the writer to stop; the first code wins. Pending frames are dropped."""
        if self.close_code is None:
            self.close_code = code
            self._idle = False
            self._sink = None
            if code == SLOW_CONSUMER and self._on_slow is not None:
                self._on_slow()
            self._frames = None
            self._large = None
            self.queued_bytes = 0
            _wake(self._writer)
            _wake(self._room)

    async def wait_room(self, size: int, timeout: float) -> bool:
        """Wait until ``size`` more bytes fit, and no frame of :meth:`put_large` waits; False
        when the link closed meanwhile.

        A producer that can pace itself (history replay) calls this before :meth:`put`. Waiting
        longer than ``timeout`` means the client stopped reading: the link is closed with 4008.
        """
        while self.close_code is None and (self._large is not None or self.queued_bytes and (
            self.queued_bytes + size > self.max_bytes
        )):
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._room)
            except TimeoutError:
                self.close(SLOW_CONSUMER)
        return self.close_code is None

    async def run(self, send: Callable[[str], Awaitable[None]], send_timeout: float) -> int:
        """Drain frames through ``send`` until :meth:`close`; return the close code.

        A single send blocked longer than ``send_timeout`` (the peer stopped reading and the
        socket buffers are full) closes the link with 4008. Exceptions from ``send`` propagate.
        """
        loop = asyncio.get_running_loop()
        while True:
            frames = self._frames
            while frames and self.close_code is None:
                frame, size = frames[0]
                try:
                    async with asyncio.timeout(send_timeout):
                        await send(frame)
                except TimeoutError:
                    self.close(SLOW_CONSUMER)
                    break
                # close() may have run during the send (revocation, the fan-out finding the
                # link full): it dropped the frames and zeroed the byte count already.
                if self.close_code is not None:
                    break  # type: ignore[unreachable]  # mypy keeps the narrowing across await
                frames.popleft()
                self.queued_bytes -= size
                if frame is self._large:
                    self._large = None
                _wake(self._room)
            if self.close_code is not None:
                return self.close_code
            self._frames = frames = None  # drained: an idle link keeps no buffer
            # Woken by put() or close(); the owner cancels this task when the connection ends.
            self._writer = loop.create_future()
            self._idle = True
            self._sink = self._offered
            try:
                await self._writer
            finally:
                self._idle = False
                self._sink = None
                self._writer = None

    def finished(self) -> None:
        """Called by the owner once the connection is fully closed."""
        self._finished = True
        _wake(self._done)

    async def wait_finished(self) -> None:
        if self._finished:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._done)


def text_frame(payload: bytes) -> bytes:
    """``payload`` (UTF-8 text) as one unmasked websocket text frame, as a server sends it."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
