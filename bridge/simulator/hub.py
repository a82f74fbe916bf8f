"""The simulator's call-signal websocket server, speaking all three upstream dialects.

Mount :meth:`SignalHub.routes` in a Starlette app served by uvicorn. Like Kazoo, the hub checks
the token on every subscribe, requires ``account_id`` and ``binding``, matches bindings
``call.<EVENT|*>.<call id|*>`` on event name and ``Call-ID``, and silently drops events for a
socket whose outgoing queue is full (counted in :meth:`SignalHub.stats`). With
``expiry_policy="disconnect"`` it is stricter than Kazoo and closes a connection (code 1008) as
soon as the token of one of its subscriptions is no longer valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bridge.common.redact import redact
from bridge.simulator import wire

logger = logging.getLogger(__name__)

EXPIRY_POLL = 1.0  # seconds between token re-checks under the "disconnect" policy
_MAX_PENDING_SIDS = 1000
_STOP_TIMEOUT = 5.0
CLOSE_NORMAL, CLOSE_SILENT, CLOSE_EXPIRED = 1000, 1001, 1008
CLOSE_DROPPED, CLOSE_RESTART = 1011, 1012


class TokenChecker(Protocol):
    def check(self, token: str) -> bool: ...
    def expires_at(self, token: str) -> float | None: ...


@dataclass(eq=False)
class _Conn:
    dialect: str
    ws: WebSocket
    queue: asyncio.Queue[str]
    sid: str
    #: (account_id, binding) -> the token it was subscribed with
    subs: dict[tuple[str, str], str] = field(default_factory=dict)
    joined: bool = False
    close_code: int = CLOSE_NORMAL
    pong: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class SignalHub:
    """Serves ``socketio-0.9``, ``kazoo-json`` and ``engineio-4`` clients; see module docstring.

    Timing: Socket.IO 0.9 heartbeats every ``heartbeat_interval`` s, close timeout three times
    that; Engine.IO 4 pings every ``heartbeat_interval`` s and wants a pong within as long;
    kazoo-json sockets close after ``idle_timeout`` s without a frame from the client.
    """

    def __init__(self, tokens: TokenChecker, *, dialects: Iterable[str] = wire.DIALECTS,
                 expiry_policy: str = "subscribe", heartbeat_interval: float = 10.0,
                 queue_limit: int = 50, idle_timeout: float = 3600.0) -> None:
        self.dialects = tuple(dialects)
        if not set(self.dialects) <= set(wire.DIALECTS):
            raise ValueError(f"unknown dialects in {self.dialects}; known: {wire.DIALECTS}")
        if expiry_policy not in ("subscribe", "disconnect"):
            raise ValueError(f"expiry_policy: 'subscribe' or 'disconnect', not {expiry_policy!r}")
        if heartbeat_interval <= 0 or queue_limit < 1 or idle_timeout <= 0:
            raise ValueError("heartbeat_interval and idle_timeout must be > 0, queue_limit >= 1")
        self._tokens = tokens
        self.expiry_policy = expiry_policy
        self.heartbeat_interval = heartbeat_interval
        self.close_timeout = 3 * heartbeat_interval
        self.queue_limit = queue_limit
        self.idle_timeout = idle_timeout
        self._conns: set[_Conn] = set()
        self._sids: dict[str, float] = {}  # sio09 handshakes not yet used -> monotonic time
        self._closed = False
        self._counts = {"subscribes_ok": 0, "auth_failures": 0, "dropped_frames": 0}

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        if wire.SIO09 in self.dialects:
            routes += [Route("/socket.io/1/", self._sio09_handshake, methods=["GET"]),
                       WebSocketRoute("/socket.io/1/websocket/{sid}", self._sio09_socket)]
        if wire.EIO4 in self.dialects:
            routes.append(WebSocketRoute("/socket.io/", self._eio4_socket))
        if wire.KAZOO in self.dialects:
            routes.append(WebSocketRoute("/", self._kazoo_socket))
        return routes

    def emit(self, account_id: str, name: str, payload: dict[str, Any]) -> int:
        """Queue the event to every connection with a matching subscription; never blocks.

        Returns how many connections it was queued for; a connection with a full queue loses
        it (counted as a dropped frame). A connection gets it once however many of its
        subscriptions match; the first matching binding is named in kazoo-json frames.
        """
        delivered = 0
        frames: dict[tuple[str, str], str] = {}
        for conn in list(self._conns):
            binding = next((b for (acc, b) in conn.subs if acc == account_id
                            and wire.binding_matches(b, name, payload)), None)
            if binding is None:
                continue
            key = (conn.dialect, binding if conn.dialect == wire.KAZOO else "")
            if key not in frames:
                frames[key] = wire.event_frame(conn.dialect, account_id, binding, name, payload)
            delivered += self._enqueue(conn, frames[key])
        return delivered

    def inject(self, frame: str, account_id: str | None = None) -> int:
        """Queue a raw ``frame`` (garbage included) to every socket subscribed for
        ``account_id``, or to every socket when None; returns how many. For fault injection."""
        return sum(self._enqueue(c, frame) for c in list(self._conns)
                   if account_id is None or any(acc == account_id for acc, _ in c.subs))

    async def drop(self, account_id: str | None = None) -> int:
        """Close (code 1011, no goodbye packet) every socket subscribed for ``account_id``,
        or every socket when None; returns how many. Clients see an unexpected close."""
        targets = [c for c in self._conns
                   if account_id is None or any(acc == account_id for acc, _ in c.subs)]
        await self._stop(targets, CLOSE_DROPPED)
        return len(targets)

    async def close(self) -> None:
        """Refuse new connections and close every socket with 1012 (service restart)."""
        self._closed = True
        self._sids.clear()
        await self._stop(list(self._conns), CLOSE_RESTART)

    def subscribers(self, account_id: str) -> int:
        """How many open sockets hold a subscription for ``account_id`` now: 0 means its
        signals reach nobody."""
        return sum(1 for c in self._conns if not c.stop.is_set()
                   and any(acc == account_id for acc, _ in c.subs))

    def stats(self) -> dict[str, int]:
        return {"connections": len(self._conns),
                "subscriptions": sum(len(c.subs) for c in self._conns), **self._counts}

    async def _sio09_handshake(self, request: Request) -> Response:
        if self._closed:
            return PlainTextResponse("shutting down", status_code=503)
        now, timeout = asyncio.get_running_loop().time(), self.close_timeout
        for sid, created in list(self._sids.items()):  # oldest first
            if now - created > timeout or len(self._sids) >= _MAX_PENDING_SIDS:
                del self._sids[sid]
        sid = secrets.token_urlsafe(15)
        self._sids[sid] = now
        return PlainTextResponse(wire.sio09_handshake_body(sid, timeout, timeout))

    async def _sio09_socket(self, ws: WebSocket) -> None:
        sid = ws.path_params["sid"]
        created = self._sids.pop(sid, None)
        if created is None or asyncio.get_running_loop().time() - created > self.close_timeout:
            await ws.close(CLOSE_EXPIRED)  # before accept: the upgrade is refused (403)
            return
        await self._serve(ws, wire.SIO09, sid, silence=self.close_timeout)

    async def _eio4_socket(self, ws: WebSocket) -> None:
        query = ws.query_params
        if query.get("EIO") != "4" or query.get("transport") != "websocket":
            await ws.close(CLOSE_EXPIRED)
            return
        silence = 3 * self.heartbeat_interval
        await self._serve(ws, wire.EIO4, secrets.token_urlsafe(15), silence=silence)

    async def _kazoo_socket(self, ws: WebSocket) -> None:
        await self._serve(ws, wire.KAZOO, "", silence=self.idle_timeout)

    async def _serve(self, ws: WebSocket, dialect: str, sid: str, *, silence: float) -> None:
        if self._closed:
            await ws.close(CLOSE_RESTART)
            return
        await ws.accept()
        conn = _Conn(dialect, ws, asyncio.Queue(self.queue_limit), sid, joined=dialect != wire.EIO4)
        self._conns.add(conn)
        for frame in wire.greeting(dialect, sid, self.heartbeat_interval, self.heartbeat_interval):
            self._enqueue(conn, frame)
        jobs = [self._reader(conn, silence), self._writer(conn, silence), conn.stop.wait()]
        if dialect != wire.KAZOO:
            jobs.append(self._ticker(conn))
        if self.expiry_policy == "disconnect":
            jobs.append(self._watch_expiry(conn))
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._conns.discard(conn)
            await self._close_socket(conn)
            conn.finished.set()
        for result in results:
            expected = (WebSocketDisconnect, OSError)
            if isinstance(result, Exception) and not isinstance(result, expected):
                logger.error("simulator %s connection failed: %s", dialect, redact(repr(result)))

    async def _reader(self, conn: _Conn, silence: float) -> None:
        while True:
            try:
                async with asyncio.timeout(silence):
                    message = await conn.ws.receive()
            except TimeoutError:
                conn.close_code = CLOSE_SILENT
                return
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
            try:
                actions = wire.decode_client(conn.dialect, frame)
            except wire.WireError as exc:  # Kazoo 4 answers garbage; Socket.IO servers ignore it
                if conn.dialect == wire.KAZOO:
                    self._enqueue(conn, wire.error_frame(conn.dialect, str(exc)))
                continue
            for action in actions:
                if isinstance(action, wire.Leave):
                    return
                self._handle(conn, action)

    async def _writer(self, conn: _Conn, send_timeout: float) -> None:
        while True:
            frame = await conn.queue.get()
            try:
                async with asyncio.timeout(send_timeout):
                    await conn.ws.send_text(frame)
            except TimeoutError:  # the client stopped reading long ago
                conn.close_code = CLOSE_SILENT
                return

    async def _ticker(self, conn: _Conn) -> None:
        interval = self.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            conn.pong.clear()
            self._enqueue(conn, wire.heartbeat_frame(conn.dialect) or "")
            if conn.dialect == wire.EIO4:
                try:
                    async with asyncio.timeout(interval):  # pingTimeout
                        await conn.pong.wait()
                except TimeoutError:
                    conn.close_code = CLOSE_SILENT
                    return

    async def _watch_expiry(self, conn: _Conn) -> None:
        while True:
            expiries = [e for e in map(self._tokens.expires_at, set(conn.subs.values())) if e]
            wait = min([EXPIRY_POLL] + [max(0.02, e - time.time()) for e in expiries])
            conn.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await conn.changed.wait()
            if not all(map(self._tokens.check, set(conn.subs.values()))):
                conn.close_code = CLOSE_EXPIRED
                return

    def _handle(self, conn: _Conn, action: wire.ClientAction) -> None:
        if isinstance(action, wire.Alive):
            conn.pong.set()
        elif isinstance(action, wire.Connect):
            if not conn.joined:
                conn.joined = True
                self._enqueue(conn, wire.connected_frame(conn.dialect, conn.sid) or "")
        elif isinstance(action, wire.Ping):
            self._enqueue(conn, wire.reply_frame(action.request_id, {"response": "pong"}))
        elif isinstance(action, wire.Subscribe) and conn.joined:
            self._subscribe(conn, action)
        elif isinstance(action, wire.Unsubscribe) and conn.joined:
            conn.subs.pop((action.account_id, action.binding), None)
            conn.changed.set()
            if conn.dialect == wire.KAZOO:
                data = {"unsubscribed": [action.binding]}
                self._enqueue(conn, wire.reply_frame(action.request_id, data))

    def _subscribe(self, conn: _Conn, action: wire.Subscribe) -> None:
        dialect, request_id = conn.dialect, action.request_id
        try:
            if not action.account_id or not action.binding:
                raise wire.WireError("account_id and binding are required")
            wire.parse_binding(action.binding)
        except wire.WireError as exc:
            self._enqueue(conn, wire.error_frame(dialect, str(exc), request_id))
            return
        if not action.token or not self._tokens.check(action.token):
            self._counts["auth_failures"] += 1
            self._enqueue(conn, wire.auth_failure_frame(dialect, action.token, request_id))
            return
        conn.subs[(action.account_id, action.binding)] = action.token
        conn.changed.set()
        self._counts["subscribes_ok"] += 1
        if dialect == wire.KAZOO:
            data = {"subscribed": [binding for _, binding in conn.subs]}
            self._enqueue(conn, wire.reply_frame(request_id, data))

    def _enqueue(self, conn: _Conn, frame: str) -> bool:
        try:
            conn.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._counts["dropped_frames"] += 1
            return False
        return True

    async def _stop(self, conns: list[_Conn], code: int) -> None:
        for conn in conns:
            conn.close_code = code
            conn.stop.set()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await asyncio.gather(*(c.finished.wait() for c in conns))
        except TimeoutError:
            logger.warning("simulator: %d connections did not close in time", len(conns))

    async def _close_socket(self, conn: _Conn) -> None:
        ws, connected = conn.ws, WebSocketState.CONNECTED
        if ws.client_state is connected and ws.application_state is connected:
            with contextlib.suppress(RuntimeError, OSError, TimeoutError, WebSocketDisconnect):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await ws.close(conn.close_code)
