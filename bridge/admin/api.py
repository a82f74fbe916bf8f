"""The ``/admin`` HTTP API: streams, clients, token revocation, reload (docs/admin.md).

Every endpoint needs an API token with the ``admin`` scope. Streams are this instance's: a
stream is reconnected by the instance holding its lease. Clients are listed by the instance
holding them, or by every instance asked at once (``instances=all``); a disconnect and a
revocation reach every instance sharing the Redis.

:class:`AdminApi` also owns the mounting of the whole HTTP API (admin and providers'
endpoints), since a reload changes the providers and so the routes. The handlers are module
functions taking the :class:`AdminApi` first; :data:`ROUTES` lists them and
:func:`admin_endpoints` binds them to one instance.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from bridge.admin.reloader import Reloader, ReloadError, file_loader
from bridge.api.endpoints import ApiError, Endpoint
from bridge.api.mount import ApiMount
from bridge.auth.tokens import Principal
from bridge.cluster.clients import MAX_LISTED, MAX_SESSION, Unavailable
from bridge.cluster.revocations import MAX_TOKEN_ID
from bridge.common.redact import redact
from bridge.config.model import Config
from bridge.core.service import Service
from bridge.downstream.route import Route
from bridge.upstream.stream import State

SCOPE = "admin"
TAGS = ("admin",)
#: Clients listed at most per request (``?limit=``).
MAX_LIMIT = 100_000
DEFAULT_LIMIT = 1000
#: The latest revocation expiry accepted in a request, in seconds from now.
MAX_REVOKE_SECONDS = 366 * 86400.0
_MAX_BODY = 4096

_ERR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


class AdminApi:
    """The admin endpoints of one app, its reloader, and the mounted API routes."""

    def __init__(self, service: Service, config: Config, endpoints: list[Endpoint], *,
                 config_path: str | None = None) -> None:
        """``endpoints``: the list ``/openapi.json`` describes, kept equal to what is mounted."""
        self.service = service
        self.config = config
        self.endpoints = endpoints
        self.route: Route | None = None
        self.reloader = Reloader(service, file_loader(config_path), on_change=self.mount)
        self._mount: ApiMount | None = None

    def attach(self, routes: list[BaseRoute], route: Route | None) -> None:
        """Mount into ``routes`` (the app router's list); ``route``: the ``/ws`` route whose
        sessions are listed (None: no clients to list)."""
        self.route = route
        if route is not None:  # the other instances' asks about the clients held here
            self.service.clients.serve(route.disconnect, self.listing)
        self._mount = ApiMount(routes, self.endpoints,
                               jwt_secret=self.config.auth.jwt_secret.get_secret_value(),
                               leeway=self.config.auth.leeway)

    def listing(self, channel: str | None, limit: int) -> dict[str, Any]:
        """This instance's clients (those of ``channel`` when given), oldest first, at most
        ``limit`` of them, and how many there are."""
        sessions = list(self.route.sessions.values()) if self.route is not None else []
        if channel is not None:
            sessions = [s for s in sessions if channel in s.channels]
        listed = []
        for session in sessions[:limit]:
            grant = session.grant
            client = session.ws.scope.get("client")
            listed.append({
                "session": session.session,
                "sub": grant.sub if grant else None,
                "jti": grant.token_id if grant else None,
                "token_expires_at": grant.expires_at if grant else None,
                "remote": client[0] if client else None,
                "connected_since": round(session.since, 3),
                "channels": sorted(session.channels),
            })
        return {"instance_id": self.service.leases.instance_id, "total": len(sessions),
                "clients": listed}

    def mount(self) -> None:
        """(Re)mount the admin endpoints and every running provider's."""
        assert self._mount is not None, "attach() first"
        provided = [e for p in self.service.providers for e in p.endpoints()]
        self._mount.mount([*admin_endpoints(self), *provided])

    async def close(self) -> None:
        await self.reloader.close()


# -- handlers ---------------------------------------------------------------------------------


async def streams(admin: AdminApi, request: Request, principal: Principal | None) -> Response:
    svc = admin.service
    listed = []
    for stream, runner in zip(list(svc.streams), list(svc.runners)):
        snap = stream.snapshot()
        lease = runner.snapshot()
        listed.append({
            "name": snap["name"], "provider": "antbuddy", "tenant": snap["tenant"],
            "account_id": snap["account_id"],
            "state": snap["state"] if runner.held else "standby",
            "since": snap["since"], "reconnects": snap["reconnects"],
            "rotations": snap["rotations"], "dialect": snap["dialect"],
            "connections": snap["connections"],
            "token_expires_at": snap["token_expires_at"], "token_state": snap["token_state"],
            "last_error": snap["last_error"],
            "lease": {"state": lease["state"], "held_by": lease["held_by"]},
        })
    return _json({"instance_id": svc.leases.instance_id, "streams": listed,
                  "providers": [p.snapshot() for p in list(svc.providers)]})


async def reconnect(admin: AdminApi, request: Request, principal: Principal | None) -> Response:
    name = request.path_params["name"]
    svc = admin.service
    found = next(((s, r) for s, r in zip(svc.streams, svc.runners) if s.name == name), None)
    if found is None:
        raise ApiError(404, "not_found", "no such stream")
    stream, runner = found
    if not runner.held:
        holder = runner.held_by or "no instance"
        raise ApiError(409, "not_held", f"the stream runs on {holder}, not on "
                       f"{svc.leases.instance_id}: send the request there")
    if stream.status.state is not State.SUBSCRIBED:
        raise ApiError(409, "not_connected", "the stream is not connected (state "
                       f"{stream.status.state.value}); it is already retrying")
    stream.request_reconnect()
    return _json({"name": name, "reconnecting": True,
                  "reconnects": stream.status.reconnects}, 202)


async def clients(admin: AdminApi, request: Request, principal: Principal | None) -> Response:
    channel = request.query_params.get("channel")
    everywhere = request.query_params.get("instances", "this")
    if everywhere not in ("this", "all"):
        raise ApiError(400, "bad_request", "instances: this or all")
    most = MAX_LISTED if everywhere == "all" else MAX_LIMIT
    try:
        limit = int(request.query_params.get("limit", min(DEFAULT_LIMIT, most)))
    except ValueError:
        limit = 0
    if not 1 <= limit <= most:
        raise ApiError(400, "bad_request", f"limit: an integer in 1..{most}"
                       + (" with instances=all" if everywhere == "all" else ""))
    here = admin.listing(channel, limit)
    if everywhere == "this":
        return _json(here)
    try:
        others, asked = await admin.service.clients.listings(channel, limit)
    except Unavailable as exc:
        raise ApiError(503, "unavailable", "the other instances could not be asked for their "
                       f"clients (retry): {exc}") from None
    listings = [here, *sorted(others, key=lambda listing: listing["instance_id"])]
    return _json({"total": sum(listing["total"] for listing in listings),
                  "instances": listings, "asked": asked, "answered": len(others)})


async def disconnect(admin: AdminApi, request: Request, principal: Principal | None) -> Response:
    session = request.path_params["session"]
    here = admin.service.leases.instance_id
    if admin.route is not None and admin.route.disconnect(session):
        return _json({"session": session, "closed": True, "code": 4010, "instance_id": here})
    if not 0 < len(session) <= MAX_SESSION:
        raise ApiError(404, "not_found", "no such client")
    try:
        holder = await admin.service.clients.disconnect(session)
    except Unavailable as exc:
        raise ApiError(503, "unavailable", "the other instances could not be asked for the "
                       f"client (retry): {exc}") from None
    if holder is None:
        raise ApiError(404, "not_found", f"no such client on this instance ({here}) nor on "
                       f"any other that answered within {admin.service.clients.wait:g}s")
    return _json({"session": session, "closed": True, "code": 4010, "instance_id": holder})


async def revoke(admin: AdminApi, request: Request, principal: Principal | None) -> Response:
    jti = request.path_params["jti"]
    if not 0 < len(jti) <= MAX_TOKEN_ID:
        raise ApiError(400, "bad_request", f"a token id has 1 to {MAX_TOKEN_ID} characters")
    now = time.time()
    until, basis = await _revoke_until(admin, request, jti, now)
    open_here = len(admin.route.by_token.get(jti, ())) if admin.route is not None else 0
    try:
        await admin.service.revocations.revoke(jti, until)
    except (RedisError, OSError, TimeoutError) as exc:
        raise ApiError(503, "unavailable", "the revocation store (Redis) did not answer: "
                       + redact(str(exc) or type(exc).__name__)) from None
    return _json({"jti": jti, "revoked_until": round(until, 3), "basis": basis,
                  "closed_here": open_here})


async def _revoke_until(admin: AdminApi, request: Request, jti: str,
                        now: float) -> tuple[float, str]:
    """Until when ``jti`` stays revoked, and why: ``request``, ``token_expiry`` or
    ``default``. Raises :class:`ApiError` for a body that is not a valid request."""
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ApiError(413, "too_large", "the request body is too large")
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    requested = body.get("expires_at")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, (int, float)) \
                or not math.isfinite(requested) \
                or not now < requested <= now + MAX_REVOKE_SECONDS:
            raise ApiError(400, "invalid_body", "expires_at: a unix time in the future, "
                           "at most a year ahead")
        return float(requested), "request"
    auth = admin.config.auth
    # A connection here knows the token's expiry: past it (and the leeway), the token is
    # refused anyway, so the revocation need not outlive it.
    known = [s.grant.expires_at for s in (admin.route.sessions.values() if admin.route else ())
             if s.grant is not None and s.grant.token_id == jti]
    if known:
        return max(known) + auth.leeway, "token_expiry"
    return now + auth.revocation_ttl, "default"


