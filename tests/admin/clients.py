"""A real websocket client for the admin tests: its session id, events and close code."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.scenarios.conftest import SCALE


class Client:
    """Authenticates, subscribes (resuming when asked), then collects event frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session = ""
        self.events: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, ws_url: str, token: str, channels: list[str], *,
                   resume: dict[str, dict[str, str]] | None = None) -> Client:
        ws = await connect(f"{ws_url}/ws", proxy=None, compression=None)
        client = cls(ws)
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        subscribe: dict[str, Any] = {"type": "subscribe", "id": 1, "channels": channels}
        if resume:
            subscribe["resume"] = resume
        await ws.send(orjson.dumps(subscribe).decode())
        client._task = asyncio.create_task(client._read())
        async with asyncio.timeout(10 * SCALE):
            while not any(r.get("type") in ("subscribed", "error") for r in client.replies):
                if client.closed.is_set():
                    break
                await asyncio.sleep(0.02)
        return client

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                message = orjson.loads(frame)
                if message["type"] == "event":
                    self.events.append(message)
                else:
                    if message["type"] == "welcome":
                        self.session = message["session"]
                    self.replies.append(message)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    def ids(self, channel: str) -> list[str]:
        return [m["event"]["id"] for m in self.events if m["channel"] == channel]

    def last(self, channel: str) -> dict[str, str] | None:
        """The resume position after the last event seen on ``channel``."""
        frames = [m for m in self.events if m["channel"] == channel]
        if not frames:
            return None
        return {"epoch": frames[-1]["epoch"], "offset": frames[-1]["offset"]}

    async def wait_closed(self, timeout: float = 10) -> int | None:
        async with asyncio.timeout(timeout * SCALE):
            await self.closed.wait()
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
