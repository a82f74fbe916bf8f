"""``dialect = "auto"``: ask the server which of the three dialects it speaks.

Probes, in order of likelihood for AntBuddy: the Socket.IO 0.9 handshake (an HTTP GET that only
such a server answers with ``sid:heartbeat:close:transports``), then an Engine.IO 4 websocket
(whose first frame is an open packet ``0{...}``), then a plain websocket (Kazoo JSON). Probing
sends no credentials.
"""

from __future__ import annotations

import asyncio

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bridge.upstream.dialects.base import HandshakeError
from bridge.upstream.dialects.eio4 import EngineIO4Codec
from bridge.upstream.dialects.kazoo_json import KazooJsonCodec
from bridge.upstream.dialects.sio09 import SocketIO09Codec


class ProbeFailed(Exception):
    """No dialect answered at the configured URL."""


async def probe(base_url: str, http: httpx.AsyncClient, timeout: float) -> str:
    reasons = []
    sio = SocketIO09Codec()
    url = sio.handshake_url(base_url)
    if url is not None:
        try:
            response = await http.get(url, timeout=timeout)
            sio.handshake_response(response.status_code, response.text)
            return sio.name
        except (httpx.HTTPError, HandshakeError, OSError) as exc:
            reasons.append(f"socketio-0.9: {type(exc).__name__}")
    try:
        async with asyncio.timeout(timeout):
            async with connect(EngineIO4Codec().websocket_url(base_url), proxy=None,
                               compression=None, open_timeout=timeout) as ws:
                first = await ws.recv()
        if isinstance(first, str) and first.startswith("0{"):
            return EngineIO4Codec.name
        reasons.append("engineio-4: no open packet")
    except (OSError, TimeoutError, WebSocketException) as exc:
        reasons.append(f"engineio-4: {type(exc).__name__}")
    try:
        async with asyncio.timeout(timeout):
            async with connect(KazooJsonCodec().websocket_url(base_url), proxy=None,
                               compression=None, open_timeout=timeout):
                pass
        return KazooJsonCodec.name
    except (OSError, TimeoutError, WebSocketException) as exc:
        reasons.append(f"kazoo-json: {type(exc).__name__}")
    raise ProbeFailed(f"no known dialect at {base_url} ({'; '.join(reasons)})")
