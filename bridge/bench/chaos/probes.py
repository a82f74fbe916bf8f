"""Probes of a chaos run that judge at once: revoked and expired tokens, and bad input.

- :func:`revocation`: connections holding a token are open when it is revoked through the
  admin API; every one must be closed with 4004, and no connection with that token may be
  admitted, once the revocation had :data:`REVOCATION_BOUND` seconds to reach every instance
  connected to Redis (an instance whose Redis was down meanwhile gets that long after it is
  back, as docs/operations.md says).
- :func:`expired`: a token past its ``exp`` is never admitted (4003).
- :func:`bad_input`: malformed, oversized and out-of-range requests to the HTTP endpoints and
  frames on ``/ws`` get a 4xx or a documented close code, never a 5xx nor a 1011.

Each returns violations as ``{"kind", "detail", "t"}`` dicts, and counts what it checked.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

#: Seconds a revocation may take to reach every instance connected to Redis.
REVOCATION_BOUND = 3.0
Violation = dict[str, Any]


@dataclass
class Tally:
    checked: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append({"kind": kind, "detail": detail, "t": time.time()})


async def open_with(url: str, token: str) -> tuple[Any, int | None]:
    """Connect and authenticate: ``(connection, None)`` when welcomed, ``(None, close code)``
    when refused (code None when the instance could not be reached)."""
    try:
        ws = await connect(url, compression=None, open_timeout=5, close_timeout=1)
    except (OSError, TimeoutError, InvalidHandshake):
        return None, None
    try:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        async with asyncio.timeout(10):
            while True:
                message = orjson.loads(await ws.recv())
                if message.get("type") == "welcome":
                    return ws, None
    except ConnectionClosed as exc:
        return None, exc.rcvd.code if exc.rcvd is not None else 1006
    except TimeoutError:
        await ws.close()
        return None, None


async def closed_with(ws: Any, within: float) -> int | None:
    """The close code the server sends ``ws`` within ``within`` seconds (None: still open)."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006
    except TimeoutError:
        await ws.close()
        return None


async def revocation(urls: Callable[[], Sequence[str]], mint: Callable[[str], str],
                     revoke: Callable[[str], Awaitable[float | None]],
                     redis_back: Callable[[float], float], tally: Tally) -> None:
    """One revocation, judged as the module docstring says. ``revoke(jti)`` returns the time
    its answer came (None: no instance could revoke it); ``redis_back(t)`` the time Redis was
    last back up after ``t`` (``t`` itself when it stayed up)."""
    jti = "chaos-" + secrets.token_hex(6)
    token = mint(jti)
    opened = [ws for ws, _ in await asyncio.gather(*(open_with(u, token) for u in urls()))
              if ws is not None]
    answered = await revoke(jti)
    if answered is None:
        for ws in opened:
            await ws.close()
        return
    tally.count("revocations")
    codes = await asyncio.gather(*(closed_with(ws, REVOCATION_BOUND + 30) for ws in opened))
    for code in codes:
        tally.count("revoked_connections_closed")
        if code != 4004:
            tally.violate("revoked_not_closed", f"a connection of a revoked token ended with "
                          f"{code} instead of 4004")
    ends = time.monotonic() + 2 * REVOCATION_BOUND
    while time.monotonic() < ends:
        started = time.time()
        targets = list(urls())
        results = await asyncio.gather(*(open_with(u, token) for u in targets))
        for ws, code in results:
            if ws is None:
                tally.count("revoked_refused" if code == 4004 else "revoked_unreached")
                continue
            await ws.close()
            if started > redis_back(answered) + REVOCATION_BOUND:
                tally.violate("revoked_accepted", f"a connection started {started - answered:.2f}"
                              "s after the revocation was answered was admitted")
            else:
                tally.count("revoked_admitted_while_propagating")
        await asyncio.sleep(0.2)


async def expired(urls: Sequence[str], token: str, tally: Tally) -> None:
    for ws, code in await asyncio.gather(*(open_with(u, token) for u in urls)):
        if ws is not None:
            await ws.close()
            tally.violate("expired_accepted", "a token past its exp was admitted")
        elif code is not None:
            tally.count("expired_refused")
            if code != 4003:
                tally.violate("expired_wrong_code", f"an expired token was closed with {code}")


@dataclass(frozen=True)
class Bad:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


async def bad_input(base: str, requests: Sequence[Bad], ws_url: str, token: str,
                    tally: Tally) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        for bad in requests:
            try:
                reply = await http.request(bad.method, base + bad.path, content=bad.body,
                                           headers=dict(bad.headers))
            except httpx.HTTPError:
                continue  # the instance is down (a fault): nothing was answered
            tally.count("bad_requests")
            if reply.status_code >= 500 and reply.status_code != 503:
                tally.violate("server_error", f"{bad.method} {bad.path[:60]} answered "
                              f"{reply.status_code}")
    for frames in BAD_FRAMES:
        code = await _ws_frames(ws_url, token, frames)
        tally.count("bad_frames")
        if code == 1011:
            tally.violate("ws_internal_error", f"/ws closed with 1011 after {frames[0][:40]!r}")


async def _ws_frames(url: str, token: str, frames: Sequence[str | bytes]) -> int | None:
    try:
        async with connect(url, compression=None, open_timeout=5, close_timeout=1,
                           max_size=2**22) as ws:
            for frame in frames:
                await ws.send(frame.replace("<token>", token) if isinstance(frame, str)
                              else frame)
            return await closed_with(ws, 1.0)
    except (OSError, TimeoutError, InvalidHandshake):
        return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006


_AUTH = '{"type":"auth","token":"<token>"}'
#: Sequences of frames sent on one /ws connection.
BAD_FRAMES: list[list[str | bytes]] = [
    ["not json"],
    [b"\xff\xfe\x00binary"],
    ['{"type":"subscribe","channels":["calls:chaos"]}'],
    [_AUTH, "[1,2,3]", '{"type":"nope"}', '{"type":"subscribe","channels":"calls:chaos"}'],
    [_AUTH, '{"type":"subscribe","id":' + "9" * 400 + ',"channels":["calls:chaos"]}'],
    [_AUTH, '{"type":"subscribe","channels":["calls:chaos"],"resume":{"calls:chaos":'
            '{"epoch":"x","offset":"99999999999999999999999-1"}}}'],
    [_AUTH, '{"type":"subscribe","channels":["calls:\\u0000"]}'],
    [_AUTH, '{"type":"ping","id":' + "1e400" + '}'],
    [_AUTH, "x" * 200_000],
    [_AUTH, '{"type":"renew","token":"' + "a." * 5000 + '"}'],
]
