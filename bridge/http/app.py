"""The HTTP and websocket application: health endpoints, ``/metrics``, the live state API
and the downstream ``/ws``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge import __version__
from bridge.admin.api import AdminApi
from bridge.api.endpoints import Endpoint
from bridge.api.routes import api_routes, openapi_document
from bridge.auth.verifier import STATE_KEY
from bridge.config.model import Config
from bridge.core.service import Service
from bridge.downstream.endpoint import WsApp, ws_route
from bridge.downstream.tally import log_summaries
from bridge.http.metrics import metrics_endpoint, registry_for
from bridge.http.serving import client_gone
from bridge.http.state_api import state_endpoints
from bridge.http.web import DemoBoard, web_routes


class BridgeApp(Starlette):
    """Starlette, except that ``/ws`` connections go straight to the websocket endpoint.

    Everything else takes the usual route (middleware, router, exception handlers); a websocket
    connection lives for hours and sends many frames, and skips those layers on every one.
    """

    ws: WsApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = self.ws
        if ws is not None and scope["type"] == "websocket" and scope["path"] == ws.path:
            await ws(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def build_app(config: Config, service: Service | None = None, *,
              demo: DemoBoard | None = None, config_path: str | None = None) -> BridgeApp:
    """The ASGI app; it starts and stops ``service`` (built from ``config`` when None).

    ``demo``: what the demo's board may mint (the board is then served at ``/``).
    ``config_path``: the file ``config`` came from, read again by a reload (``app.state.admin``
    .reloader; ``POST /admin/reload``); None: reloads are refused.
    """
    svc = service or Service(config)
    server = config.server

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__,
                             "uptime": round(time.time() - svc.started_at, 3)})

    async def readyz(request: Request) -> Response:
        ready, body = await svc.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    endpoints: list[Endpoint] = []
    admin = AdminApi(svc, config, endpoints, config_path=config_path)
    metrics = registry_for(svc)
    # The live state's endpoints serve every tenant on fixed paths: a reload does not change
    # them (the admin API mounts the rest, which a reload may change).
    state = state_endpoints(svc)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document([*state, *endpoints]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with svc:
            # Providers exist once the service has started: mount their endpoints now.
            admin.mount()
            summaries = None
            if app_ws := getattr(app, "ws", None):
                route = app_ws.route
                summaries = asyncio.create_task(
                    log_summaries(route.tally, lambda: len(route.sessions),
                                  config.logging.summary_interval),
                    name="connection summaries")
            try:
                # Every request and connection finds the token verifier in its scope's state.
                yield {STATE_KEY: svc.verifier}
            finally:
                if summaries is not None:
                    summaries.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await summaries
                await admin.close()

    ws = ws_route(svc.hub, jwt_secret=config.auth.jwt_secret.get_secret_value(),
                  leeway=config.auth.leeway, auth_timeout=server.auth_timeout,
                  max_message_bytes=server.max_message_bytes,
                  heartbeat=server.ping_interval, max_channels=server.max_channels,
                  send_timeout=server.send_timeout, expiry_grace=config.auth.expiry_grace,
                  idle_timeout=server.idle_timeout,
                  max_connections_per_ip=server.max_connections_per_ip,
                  allowed_origins=server.allowed_origins,
                  history_max_age=config.broker.history_max_age,
                  revocations=svc.revocations)
    app = BridgeApp(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/openapi.json", openapi),
            Route("/metrics", metrics_endpoint(metrics)),
            ws,
        ],
        lifespan=lifespan,
        exception_handlers={ClientDisconnect: client_gone},
    )
    app.router.routes.extend(api_routes(state, jwt_secret=config.auth.jwt_secret.get_secret_value(),
                                        leeway=config.auth.leeway))
    app.router.routes.extend(web_routes(config, svc, demo=demo))
    app.state.service = svc
    app.state.metrics = metrics
    app.ws = ws.app if isinstance(ws.app, WsApp) else None
    admin.attach(app.router.routes, app.ws.route if app.ws is not None else None)
    app.state.admin = admin
    return app
