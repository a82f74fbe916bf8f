"""The browser side: ``/callbridge.js`` and its types, the live board at ``/``, its JSON.

:func:`web_routes` serves the client module and the board's static files from the package
(``bridge/static``) and ``/board/config.json``, which tells the board what to watch. The
board needs a websocket token: in ``serve`` the user pastes one (kept in the tab's
sessionStorage, never in a URL); with :class:`DemoBoard` (``callbridge demo`` only),
``POST /demo/token`` and ``POST /demo/api-token`` mint short-lived tokens for the demo tenant.

The client library is public and carries no secret, so it is served to every origin
(``Access-Control-Allow-Origin: *``): browsers fetch a module script, or an ``import()``, from
another origin in CORS mode and refuse it without that header. Such a GET has no custom header
and no credentials, so no preflight comes before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.auth.tokens import mint, mint_api
from bridge.config.model import Config

#: Files served from bridge/static: URL path -> (file name, media type).
#: The client library: always served.
LIBRARY = {
    "/callbridge.js": ("callbridge.js", "text/javascript; charset=utf-8"),
    "/callbridge.d.ts": ("callbridge.d.ts", "application/typescript; charset=utf-8"),
}
#: The live board: served with ``[server] board = true`` and in the demo.
BOARD = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/board.js": ("board.js", "text/javascript; charset=utf-8"),
    "/board.css": ("board.css", "text/css; charset=utf-8"),
}
STATIC = {**LIBRARY, **BOARD}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
#: Added to the client library's responses: any page may import it.
_LIBRARY_HEADERS = {"Access-Control-Allow-Origin": "*"}
_CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'")


@dataclass
class DemoBoard:
    """What ``callbridge demo`` grants the board: one tenant, short-lived tokens."""

    jwt_secret: str
    tenant: str
    extensions: list[str] = field(default_factory=list)
    #: Lifetime of each websocket token: short, so the board shows in-band renewal.
    token_ttl: float = 300.0
    api_token_ttl: float = 3600.0

    def channels(self) -> list[str]:
        return [f"calls:{self.tenant}", f"calls:{self.tenant}:*", f"system:{self.tenant}"]


def _static(name: str, media_type: str, extra: dict[str, str] | None = None) -> Any:
    async def endpoint(request: Request) -> Response:
        # Read per request: small files, and an edited board shows on reload.
        body = files("bridge").joinpath("static", name).read_bytes()
        headers = {**_HEADERS, **(extra or {})}
        if name == "index.html":
            headers["Content-Security-Policy"] = _CSP
        return Response(body, media_type=media_type, headers=headers)
    return endpoint


def web_routes(config: Config, service: object = None, *,
               demo: DemoBoard | None = None) -> list[BaseRoute]:
    """The routes to append to the app's router: the client library always; the board with
    ``[server] board = true`` or in the demo (``demo``: what the demo's board may mint)."""
    library: list[BaseRoute] = [Route(path, _static(name, media, _LIBRARY_HEADERS))
                                for path, (name, media) in LIBRARY.items()]
    if demo is None and not config.server.board:
        return library
    tenants = sorted({block.tenant for section in ("antbuddy", "quickom", "epacific", "kompaas")
                      for block in getattr(config, section)})
    dial_tenants = sorted({block.tenant for block in config.antbuddy})

    async def board_config(request: Request) -> Response:
        body: dict[str, Any] = {
            "tenants": [demo.tenant] if demo else tenants,
            "dial_tenants": dial_tenants,
            "extensions": list(demo.extensions) if demo else [],
            "ws_path": "/ws",
            "demo": demo is not None,
        }
        return JSONResponse(body, headers=_HEADERS)

    routes = library + [Route(path, _static(name, media)) for path, (name, media) in BOARD.items()]
    routes.append(Route("/board/config.json", board_config))
    if demo is not None:
        routes.extend(_demo_routes(demo))
    return routes


def _demo_routes(demo: DemoBoard) -> list[BaseRoute]:
    async def token(request: Request) -> Response:
        now = time.time()
        value = mint(demo.jwt_secret, sub="demo-board", channels=demo.channels(),
                     ttl=demo.token_ttl, now=now)
        return JSONResponse({"token": value, "expires_at": int(now + demo.token_ttl)},
                            headers={"Cache-Control": "no-store"})

    async def api_token(request: Request) -> Response:
        value = mint_api(demo.jwt_secret, sub="demo-board", tenants=[demo.tenant],
                         scopes=["calls:dial"], ttl=demo.api_token_ttl)
        return JSONResponse({"token": value}, headers={"Cache-Control": "no-store"})

    return [Route("/demo/token", token, methods=["POST"]),
            Route("/demo/api-token", api_token, methods=["POST"])]
