"""A demo-like setup for the board under headless Chromium, all on loopback.

``setup``: the simulator feeds an *ingest* bridge (the AntBuddy stream, Redis broker); the page
talks to a *board* bridge sharing that Redis (no providers, the board and its demo token
endpoint). The board bridge can be restarted under the page while events keep flowing into
Redis history, which is what a resume must recover.

``single``: the simulator and one bridge on ``memory://`` that ingests and serves the board.

``fake``: the files callbridge serves (``/callbridge.js``, the board, its demo endpoints) and a
scripted ``/ws`` the test plays the server's side of, message by message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.config.model import Config
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server
from bridge.http.web import DemoBoard, web_routes
from bridge.redisconn.clients import drop_prefix
from bridge.simulator.app import Simulator, SimulatorSettings
from tests.scenarios.conftest import SCALE, wait_ready

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

CHROMIUM = os.environ.get("CALLBRIDGE_CHROMIUM") or shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

APP_ID = "board-app"
APP_SECRET = "board-app-secret-" + secrets.token_hex(8)
ACCOUNT = "acct-board"
TENANT = "boardtest"
EXTENSIONS = ["1001", "1002", "1003", "1004"]
JWT_SECRET = secrets.token_urlsafe(32)
SIP_USER = "1001"


class Setup:
    """Simulator, ingest bridge and a restartable board bridge; ``emitted`` logs every signal."""

    def __init__(self, prefix: str, token_ttl: float) -> None:
        self.prefix = prefix
        self.token_ttl = token_ttl
        self.simulator = Simulator(SimulatorSettings(
            apps={APP_ID: APP_SECRET}, accounts=[ACCOUNT], extensions=EXTENSIONS,
            calls_per_second=4.0, time_scale=0.02, traffic=False, seed=7))
        #: (unix time, upstream name, Call-ID, Msg-ID) of every signal the simulator sent
        self.emitted: list[tuple[float, str, str, str]] = []
        hub_emit = self.simulator.hub.emit

        def emit(account_id: str, name: str, payload: dict) -> int:  # type: ignore[type-arg]
            self.emitted.append((time.time(), name, str(payload.get("Call-ID")),
                                 str(payload.get("Msg-ID"))))
            return hub_emit(account_id, name, payload)

        self.simulator.hub.emit = emit  # type: ignore[method-assign]
        self.board: AppServer | None = None
        self.board_port = 0

    def _config(self, *, providers: bool, port: int) -> Config:
        data: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": 3},
            "broker": {"url": "redis://127.0.0.1:6379/0", "prefix": self.prefix},
            "auth": {"jwt_secret": JWT_SECRET, "expiry_grace": 1.0},
        }
        if providers:
            data["antbuddy"] = [{
                "tenant": TENANT, "oapi_url": self.sim.url, "ws_url": self.sim.ws_url,
                "dialect": "auto", "app_id": APP_ID, "app_secret": APP_SECRET,
                "account_id": ACCOUNT, "sip_user": SIP_USER,
                "sip_password": "board-sip-" + secrets.token_hex(6)}]
        return Config.model_validate(data)

    def _app(self, config: Config) -> Any:
        """The bridge app with the board mounted as ``callbridge demo`` mounts it."""
        app = build_app(config)
        demo = DemoBoard(jwt_secret=JWT_SECRET, tenant=TENANT, extensions=EXTENSIONS,
                         token_ttl=self.token_ttl)
        app.router.routes.extend(web_routes(config, app.state.service, demo=demo))
        return app

    async def start_board(self) -> AppServer:
        config = self._config(providers=False, port=self.board_port)
        self.board = bridge_server(self._app(config), config)
        await self.board.start()
        self.board_port = self.board.port
        await wait_ready(self.board)
        return self.board

    async def stop_board(self) -> None:
        if self.board is not None:
            await self.board.close()
            self.board = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Setup]:
        async with contextlib.AsyncExitStack() as stack:
            self.sim = await stack.enter_async_context(AppServer(self.simulator.build_app()))
            ingest_config = self._config(providers=True, port=0)
            self.ingest = await stack.enter_async_context(
                bridge_server(self._app(ingest_config), ingest_config))
            await wait_ready(self.ingest)
            stack.push_async_callback(self.stop_board)
            stack.push_async_callback(self.simulator.stop_traffic)
            await self.start_board()
            yield self


class Single:
    """The simulator and one bridge on ``memory://``: the AntBuddy stream and the board.
    ``signals`` logs (name, payload) of every signal the simulator sent."""

    def __init__(self) -> None:
        self.simulator = Simulator(SimulatorSettings(
            apps={APP_ID: APP_SECRET}, accounts=[ACCOUNT], extensions=EXTENSIONS,
            calls_per_second=2.0, time_scale=0.05, traffic=False, seed=11))
        self.signals: list[tuple[str, dict[str, Any]]] = []
        hub_emit = self.simulator.hub.emit

        def emit(account_id: str, name: str, payload: dict[str, Any]) -> int:
            self.signals.append((name, payload))
            return hub_emit(account_id, name, payload)

        self.simulator.hub.emit = emit  # type: ignore[method-assign]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Single]:
        async with contextlib.AsyncExitStack() as stack:
            sim = await stack.enter_async_context(AppServer(self.simulator.build_app()))
            config = Config.model_validate({
                "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout": 3},
                "broker": {"url": "memory://"},
                "auth": {"jwt_secret": JWT_SECRET},
                "antbuddy": [{
                    "tenant": TENANT, "oapi_url": sim.url, "ws_url": sim.ws_url,
                    "dialect": "auto", "app_id": APP_ID, "app_secret": APP_SECRET,
                    "account_id": ACCOUNT, "sip_user": SIP_USER,
                    "sip_password": "board-sip-" + secrets.token_hex(6)}],
            })
            app = build_app(config, demo=DemoBoard(jwt_secret=JWT_SECRET, tenant=TENANT,
                                                   extensions=EXTENSIONS))
            self.board = await stack.enter_async_context(bridge_server(app, config))
            await wait_ready(self.board)
            stack.push_async_callback(self.simulator.stop_traffic)
            yield self


class FakeConnection:
    """One client connection to the fake ``/ws``: the test reads what the client sent and
    answers as the server would."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout * SCALE):
            return await self.received.get()

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(message))

    async def close(self, code: int) -> None:
        await self.websocket.close(code)


