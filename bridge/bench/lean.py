"""A lean websocket client for the benchmark: websockets' sans-I/O protocol on an asyncio
Protocol, with no task and no queue per frame once it streams.

The clients share the machine with the server they measure, so what they spend per frame is
taken from the server. websockets' asyncio client hands every frame through a buffer to a
``recv()`` coroutine: a task wake-up per frame per connection. Here, once :meth:`stream` is
called, every frame of a received chunk is handed to a callback inside ``data_received``.
Before that (the protocol's opening: auth, subscribe), :meth:`recv` and :meth:`send` work as
in websockets, one message at a time. Pings are answered by the protocol itself.

While streaming, complete unfragmented data frames are cut out of the received bytes here
(a server's frames are unmasked: a two-to-ten-byte header, then the payload) and only the
other frames (pings, close, fragments) go through the protocol, whole, so it stays in step:
websockets' parser costs more per frame than the server's send of it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

OnFrame = Callable[[bytes], None]


class LeanConnection(asyncio.Protocol):
    def __init__(self, url: str, max_size: int) -> None:
        self._proto = ClientProtocol(parse_uri(url), max_size=max_size)
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._inbox: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_frame: OnFrame | None = None
        #: Streaming: frames are cut out here (:meth:`_cut`); bytes of an incomplete one.
        self._cutting = False
        self._rest = b""

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._proto.send_request(self._proto.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._cutting:
            self._cut(data)
            return
        self._proto.receive_data(data)
        self._events()
        if self._on_frame is not None and not self._proto.reader.buffer:
            self._cutting = True  # at a frame boundary: the protocol holds nothing partial

    def _cut(self, data: bytes) -> None:
        """Hand each complete data frame of ``data`` (after the bytes kept from before) to
        the callback; give every other complete frame to the protocol; keep the rest."""
        buf = self._rest + data if self._rest else data
        end, at = len(buf), 0
        on_frame = self._on_frame
        assert on_frame is not None
        while end - at >= 2:
            first, length = buf[at], buf[at + 1] & 0x7F
            head = 2
            if length == 126:
                if end - at < 4:
                    break
                length, head = int.from_bytes(buf[at + 2:at + 4], "big"), 4
            elif length == 127:
                if end - at < 10:
                    break
                length, head = int.from_bytes(buf[at + 2:at + 10], "big"), 10
            if buf[at + 1] & 0x80 or end - at < head + length:
                break  # a masked frame (not a server's): the protocol will refuse it
            if first == 0x81 or first == 0x82:  # FIN, text or binary
                on_frame(buf[at + head:at + head + length])
            else:
                self._proto.receive_data(buf[at:at + head + length])
                self._events()
            at += head + length
        rest = buf[at:]
        if rest and buf[at + 1:at + 2] and buf[at + 1] & 0x80:
            self._cutting, self._rest = False, b""
            self._proto.receive_data(rest)
            self._events()
            return
        self._rest = rest

    def _events(self) -> None:
        on_frame = self._on_frame
        for event in self._proto.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY:
                    payload = bytes(event.data)  # bytes already: the protocol copies frames
                    if on_frame is not None:
                        on_frame(payload)
                    else:
                        self._inbox.append(payload)
                        self._wake()
            elif isinstance(event, Response) and not self.opened.done():
                if self._proto.handshake_exc is not None:
                    self.opened.set_exception(self._proto.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    # -- the client's side ------------------------------------------------------------------

    async def recv(self) -> str:
        """The next message, as text."""
        while not self._inbox:
            if self.closed.done():
                raise ConnectionClosed(self._proto.close_rcvd, self._proto.close_sent)
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._inbox.popleft().decode()

    def send(self, text: str) -> None:
        """Send a text message (written at once: the benchmark's messages are small)."""
        if self._proto.state is not State.OPEN:
            raise ConnectionClosed(self._proto.close_rcvd, self._proto.close_sent)
        self._proto.send_text(text.encode())
        self._flush()

    def stream(self, on_frame: OnFrame) -> None:
        """From now on, hand every message to ``on_frame`` as it arrives (queued ones first)."""
        while self._inbox:
            on_frame(self._inbox.popleft())
        self._on_frame = on_frame
        self._cutting = not self._proto.reader.buffer

    def close(self) -> None:
        if self._proto.state is State.OPEN:
            self._proto.send_close(1000)
            self._flush()
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for data in self._proto.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if self._proto.close_expected():
            transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def connect(url: str, *, max_size: int = 2**22) -> LeanConnection:
    """Open ``url`` (ws://) and complete the websocket handshake."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: LeanConnection(url, max_size),
                                           parts.hostname or "127.0.0.1", parts.port or 80)
    try:
        await conn.opened
    except BaseException:
        conn.close()
        raise
    return conn
