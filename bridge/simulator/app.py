"""The AntBuddy simulator: oapi tokens, the call-signal websocket in three dialects, call traffic.

One Starlette app on one port serves everything, as the real upstream does across its hosts:

- ``POST /oapi/v1/voice/auth_token`` (hash-checked tokens with a configurable lifetime and
  ``expire`` format),
- the signal websocket in each enabled dialect (``/socket.io/1/...``, ``/socket.io/?EIO=4``,
  ``/`` for Kazoo JSON),
- control endpoints for demos and tests: ``GET /_sim/stats``, ``POST /_sim/drop``
  (drop every signal connection, or one account's with ``?account_id=``), and
  ``POST /_sim/rate?calls_per_second=N``, and ``POST /_sim/inject`` (the request body sent
  as one raw frame to every signal connection, or one account's: fault injection).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.http.serving import client_gone
from bridge.simulator.hub import SignalHub
from bridge.simulator.oapi import OapiRest, oapi_routes
from bridge.simulator.tokens import TokenStore
from bridge.simulator.traffic import Traffic

ALL_DIALECTS = ("socketio-0.9", "kazoo-json", "engineio-4")


@dataclass
class SimulatorSettings:
    #: app id -> app secret
    apps: dict[str, str] = field(default_factory=lambda: {"demo-app": "demo-secret-0123456789"})
    accounts: list[str] = field(default_factory=lambda: ["acct-demo"])
    extensions: list[str] = field(default_factory=lambda: [str(n) for n in range(1001, 1011)])
    calls_per_second: float = 1.0
    token_lifetime: float = 3600.0
    expire_format: str = "ttl"
    dialects: tuple[str, ...] = ALL_DIALECTS
    expiry_policy: str = "subscribe"
    heartbeat_interval: float = 10.0
    #: Frames queued per signal socket; a socket that falls further behind loses signals.
    queue_limit: int = 50
    time_scale: float = 1.0
    #: Calls an extension may be in at once: 1 (a phone in a call takes no other), more only
    #: for a call-waiting scenario.
    calls_per_extension: int = 1
    seed: int | None = None
    #: Start generating calls at once; otherwise only when a rate is set through the control API.
    traffic: bool = True
    #: Keep a journal of every signal generated (bounded), for end-to-end accounting in tests.
    journal_size: int = 0


class Simulator:
    def __init__(self, settings: SimulatorSettings | None = None) -> None:
        self.settings = s = settings or SimulatorSettings()
        self.tokens = TokenStore(dict(s.apps), lifetime=s.token_lifetime,
                                 expire_format=s.expire_format)
        self.hub = SignalHub(self.tokens, dialects=s.dialects, expiry_policy=s.expiry_policy,
                             heartbeat_interval=s.heartbeat_interval,
                             queue_limit=s.queue_limit)
        #: Past calls, as the oapi's call history serves them (fed by the traffic).
        self.rest = OapiRest()
        self.journal: deque[tuple[str, str, str, str]] = deque(maxlen=s.journal_size or 1)
        self.traffic = Traffic(self.emit, accounts=list(s.accounts),
                               extensions=list(s.extensions),
                               calls_per_second=s.calls_per_second,
                               time_scale=s.time_scale, seed=s.seed,
                               calls_per_extension=s.calls_per_extension)
        self._traffic_task: asyncio.Task[None] | None = None

    def emit(self, account_id: str, name: str, payload: dict[str, Any]) -> int:
        """Send one signal as the traffic does: journaled, kept in the call history, emitted."""
        if self.settings.journal_size:
            self.journal.append((account_id, name, str(payload.get("Call-ID")),
                                 str(payload.get("Msg-ID"))))
        self.rest.history.observe(account_id, name, payload)
        return self.hub.emit(account_id, name, payload)

    def start_traffic(self, calls_per_second: float | None = None) -> None:
        if calls_per_second is not None:
            self.traffic.calls_per_second = calls_per_second
        if self._traffic_task is None or self._traffic_task.done():
            self._traffic_task = asyncio.create_task(self.traffic.run(), name="sim-traffic")

    async def stop_traffic(self) -> None:
        task, self._traffic_task = self._traffic_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def stats(self) -> dict[str, object]:
        return {"hub": self.hub.stats(), "traffic": self.traffic.stats(),
                "token_requests": self.tokens.requests}

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """The app's lifespan: traffic (when ``settings.traffic``) while it runs; on the way
        out, traffic stopped and every signal connection closed."""
        if self.settings.traffic:
            self.start_traffic()
        try:
            yield
        finally:
            await self.stop_traffic()
            await self.hub.close()

    def build_app(self) -> Starlette:
        """One app serving the oapi, the control endpoints and the signal websockets."""
        return Starlette(
            routes=[
                *oapi_routes(self.tokens, rest=self.rest),
                *(Route(path, partial(handler, self), methods=[method], name=handler.__name__)
                  for path, method, handler in CONTROL_ROUTES),
                *self.hub.routes(),
            ],
            lifespan=self.lifespan,
            exception_handlers={ClientDisconnect: client_gone},
        )


# -- control endpoints ------------------------------------------------------------------------


async def stats(sim: Simulator, request: Request) -> Response:
    return JSONResponse(sim.stats())


async def drop(sim: Simulator, request: Request) -> Response:
    dropped = await sim.hub.drop(request.query_params.get("account_id"))
    return JSONResponse({"dropped": dropped})


async def inject(sim: Simulator, request: Request) -> Response:
    frame = (await request.body()).decode("utf-8", "replace")
    sent = sim.hub.inject(frame, request.query_params.get("account_id"))
    return JSONResponse({"sent": sent})


async def rate(sim: Simulator, request: Request) -> Response:
    try:
        value = float(request.query_params["calls_per_second"])
        if not 0 <= value <= 10_000:
            raise ValueError
    except (KeyError, ValueError):
        return JSONResponse({"error": "calls_per_second: a number in 0..10000"}, 400)
    if value == 0:
        await sim.stop_traffic()
    else:
        sim.start_traffic(value)
    return JSONResponse({"calls_per_second": value})


ControlHandler = Callable[[Simulator, Request], Awaitable[Response]]

#: (path, method, handler) of every control endpoint.
CONTROL_ROUTES: list[tuple[str, str, ControlHandler]] = [
    ("/_sim/stats", "GET", stats),
    ("/_sim/drop", "POST", drop),
    ("/_sim/rate", "POST", rate),
    ("/_sim/inject", "POST", inject),
]
