"""The ``/ws`` websocket endpoint: authenticate, subscribe, stream events (docs/protocol.md).

One connection runs as: accept; wait up to ``auth_timeout`` for the auth message; verify the
token; then, in one task group, a reader (client messages), a writer (the hub link's buffer,
the only task that sends), an expiry timer and a heartbeat. The first of them to close the link
decides the close code; the others are cancelled, the client's channels are released, and the
close frame is sent. Every reply goes through the link, so replies and events keep their order.

The reader waits for client messages without a timeout on purpose: clients may stay silent for
the life of their token, and the expiry timer ends every connection by then.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Coroutine

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.auth import AuthError, Grant, verify
from bridge.brokers.base import BrokerError
from bridge.channels import granted
from bridge.downstream import protocol as p
from bridge.hub import PEER_GONE, ClientLink, Hub
from bridge.redact import redact, register

log = logging.getLogger(__name__)

#: Channels one connection may hold at once (a subscribe beyond it gets too_many_channels).
MAX_CHANNELS = 100
#: A single send blocked this long means the client stopped reading: closed with 4008.
SEND_TIMEOUT = 30.0
#: How long to wait for a close frame to be written before giving up on the client.
CLOSE_TIMEOUT = 5.0

_REASONS = {
    p.TOKEN_EXPIRED: "token expired",
    p.SLOW_CONSUMER: "slow consumer",
    p.SERVICE_RESTART: "service restart",
    p.MESSAGE_TOO_BIG: "message too big",
    p.INTERNAL_ERROR: "internal error",
}


@dataclass(frozen=True, slots=True)
class _Settings:
    jwt_secret: str
    leeway: float
    auth_timeout: float
    max_message_bytes: int
    heartbeat: float
    max_channels: int
    send_timeout: float


def ws_route(
    hub: Hub,
    *,
    jwt_secret: str,
    leeway: float,
    auth_timeout: float,
    max_message_bytes: int,
    heartbeat: float,
    max_channels: int = MAX_CHANNELS,
    send_timeout: float = SEND_TIMEOUT,
    path: str = "/ws",
) -> WebSocketRoute:
    """The Starlette route serving the downstream protocol on ``path``.

    ``heartbeat`` <= 0 disables the server heartbeat. On shutdown the app's lifespan calls
    :meth:`Hub.close_all` (1012) on ``hub``.
    """
    register(jwt_secret)
    settings = _Settings(
        jwt_secret, leeway, auth_timeout, max_message_bytes, heartbeat, max_channels, send_timeout
    )

    async def endpoint(websocket: WebSocket) -> None:
        await _Session(hub, settings, websocket).run()

    return WebSocketRoute(path, endpoint, name="ws")


def _payload(message: dict[str, object]) -> str | bytes | None:
    text = message.get("text")
    if isinstance(text, str):
        return text
    data = message.get("bytes")
    return data if isinstance(data, bytes) else None


class _Session:
    def __init__(self, hub: Hub, settings: _Settings, websocket: WebSocket) -> None:
        self.hub = hub
        self.cfg = settings
        self.ws = websocket
        self.session = secrets.token_hex(8)
        self.channels: set[str] = set()

    async def run(self) -> None:
        try:
            await self.ws.accept()
        except (WebSocketDisconnect, OSError):
            return
        grant = await self._authenticate()
        if grant is None:
            return
        link = self.hub.attach()
        try:
            link.put(
                p.encode_welcome(
                    sub=grant.sub,
                    expires_at=grant.expires_at,
                    session=self.session,
                    heartbeat=self.cfg.heartbeat,
                )
            )
            try:
                code = await self._serve(link, grant)
            except Exception as exc:
                log.error("session %s failed: %s", self.session, redact(repr(exc)))
                code = p.INTERNAL_ERROR
            await self.hub.remove(link)
            if code != PEER_GONE:
                await self._close(code, _REASONS.get(code, ""))
        finally:
            link.finished()

    def _too_big(self, data: str | bytes) -> bool:
        limit = self.cfg.max_message_bytes
        if len(data) > limit:
            return True
        return isinstance(data, str) and len(data) * 4 > limit and len(data.encode()) > limit

    async def _authenticate(self) -> Grant | None:
        try:
            async with asyncio.timeout(self.cfg.auth_timeout):
                message = await self.ws.receive()
        except TimeoutError:
            await self._close(p.AUTH_TIMEOUT, "authentication timeout")
            return None
        data = _payload(message)
        if data is None:
            return None  # disconnected
        if self._too_big(data):
            await self._close(p.MESSAGE_TOO_BIG, "message too big")
            return None
        msg = p.parse(data)
        if not isinstance(msg, p.Auth):
            if not isinstance(msg, p.ProtocolError):
                msg = p.ProtocolError(p.E_BAD_REQUEST, "the first message must be auth")
            await self._send_now(p.encode_error(msg))
            await self._close(p.PROTOCOL_ERROR, "expected auth")
            return None
        try:
            return verify(self.cfg.jwt_secret, msg.token, leeway=self.cfg.leeway)
        except AuthError as exc:
            log.info("session %s: token refused (%s)", self.session, exc.reason)
            code = p.TOKEN_EXPIRED if exc.reason == "expired" else p.AUTH_FAILED
            await self._close(code, str(exc))
            return None

    async def _serve(self, link: ClientLink, grant: Grant) -> int:
        async with asyncio.TaskGroup() as tg:
            helpers = [
                tg.create_task(self._guard(link, self._read(link, grant))),
                tg.create_task(self._guard(link, self._expire(link, grant))),
            ]
            if self.cfg.heartbeat > 0:
                helpers.append(tg.create_task(self._guard(link, self._heartbeat(link))))
            try:
                return await link.run(self.ws.send_text, self.cfg.send_timeout)
            except (WebSocketDisconnect, OSError):
                return PEER_GONE
            finally:
                for task in helpers:
                    task.cancel()

    async def _guard(self, link: ClientLink, work: Coroutine[Any, Any, None]) -> None:
        """Run a helper; an unexpected failure closes the connection with 1011."""
        try:
            await work
        except Exception as exc:
            log.error("session %s failed: %s", self.session, redact(repr(exc)))
            link.close(p.INTERNAL_ERROR)

    async def _expire(self, link: ClientLink, grant: Grant) -> None:
        # The same leeway as verify(): a token accepted at its edge is not cut off at once.
        await asyncio.sleep(max(0.0, grant.expires_at + self.cfg.leeway - time.time()))
        link.close(p.TOKEN_EXPIRED)

    async def _heartbeat(self, link: ClientLink) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat)
            link.put(p.encode_heartbeat(time.time()))

    async def _read(self, link: ClientLink, grant: Grant) -> None:
        while link.close_code is None:
            data = _payload(await self.ws.receive())
            if data is None:
                link.close(PEER_GONE)
                return
            if self._too_big(data):
                link.close(p.MESSAGE_TOO_BIG)
                return
            link.put(await self._handle(p.parse(data), link, grant))

    async def _handle(
        self, msg: p.ClientMessage | p.ProtocolError, link: ClientLink, grant: Grant
    ) -> str:
        """The reply to one client message. Queue it at once: subscribe's ordering relies on it."""
        if isinstance(msg, p.ProtocolError):
            return p.encode_error(msg)
        if isinstance(msg, p.Ping):
            return p.encode_pong(msg.id)
        if isinstance(msg, p.Auth):
            error = p.ProtocolError(p.E_ALREADY_AUTHENTICATED, "already authenticated")
            return p.encode_error(error)
        if isinstance(msg, p.Unsubscribe):
            self.channels.difference_update(msg.channels)
            await self.hub.unsubscribe_many(link, msg.channels)
            return p.encode_unsubscribed(msg.id, msg.channels)
        forbidden = [c for c in msg.channels if not granted(c, grant.channels)]
        if forbidden:
            text = f"the token does not grant {forbidden[0]}"
            return p.encode_error(p.ProtocolError(p.E_FORBIDDEN, text, msg.id))
        new = [c for c in msg.channels if c not in self.channels]
        if len(self.channels) + len(new) > self.cfg.max_channels:
            text = f"at most {self.cfg.max_channels} channels per connection"
            return p.encode_error(p.ProtocolError(p.E_TOO_MANY_CHANNELS, text, msg.id))
        try:
            await self.hub.subscribe_many(link, new)
        except BrokerError as exc:
            log.warning("session %s: subscribe failed: %s", self.session, redact(str(exc)))
            text = "the broker is unavailable, retry later"
            return p.encode_error(p.ProtocolError(p.E_UNAVAILABLE, text, msg.id))
        self.channels.update(new)
        return p.encode_subscribed(msg.id, msg.channels)

    async def _send_now(self, frame: str) -> None:
        """Send outside the link (before authentication there is none)."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.send_text(frame)
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def _close(self, code: int, reason: str = "") -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code, reason)
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            # The client is gone or not reading; returning lets the server drop the socket.
            pass
