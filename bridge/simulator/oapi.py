"""The simulator's AntBuddy ``oapi``: HTTP routes over a :class:`TokenStore`.

``POST /oapi/v1/voice/auth_token`` behaves as the provider documents it: headers
``x-auth-app-id`` and ``x-auth-app-hash`` (lowercase hex sha256 of app id + app secret), an
optional JSON body ``{"sipUser", "sipPassword"}``, answer ``{"value", "expire"}``. Errors are JSON
``{"error": ...}``: 401 for an unknown app or a wrong hash, 400 for a malformed body, and any
fault queued on the store. Each endpoint is one handler; more oapi endpoints join the list
returned by :func:`oapi_routes`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.tokens import TokenStore

AUTH_TOKEN_PATH = "/oapi/v1/voice/auth_token"
_MAX_BODY = 16_384


def app_hash(app_id: str, app_secret: str, *extra: str) -> str:
    """The documented request hash: lowercase hex sha256 of the fields then the secret."""
    return hashlib.sha256("".join((app_id, *extra, app_secret)).encode()).hexdigest()


def authenticate(store: TokenStore, request: Request) -> str | None:
    """The app id when the request's app headers are valid, else None (constant-time compare)."""
    app_id = request.headers.get("x-auth-app-id", "")
    given = request.headers.get("x-auth-app-hash", "").lower()
    secret = store.apps.get(app_id)
    expected = app_hash(app_id, secret if secret is not None else "\0unknown")
    ok = hmac.compare_digest(given.encode(), expected.encode())
    return app_id if ok and secret is not None else None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object (``{}`` when empty); None when it is not one."""
    raw = await request.body()
    if not raw.strip():
        return {}
    if len(raw) > _MAX_BODY:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def oapi_routes(store: TokenStore, *, delay: float = 0.0) -> list[BaseRoute]:
    """Routes for the simulated oapi; every answer is held ``delay`` seconds first."""

    async def auth_token(request: Request) -> Response:
        store.requests += 1
        status, stall = store.take_fault()
        if delay + stall > 0:
            await asyncio.sleep(delay + stall)
        if status:
            return _error(status, "service unavailable" if status >= 500 else "request failed")
        app_id = authenticate(store, request)
        if app_id is None:
            return _error(401, "invalid app id or app hash")
        body = await _json_body(request)
        store.last_body = body
        if body is None:
            return _error(400, "body must be a JSON object")
        sip = [body.get("sipUser"), body.get("sipPassword")]
        if any(v is not None and not isinstance(v, str) for v in sip):
            return _error(400, "sipUser and sipPassword must be strings")
        token, expires_at = store.issue(app_id)
        return JSONResponse({"value": token, "expire": store.expire_value(expires_at)})

    return [Route(AUTH_TOKEN_PATH, auth_token, methods=["POST"])]
