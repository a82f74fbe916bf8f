"""The simulator's AntBuddy ``oapi``: HTTP routes over a :class:`TokenStore`.

``POST /oapi/v1/voice/auth_token`` behaves as the provider documents it: headers
``x-auth-app-id`` and ``x-auth-app-hash`` (lowercase hex sha256 of app id + app secret), an
optional JSON body ``{"sipUser", "sipPassword"}``, answer ``{"value", "expire"}``. Errors are JSON
``{"error": ...}``: 401 for an unknown app or a wrong hash, 400 for a malformed body, and any
fault queued on the store. Each endpoint is one handler taking an :class:`Oapi` first; more
oapi endpoints join :data:`ROUTES`, which :func:`oapi_routes` binds to one store.

The REST endpoints keep their state in an :class:`OapiRest` (the simulator's ``rest``):

- ``POST /oapi/v1/call/click-to-call/:number``: the app headers, body ``{"sipUser",
  "sipPassword"}``; 400 when the device is not online (``OapiRest.online``; None: all online).
- ``GET /oapi/v1/call/histories``: ``hash`` over the parameters exactly as sent; 400 for a
  window over 31 days, ``to`` before ``from``, ``limit`` outside 1..100 or ``page`` < 1; the
  answer is a JSON array of records (``created_from``/``created_to`` as Unix seconds or
  ``YYYY-MM-DD HH:MM:SS`` UTC, both inclusive).
- ``GET /oapi/v1/call/play_recording``: ``{"media": <URL>}``, a URL under
  ``/_sim/recordings/`` signed with a key of the simulator and valid ``url_lifetime`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.simulator.history import CallHistory
from bridge.simulator.tokens import TokenStore

AUTH_TOKEN_PATH = "/oapi/v1/voice/auth_token"
CLICK_TO_CALL_PATH = "/oapi/v1/call/click-to-call/{number}"
HISTORIES_PATH = "/oapi/v1/call/histories"
PLAY_RECORDING_PATH = "/oapi/v1/call/play_recording"
RECORDINGS_PATH = "/_sim/recordings/{media}"
_MAX_BODY = 16_384
MAX_WINDOW = 31 * 86_400


@dataclass
class OapiRest:
    """State of the simulated REST endpoints."""

    history: CallHistory = field(default_factory=CallHistory)
    #: SIP users whose device is registered; None: every device is online.
    online: set[str] | None = None
    #: app id -> the accounts whose history it may read; an app not listed reads every account.
    app_accounts: dict[str, set[str]] = field(default_factory=dict)
    url_lifetime: float = 600.0
    url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    #: (app id, number, sip user) of every click-to-call placed
    dials: list[tuple[str, str, str]] = field(default_factory=list)
    #: every histories query served: (created_from, created_to, limit, page) as sent
    history_queries: list[tuple[str, str, str, str]] = field(default_factory=list)

    def sign(self, media: str, expires: int) -> str:
        return hmac.new(self.url_key, f"{media}|{expires}".encode(), "sha256").hexdigest()


@dataclass(frozen=True)
class Oapi:
    """What the oapi handlers share: the apps' tokens, the REST state, the answer delay."""

    store: TokenStore
    rest: OapiRest
    #: Seconds every token answer is held first.
    delay: float = 0.0


