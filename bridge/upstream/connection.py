"""One websocket to an upstream signal server, driven by a dialect codec.

A :class:`Connection` only moves frames and keeps time: the codec decides what frames mean.
Its reader task runs from the moment the socket opens, so call signals that arrive while
subscriptions are still being confirmed are delivered, never held back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from bridge.common.aio import first_of
from bridge.common.redact import redact
from bridge.upstream.dialects.base import (
    AuthFailed,
    CallSignal,
    ClientCodec,
    HandshakeError,
    Malformed,
    Ready,
    ServerClosed,
    Subscribed,
    UpstreamError,
)

log = logging.getLogger("bridge.upstream")

CallSink = Callable[[str, dict[str, Any]], None]

#: Largest upstream frame accepted; Kazoo events are a few KiB.
MAX_FRAME = 1 << 20


class ConnectFailed(Exception):
    """The connection could not be opened or subscribed. ``str()`` is redacted, and names no
    stream: whoever logs it puts the stream's name first, once."""


class SubscribeRefused(ConnectFailed):
    """The server refused the token (``auth=True``) or a binding."""

    def __init__(self, message: str, *, auth: bool) -> None:
        super().__init__(message)
        self.auth = auth


class Connection:
    def __init__(
        self,
        codec: ClientCodec,
        *,
        label: str,
        on_call: CallSink,
        on_malformed: Callable[[Malformed], None] | None = None,
    ) -> None:
        self.codec = codec
        self.label = label
        self._on_call = on_call
        self._on_malformed = on_malformed
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._acked: set[str | None] = set()
        self._ack_changed = asyncio.Event()
        self.failure: ConnectFailed | None = None
        self._failed = asyncio.Event()
        self.closed_reason = ""
        self.events_in = 0

    # -- opening -------------------------------------------------------------------------------

    async def open(self, base_url: str, http: httpx.AsyncClient, timeout: float) -> None:
        """Handshake, open the websocket, start reading, and wait until the dialect is ready."""
        codec = self.codec
        try:
            url = codec.handshake_url(base_url)
            if url is not None:
                response = await http.get(url, timeout=timeout)
                codec.handshake_response(response.status_code, response.text)
            self._ws = await connect(
                codec.websocket_url(base_url),
                open_timeout=timeout,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                compression=None,
                max_size=MAX_FRAME,
                proxy=None,
                user_agent_header="callbridge",
            )
        except (OSError, httpx.HTTPError, HandshakeError, InvalidHandshake, InvalidURI,
                TimeoutError) as exc:
            raise ConnectFailed(f"connect failed: {describe(exc)}") from None
        self._reader = asyncio.create_task(self._read_loop(), name=f"upstream-read {self.label}")
        if codec.ready_on_open:
            self._ready.set()
        await self._until(self._ready, timeout, "the server did not open the session")

    async def subscribe(self, account_id: str, token: str, bindings: list[str],
                        timeout: float, settle: float) -> None:
        """Subscribe every binding; return once confirmed, or raise :class:`ConnectFailed`.

        Dialects without acknowledgements report a refused token by an event shortly after
        the subscribe; for those, ``settle`` seconds without a refusal count as success.
        """
        wanted = [self.codec.subscribe(account_id, token, b) for b in bindings]
        await self._flush()
        if self.codec.acks_subscribe:
            pending = set(wanted)
            async def all_acked() -> None:
                while not pending <= self._acked:
                    self._ack_changed.clear()
                    await self._ack_changed.wait()
            await self._race(all_acked(), timeout, "subscriptions were not confirmed")
        else:
            await self._race(asyncio.sleep(settle), settle + timeout, "")

    async def _until(self, event: asyncio.Event, timeout: float, what: str) -> None:
        await self._race(event.wait(), timeout, what)

    async def _race(self, aw: Awaitable[object], timeout: float, what: str) -> None:
        """Wait for ``aw``; raise the connection's failure if it comes first, or on timeout."""
        completed, _ = await first_of(timeout, aw, self._failed.wait())
        if self.failure is not None:
            raise self.failure
        if not completed:
            raise ConnectFailed(f"{what} within {timeout:g}s")

    # -- running -------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def wait_closed(self) -> None:
        if self._reader is not None:
            await asyncio.shield(self._reader)

    async def _flush(self) -> None:
        ws = self._ws
        assert ws is not None
        for frame in self.codec.data_to_send():
            await ws.send(frame)

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        loop = asyncio.get_running_loop()
        codec = self.codec
        interval = codec.keepalive_interval
        last_rx = loop.time()
        next_keepalive = last_rx + interval if interval else float("inf")
        try:
            while True:
                dead_at = last_rx + codec.dead_after
                try:
                    async with asyncio.timeout_at(min(dead_at, next_keepalive)):
                        frame = await ws.recv()
                except TimeoutError:
                    now = loop.time()
                    if now >= dead_at:
                        self._fail(ConnectFailed(
                            f"no frame for {codec.dead_after:g}s, connection dead"))
                        self.closed_reason = "dead"
                        return
                    codec.keepalive()
                    await self._flush()
                    next_keepalive = now + (interval or 0.0)
                    continue
                last_rx = loop.time()
                if isinstance(frame, bytes):
                    frame = frame.decode("utf-8", "replace")
                signals = codec.receive(frame)
                await self._flush()
                for signal in signals:
                    self._dispatch(signal)
                if self.closed_reason:
                    return
        except ConnectionClosed as exc:
            # A reason set before the close (a reconnect asked for by an operator) stands.
            self.closed_reason = self.closed_reason or f"closed by server ({describe(exc)})"
            self._fail(ConnectFailed(self.closed_reason))
        except asyncio.CancelledError:
            self.closed_reason = self.closed_reason or "closed"
            raise
        except Exception as exc:  # a bug must end this connection loudly, not hang the stream
            log.error("%s: reader failed: %s", self.label, describe(exc), exc_info=True)
            self.closed_reason = "internal error"
        finally:
            self._fail(ConnectFailed(self.closed_reason or "closed"))

    def _dispatch(self, signal: object) -> None:
        if isinstance(signal, CallSignal):
            self.events_in += 1
            self._on_call(signal.name, signal.payload)
        elif isinstance(signal, Ready):
            self._ready.set()
        elif isinstance(signal, Subscribed):
            self._acked.add(signal.request_id)
            self._ack_changed.set()
        elif isinstance(signal, AuthFailed):
            # The stream reports the refusal (once, with what to check); here only at DEBUG.
            log.debug("%s: token refused: %s", self.label, signal.message)
            self._fail(SubscribeRefused(f"token refused: {signal.message}", auth=True))
        elif isinstance(signal, UpstreamError):
            if signal.request_id is not None and signal.request_id not in self._acked:
                log.debug("%s: upstream error: %s", self.label, signal.message)
                self._fail(SubscribeRefused(f"subscribe refused: {signal.message}", auth=False))
            else:  # nobody else reports this one
                log.warning("%s: upstream error: %s", self.label, signal.message)
        elif isinstance(signal, ServerClosed):
            self.closed_reason = f"server ended the session {signal.reason}".strip()
            self._fail(ConnectFailed(self.closed_reason))
        elif isinstance(signal, Malformed):
            log.warning("%s: malformed frame skipped: %s [%s]", self.label, signal.reason,
                        signal.excerpt)
            if self._on_malformed is not None:
                self._on_malformed(signal)

    def _fail(self, failure: ConnectFailed) -> None:
        if self.failure is None:
            self.failure = failure
        self._failed.set()

    async def close(self) -> None:
        """Say goodbye if the dialect has a way, close the socket, stop the reader."""
        ws = self._ws
        if ws is not None:
            try:
                self.codec.close()
                async with asyncio.timeout(2):
                    await self._flush()
                    await ws.close()
            except (ConnectionClosed, OSError, TimeoutError):
                pass
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass


def describe(exc: BaseException) -> str:
    """A short, redacted description of a connection error."""
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if str(exc) else text)[:300]
