"""One ``/ws`` connection, from admission to close (see :mod:`bridge.downstream.endpoint`).

A connection costs two tasks: the endpoint's own, which writes (the link's buffer), and a
reader. Token expiry is a timer handle and heartbeats come from the route's
:class:`~bridge.downstream.heartbeat.Heartbeats`, so an idle connection runs no code at all.
When ``idle_timeout`` is set the reader waits at most that long for each client message; a
resume (or a ``state`` message) runs inside the reader, so requests sent meanwhile are answered
after it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Awaitable, Callable, Mapping

from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.auth.tokens import AuthError, Grant
from bridge.auth.verifier import Verifier, from_scope
from bridge.brokers.base import BrokerError
from bridge.cluster.revocations import NotSynced
from bridge.common.redact import redact
from bridge.downstream import protocol as p
from bridge.downstream.link import DIRECT_FRAMES, PEER_GONE, Bind, ClientLink
from bridge.downstream.resume import resume, send_state
from bridge.downstream.route import Route
from bridge.events.channels import granted

log = logging.getLogger(__name__)

#: How long to wait for a close frame to be written before giving up on the client.
CLOSE_TIMEOUT = 5.0

_REASONS = {
    p.TOKEN_EXPIRED: "token expired",
    p.TOKEN_REVOKED: "token revoked",
    p.SLOW_CONSUMER: "slow consumer",
    p.CLIENT_IDLE: "no message from the client in time",
    p.DISCONNECTED: "disconnected by an operator",
    p.SERVICE_RESTART: "service restart",
    p.MESSAGE_TOO_BIG: "message too big",
    p.INTERNAL_ERROR: "internal error",
    p.TRY_AGAIN_LATER: "revoked token ids not loaded yet; retry",
}
#: The close code of a refused token, by :attr:`AuthError.reason` (any other: 4001).
_REFUSED = {"expired": p.TOKEN_EXPIRED, "unavailable": p.TRY_AGAIN_LATER}


def _payload(message: Mapping[str, object]) -> str | bytes | None:
    text = message.get("text")
    if isinstance(text, str):
        return text
    data = message.get("bytes")
    return data if isinstance(data, bytes) else None


class Session:
    def __init__(self, route: Route, websocket: WebSocket, send: Send | None = None) -> None:
        self.route = route
        self._asgi_send = send
        self.hub = route.hub
        self.cfg = route.cfg
        self.ws = websocket
        self.session = secrets.token_hex(8)
        self.channels: set[str] = set()
        self.grant: Grant | None = None
        #: Set once authenticated, for the admin API (see :attr:`Route.sessions`).
        self.link: ClientLink | None = None
        self.since = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        #: The code this side closed with; None when the client went first.
        self._closed_with: int | None = None

    async def run(self) -> None:
        if not self.route.origins.allows(self.ws.headers.get("origin")):
            await self._close(p.POLICY_VIOLATION, "origin not allowed")  # before accept: 403
            return
        address = self.ws.client.host if self.ws.client else "unknown"
        if not self.route.counter.acquire(address):
            if await self._accept():
                await self._close(p.TRY_AGAIN_LATER, "too many connections from this address")
                self._count_closed()
            return
        try:
            if await self._accept():
                await self._run()
                self._count_closed()
        finally:
            self.route.counter.release(address)

    async def _accept(self) -> bool:
        try:
            await self.ws.accept()
        except (WebSocketDisconnect, OSError):
            return False
        self.route.tally.accepted += 1
        log.debug("session %s: accepted from %s", self.session,
                  self.ws.client.host if self.ws.client else "unknown")
        return True

    def _count_closed(self) -> None:
        code = self._closed_with if self._closed_with is not None else PEER_GONE
        self.route.tally.closed[code] += 1
        log.debug("session %s: closed (%d)", self.session, code)

    async def _run(self) -> None:
        grant = await self._authenticate()
        if grant is None:
            return
        self.grant = grant
        link = self.link = self.hub.attach()
        bind: Bind | None = self.ws.scope.get("extensions", {}).get(DIRECT_FRAMES)
        if bind is not None:
            bind(link.offer)
        self.since = time.time()
        self.route.track(link, None, grant.token_id)
        self.route.sessions[self.session] = self
        try:
            try:  # after track(), with no await between: no revocation slips by
                if self.route.is_revoked(grant):
                    link.close(p.TOKEN_REVOKED)
            except NotSynced:
                link.close(p.TRY_AGAIN_LATER)
            link.put(p.encode_welcome(
                sub=grant.sub, expires_at=grant.expires_at, session=self.session,
                heartbeat=self.cfg.heartbeat, expiry_grace=self.cfg.expiry_grace,
                idle_timeout=self.cfg.idle_timeout,
            ))
            try:
                code = link.close_code or await self._serve(link)
            except Exception as exc:
                log.error("session %s failed: %s", self.session, redact(repr(exc)))
                code = p.INTERNAL_ERROR
            await self.hub.remove(link)
            if code != PEER_GONE:
                await self._close(code, _REASONS.get(code, ""))
        finally:
            self.route.sessions.pop(self.session, None)
            self.route.track(link, self.grant.token_id, None)
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
            return await self._verifier().client_async(msg.token)
        except AuthError as exc:
            log.debug("session %s: token refused (%s)", self.session, exc.reason)
            await self._close(_REFUSED.get(exc.reason, p.AUTH_FAILED), str(exc))
            return None

    def _verifier(self) -> Verifier:
        """The app's token verifier (its lifespan state), or one for HS256 tokens only."""
        return from_scope(self.ws.scope, self.cfg.jwt_secret, self.cfg.leeway)

    async def _serve(self, link: ClientLink) -> int:
        reader = asyncio.create_task(self._guarded_read(link), name=f"ws reader {self.session}")
        self._arm_expiry(link)
        beats = self.route.heartbeats
        if beats is not None:
            beats.add(link)
        try:
            return await link.run(self._sender(), self.cfg.send_timeout)
        except (WebSocketDisconnect, OSError):
            return PEER_GONE
        finally:
            if beats is not None:
                beats.discard(link)
            if self._expiry is not None:
                self._expiry.cancel()
            reader.cancel()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.gather(reader, return_exceptions=True)
            except TimeoutError:
                log.warning("session %s: reader did not stop in time", self.session)

    def _sender(self) -> Callable[[str], Awaitable[None]]:
        """What the writer sends frames with: the ASGI ``send`` itself when known.

        Every frame to every client goes through it; Starlette's ``send_text`` adds state
        checks that cannot fail once the connection is accepted (a disconnect still raises
        OSError, which the writer handles).
        """
        asgi_send = self._asgi_send
        if asgi_send is None:
            return self.ws.send_text

        async def send_text(frame: str) -> None:
            await asgi_send({"type": "websocket.send", "text": frame})

        return send_text

    async def _guarded_read(self, link: ClientLink) -> None:
        """The reader; an unexpected failure closes the connection with 1011."""
        try:
            await self._read(link)
        except Exception as exc:
            log.error("session %s failed: %s", self.session, redact(repr(exc)))
            link.close(p.INTERNAL_ERROR)

    def _arm_expiry(self, link: ClientLink) -> None:
        """(Re)schedule the 4003 close for the current grant's ``exp`` plus the grace."""
        assert self.grant is not None
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = self.grant.expires_at + self.cfg.expiry_grace - time.time()
        self._expiry = loop.call_later(max(0.0, delay), self._expired, link)

    def _expired(self, link: ClientLink) -> None:
        assert self.grant is not None
        if self.grant.expires_at + self.cfg.expiry_grace - time.time() > 0:
            self._arm_expiry(link)  # the loop's clock and the wall clock disagree: wait on
        else:
            link.close(p.TOKEN_EXPIRED)

    async def _read(self, link: ClientLink) -> None:
        idle = self.cfg.idle_timeout
        while link.close_code is None:
            try:
                async with asyncio.timeout(idle if idle > 0 else None):
                    message = await self.ws.receive()
            except TimeoutError:
                link.close(p.CLIENT_IDLE)
                return
            data = _payload(message)
            if data is None:
                link.close(PEER_GONE)
                return
            if self._too_big(data):
                link.close(p.MESSAGE_TOO_BIG)
                return
            await self._handle(p.parse(data), link)

    async def _handle(self, msg: p.ClientMessage | p.ProtocolError, link: ClientLink) -> None:
        """Answer one client message through ``link``."""
        if isinstance(msg, p.ProtocolError):
            link.put(p.encode_error(msg))
        elif isinstance(msg, p.Ping):
            link.put(p.encode_pong(msg.id))
        elif isinstance(msg, p.Auth):
            error = p.ProtocolError(p.E_ALREADY_AUTHENTICATED, "already authenticated")
            link.put(p.encode_error(error))
        elif isinstance(msg, p.Unsubscribe):
            self.channels.difference_update(msg.channels)
            await self.hub.unsubscribe_many(link, msg.channels)
            link.put(p.encode_unsubscribed(msg.id, msg.channels))
        elif isinstance(msg, p.Renew):
            link.put(await self._renew(msg, link))
        else:
            await self._subscribe(msg, link)

    def _error(self, code: str, text: str, cid: p.ClientId) -> str:
        return p.encode_error(p.ProtocolError(code, text, cid))

    async def _subscribe(self, msg: p.Subscribe, link: ClientLink) -> None:
        assert self.grant is not None
        forbidden = [c for c in msg.channels if not granted(c, self.grant.channels)]
        if forbidden:
            text = f"the token does not grant {forbidden[0]}"
            link.put(self._error(p.E_FORBIDDEN, text, msg.id))
            return
        new = [c for c in msg.channels if c not in self.channels]
        if len(self.channels) + len(new) > self.cfg.max_channels:
            text = f"at most {self.cfg.max_channels} channels per connection"
            link.put(self._error(p.E_TOO_MANY_CHANNELS, text, msg.id))
            return
        resumes = {c: (e, o) for c, e, o in msg.resume if c in new}
        stated = [c for c in new if c not in resumes] if msg.state else []
        joined: list[str] = []
        try:
            # Positions first: once joined, live frames may follow, and none may precede the
            # reply; every event after a position read before the join is live or in history.
            async with asyncio.timeout(self.cfg.broker_timeout):
                positions = {c: await self.hub.broker.position(c) for c in msg.channels
                             if c not in stated}
            joined = await self.hub.subscribe_many(link, new, hold=[*resumes, *stated])
            # Snapshots after the join, the channels held: every later event reaches the hold.
            async with asyncio.timeout(self.cfg.broker_timeout):
                states = {c: await self.hub.broker.snapshot(c) for c in stated}
        except (BrokerError, TimeoutError) as exc:
            log.warning("session %s: subscribe failed: %s", self.session,
                        redact(str(exc) or type(exc).__name__))
            await self.hub.unsubscribe_many(link, joined)  # all or nothing
            link.put(self._error(p.E_UNAVAILABLE, "the broker is unavailable, retry later", msg.id))
            return
        self.channels.update(new)
        positions.update((c, (s.epoch, s.offset)) for c, s in states.items())
        link.put(p.encode_subscribed(msg.id, msg.channels,
                                     {c: positions[c][0] for c in msg.channels},
                                     {c: positions[c][1] for c in msg.channels}))
        for channel, snapshot in states.items():
            if channel in joined:
                await send_state(self.hub, link, msg.id, channel, snapshot,
                                 self.cfg.send_timeout)
        for channel in joined:
            if channel in resumes:
                epoch, offset = resumes[channel]
                await resume(self.hub, link, channel, epoch, offset,
                             max_age=self.cfg.history_max_age,
                             broker_timeout=self.cfg.broker_timeout,
                             send_timeout=self.cfg.send_timeout, state=msg.state, cid=msg.id)

    async def _renew(self, msg: p.Renew, link: ClientLink) -> str:
        old = self.grant
        assert old is not None
        try:
            grant = await self._verifier().client_async(msg.token)
        except AuthError as exc:
            if exc.reason == "unavailable":
                return self._error(p.E_UNAVAILABLE, str(exc), msg.id)
            return self._error(p.E_TOKEN_REFUSED, str(exc), msg.id)
        if grant.sub != old.sub:
            return self._error(p.E_SUB_MISMATCH, "the new token names another subject", msg.id)
        try:
            if self.route.is_revoked(grant):
                return self._error(p.E_TOKEN_REVOKED, "the new token is revoked", msg.id)
        except NotSynced:
            return self._error(p.E_UNAVAILABLE, "token revocations are not loaded yet, retry "
                               "later", msg.id)
        self.grant = grant
        self.route.track(link, old.token_id, grant.token_id)
        self._arm_expiry(link)
        dropped = sorted(c for c in self.channels if not granted(c, grant.channels))
        if dropped:
            self.channels.difference_update(dropped)
            await self.hub.unsubscribe_many(link, dropped)
            link.put(p.encode_unsubscribed(None, dropped, reason="not_granted"))
        return p.encode_renewed(msg.id, grant.expires_at)

    async def _send_now(self, frame: str) -> None:
        """Send outside the link (before authentication there is none)."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.send_text(frame)
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            pass

    async def _close(self, code: int, reason: str = "") -> None:
        self._closed_with = code
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code, reason)
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            # The client is gone or not reading; returning lets the server drop the socket.
            pass