async def reload(admin: AdminApi, request: Request, principal: Principal | None) -> Response:
    try:
        changes = await admin.reloader.reload()
    except ReloadError as exc:
        status = 400 if exc.code == "invalid_config" else 409
        raise ApiError(status, exc.code, exc.message) from None
    return _json({"instance_id": admin.service.leases.instance_id, **changes.as_dict()})


# -- the routes -------------------------------------------------------------------------------

AdminHandler = Callable[[AdminApi, Request, Principal | None], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One admin endpoint: an :class:`Endpoint` once bound to an :class:`AdminApi`."""

    method: str
    path: str
    handler: AdminHandler
    summary: str
    #: The OpenAPI operation object (see :attr:`Endpoint.operation`).
    operation: dict[str, Any] = field(default_factory=dict)


_NAME_PARAM = [{"name": "name", "in": "path", "required": True,
                "schema": {"type": "string"},
                "description": "The stream name as listed, slashes included "
                               "(e.g. antbuddy/acme/acct-1); written as is or "
                               "percent-encoded"}]

ROUTES = [
    Operation("GET", "/admin/streams", streams, "List the upstream streams", dict(
        description="Every configured stream with its state on this instance and its "
                    "lease; also every provider's state.")),
    Operation("POST", "/admin/streams/{name:path}/reconnect", reconnect,
              "Force one upstream stream to reconnect", dict(
                  parameters=_NAME_PARAM,
                  responses={"202": {"description": "reconnecting"}, "404": _ERR, "409": _ERR},
                  description="Drops the stream's upstream connection and reconnects at once. "
                              "Only the instance holding the stream's lease can: elsewhere the "
                              "answer is 409 `not_held`, naming the holder.")),
    Operation("GET", "/admin/clients", clients, "List the connected websocket clients", dict(
        parameters=[
            {"name": "channel", "in": "query", "required": False,
             "schema": {"type": "string"},
             "description": "Only the clients subscribed to this channel"},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT},
             "description": f"At most this many per instance ({MAX_LISTED} at most with "
                            "instances=all)"},
            {"name": "instances", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["this", "all"], "default": "this"},
             "description": "all: every instance on the same Redis, asked at once"}],
        responses={"200": {"description": "the clients"}, "400": _ERR, "503": _ERR},
        description="Clients of the instance that takes the request; with instances=all, "
                    "of every instance that answers within 1 s, one list each.")),
    Operation("POST", "/admin/clients/{session}/disconnect", disconnect,
              "Disconnect one websocket client", dict(
                  responses={"200": {"description": "closed with 4010"}, "404": _ERR,
                             "503": _ERR},
                  description="Closes the connection with code 4010, on whichever instance "
                              "holds it; the client may reconnect (revoke its token to keep it "
                              "out). 404 when no instance holds the session; 503 when the "
                              "other instances cannot be asked (retry).")),
    Operation("POST", "/admin/tokens/{jti}/revoke", revoke, "Revoke a client token", dict(
        requestBody={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"expires_at": {
                "type": "number", "description": "Unix time until which the token "
                "stays refused (default: its expiry when a connection here uses it, "
                "else now + [auth] revocation_ttl)"}}}}}},
        responses={"200": {"description": "revoked"}, "400": _ERR, "503": _ERR},
        description="Every instance sharing the Redis closes the connections using the "
                    "token with 4004 and refuses it at auth.")),
    Operation("POST", "/admin/reload", reload,
              "Reload the account blocks from the configuration file", dict(
                  responses={"200": {"description": "what changed"}, "400": _ERR,
                             "409": _ERR},
                  description="Applies added, removed and changed account blocks; unchanged "
                              "ones keep running untouched. Other sections need a restart "
                              "and are listed in `restart_needed`. 400 `invalid_config`: the "
                              "file does not validate and nothing changed.")),
]


def admin_endpoints(admin: AdminApi) -> list[Endpoint]:
    """:data:`ROUTES` bound to ``admin``."""
    # A deep copy each: the OpenAPI document fills in an operation's responses in place.
    return [Endpoint(op.method, op.path, partial(op.handler, admin), SCOPE, op.summary,
                     copy.deepcopy(op.operation), TAGS) for op in ROUTES]
