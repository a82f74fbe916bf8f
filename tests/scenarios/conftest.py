"""End-to-end fixtures: the simulator and the bridge, each under real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.config.model import Config
from bridge.core.service import Service
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server
from bridge.simulator.app import Simulator, SimulatorSettings

#: One unit for every wait in these tests; raise it on a slow machine.
SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))

APP_ID = "it-app"
APP_SECRET = "it-app-secret-" + secrets.token_hex(8)
ACCOUNT = "acct-it"
TENANT = "itest"
#: The simulator keeps an extension in one call at a time: enough extensions for traffic to
#: flow at the rates the tests ask for.
EXTENSIONS = [f"10{n:02d}" for n in range(1, 9)]
JWT_SECRET = secrets.token_urlsafe(32)


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float,
                     what: str, interval: float = 0.05) -> None:
    """Wait until ``check()`` is true; fail the test naming ``what`` after ``timeout``·SCALE."""
    deadline = time.monotonic() + timeout * SCALE
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout * SCALE:g}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
async def start_simulator() -> AsyncIterator[Callable[..., Awaitable[tuple[Simulator, AppServer]]]]:
    servers: list[AppServer] = []

    async def start(**settings: Any) -> tuple[Simulator, AppServer]:
        settings.setdefault("apps", {APP_ID: APP_SECRET})
        settings.setdefault("accounts", [ACCOUNT])
        settings.setdefault("traffic", False)
        simulator = Simulator(SimulatorSettings(**settings))
        server = AppServer(simulator.build_app())
        await server.start()
        servers.append(server)
        return simulator, server

    yield start
    for server in reversed(servers):
        await server.close()


def bridge_config(sim: AppServer, **account: Any) -> dict[str, Any]:
    upstream = account.pop("upstream", {})
    broker = account.pop("broker", {"url": "memory://"})
    lease = account.pop("lease", {})
    block = {"tenant": TENANT, "oapi_url": sim.url, "ws_url": sim.ws_url, "dialect": "auto",
             "app_id": APP_ID, "app_secret": APP_SECRET, "account_id": ACCOUNT}
    block.update(account)
    return {"server": {"host": "127.0.0.1", "port": 0}, "broker": broker,
            "auth": {"jwt_secret": JWT_SECRET}, "upstream": upstream, "lease": lease,
            "antbuddy": [block]}


@pytest.fixture
async def start_bridge() -> AsyncIterator[Callable[..., Awaitable[tuple[Service, AppServer]]]]:
    servers: list[AppServer] = []

    async def start(data: dict[str, Any]) -> tuple[Service, AppServer]:
        config = Config.model_validate(data)
        service = Service(config)
        server = bridge_server(build_app(config, service), config)
        await server.start()
        servers.append(server)
        return service, server

    yield start
    for server in reversed(servers):
        await server.close()


async def wait_ready(server: AppServer, timeout: float = 15) -> dict[str, Any]:
    body: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal body
        async with httpx.AsyncClient(trust_env=False) as http:
            response = await http.get(f"{server.url}/readyz")
        body = response.json()
        return response.status_code == 200

    await eventually(ready, timeout, "the bridge to be ready")
    return body


class Watcher:
    """A real websocket client that authenticates, subscribes, and collects event frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                message = orjson.loads(frame)
                (self.events if message["type"] == "event" else self.replies).append(message)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def watch(server: AppServer, channels: list[str],
                grants: list[str] | None = None) -> AsyncIterator[Watcher]:
    token = mint(JWT_SECRET, sub="it-watcher", channels=grants or channels, ttl=600)
    async with connect(f"{server.ws_url}/ws", proxy=None, compression=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await ws.send(orjson.dumps({"type": "subscribe", "id": 1, "channels": channels}).decode())
        watcher = Watcher(ws)
        await eventually(lambda: any(r.get("type") == "subscribed" for r in watcher.replies),
                         5, "the subscription to be confirmed")
        try:
            yield watcher
        finally:
            await watcher.close()