class Fake:
    """The files callbridge serves, and a ``/ws`` handing each connection to the test."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[FakeConnection] = asyncio.Queue(maxsize=100)

    def app(self) -> Starlette:
        config = Config.model_validate({"auth": {"jwt_secret": JWT_SECRET}})
        demo = DemoBoard(jwt_secret=JWT_SECRET, tenant=TENANT, extensions=EXTENSIONS)
        return Starlette(routes=[*web_routes(config, demo=demo), WebSocketRoute("/ws", self._ws)])

    async def _ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = FakeConnection(websocket)
        self.connections.put_nowait(connection)
        try:
            while True:
                connection.received.put_nowait(json.loads(await websocket.receive_text()))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left, or the test closed the connection

    async def accept(self, timeout: float = 10.0) -> FakeConnection:
        """The next connection, once the client authenticated: it is sent a ``welcome``."""
        async with asyncio.timeout(timeout * SCALE):
            connection = await self.connections.get()
        auth = await connection.receive(timeout)
        assert auth["type"] == "auth" and auth["token"]
        await connection.send({"type": "welcome", "sub": "demo-board",
                               "expires_at": int(time.time()) + 300, "expiry_grace": 10.0,
                               "session": secrets.token_hex(8), "heartbeat": 25.0,
                               "idle_timeout": 0})
        return connection


@pytest.fixture
async def single() -> AsyncIterator[Single]:
    if CHROMIUM is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set CALLBRIDGE_CHROMIUM)")
    async with Single().running() as s:
        yield s


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, AppServer]]:
    bridge = Fake()
    async with AppServer(bridge.app(), graceful_timeout=2.0) as server:
        yield bridge, server


@pytest.fixture
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    if CHROMIUM is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set CALLBRIDGE_CHROMIUM)")
    prefix = f"cbtest-board-{secrets.token_hex(4)}:"
    # a test may ask for short-lived board tokens: parametrize("setup", [ttl], indirect=True)
    token_ttl = float(getattr(request, "param", 300.0))
    try:
        async with Setup(prefix, token_ttl).running() as s:
            yield s
    finally:
        await drop_prefix("redis://127.0.0.1:6379/0", prefix)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set CALLBRIDGE_CHROMIUM)")
    async with playwright_api.async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()