def parse_date(text: str) -> int | None:
    """Unix seconds from ``1700000000`` or ``2023-11-14 22:13:20`` (UTC); None if neither."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return int(moment.replace(tzinfo=timezone.utc).timestamp())


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


def _query_hash_ok(store: TokenStore, app_id: str, given: str, *fields: str) -> bool:
    secret = store.apps.get(app_id)
    expected = app_hash(app_id, secret if secret is not None else "\0unknown", *fields)
    return hmac.compare_digest(given.lower().encode(), expected.encode()) and secret is not None


async def auth_token(oapi: Oapi, request: Request) -> Response:
    store = oapi.store
    store.requests += 1
    status, stall = store.take_fault()
    if oapi.delay + stall > 0:
        await asyncio.sleep(oapi.delay + stall)
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


async def click_to_call(oapi: Oapi, request: Request) -> Response:
    app_id = authenticate(oapi.store, request)
    if app_id is None:
        return _error(401, "invalid app id or app hash")
    number = request.path_params["number"]
    body = await _json_body(request)
    if body is None:
        return _error(400, "body must be a JSON object")
    user, password = body.get("sipUser"), body.get("sipPassword")
    if not isinstance(user, str) or not isinstance(password, str) or not user:
        return _error(400, "sipUser and sipPassword are required")
    if not number.lstrip("+").replace("*", "").replace("#", "").isdigit():
        return _error(400, "invalid number")
    if oapi.rest.online is not None and user not in oapi.rest.online:
        return _error(400, "device offline: the SIP device is not registered")
    oapi.rest.dials.append((app_id, number, user))
    return JSONResponse({"status": "success"})


async def histories(oapi: Oapi, request: Request) -> Response:
    state = oapi.rest
    q = request.query_params
    app_id, given = q.get("appId", ""), q.get("hash", "")
    fields = [q.get("created_from", ""), q.get("created_to", ""), q.get("limit", ""),
              q.get("page", "")]
    if not _query_hash_ok(oapi.store, app_id, given, *fields):
        return _error(401, "invalid appId or hash")
    state.history_queries.append((fields[0], fields[1], fields[2], fields[3]))
    start, end = parse_date(fields[0]), parse_date(fields[1])
    if start is None or end is None:
        return _error(400, "created_from and created_to are required dates")
    if end < start:
        return _error(400, "created_to is before created_from")
    if end - start > MAX_WINDOW:
        return _error(400, "the time filter is at most 31 days")
    try:
        limit, page = int(fields[2] or 20), int(fields[3] or 1)
    except ValueError:
        return _error(400, "limit and page are numbers")
    if not 1 <= limit <= 100 or page < 1:
        return _error(400, "limit is 1..100 and page >= 1")
    records = state.history.query(start, end, state.app_accounts.get(app_id))
    return JSONResponse(records[(page - 1) * limit: page * limit])


async def play_recording(oapi: Oapi, request: Request) -> Response:
    state = oapi.rest
    q = request.query_params
    app_id, media = q.get("appId", ""), q.get("media", "")
    if not _query_hash_ok(oapi.store, app_id, q.get("hash", ""), media):
        return _error(401, "invalid appId or hash")
    if media not in state.history.recordings():
        return _error(404, "no such recording")
    expires = int(time.time() + state.url_lifetime)
    url = (f"{str(request.base_url).rstrip('/')}/_sim/recordings/{quote(media)}"
           f"?Expires={expires}&Signature={state.sign(media, expires)}")
    return JSONResponse({"media": url})


async def recording_file(oapi: Oapi, request: Request) -> Response:
    media = request.path_params["media"]
    try:
        expires = int(request.query_params.get("Expires", ""))
    except ValueError:
        return _error(403, "unsigned URL")
    signature = request.query_params.get("Signature", "")
    if not hmac.compare_digest(signature.encode(), oapi.rest.sign(media, expires).encode()) \
            or expires < time.time():
        return _error(403, "the URL is not valid or has expired")
    return Response(b"ID3" + media.encode(), media_type="audio/mpeg")


OapiHandler = Callable[[Oapi, Request], Awaitable[Response]]

#: (path, method, handler) of every simulated oapi endpoint.
ROUTES: list[tuple[str, str, OapiHandler]] = [
    (AUTH_TOKEN_PATH, "POST", auth_token),
    (CLICK_TO_CALL_PATH, "POST", click_to_call),
    (HISTORIES_PATH, "GET", histories),
    (PLAY_RECORDING_PATH, "GET", play_recording),
    (RECORDINGS_PATH, "GET", recording_file),
]


def oapi_routes(store: TokenStore, *, delay: float = 0.0,
                rest: OapiRest | None = None) -> list[BaseRoute]:
    """:data:`ROUTES` over ``store`` and ``rest`` (a new :class:`OapiRest` when None); every
    token answer is held ``delay`` seconds first."""
    oapi = Oapi(store, rest if rest is not None else OapiRest(), delay)
    return [Route(path, partial(handler, oapi), methods=[method], name=handler.__name__)
            for path, method, handler in ROUTES]
