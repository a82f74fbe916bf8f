"""The live state over HTTP: a tenant's active calls and its extensions' statuses
(docs/api.md, "Live state"), read from the broker's channel snapshots.

Each answer carries the ``epoch`` and ``offset`` of the snapshot it was built from: a client
that subscribes to the channel and resumes from that position misses nothing and sees nothing
twice. The handlers are module functions taking the :class:`~bridge.core.service.Service`
first; :data:`ROUTES` lists them and :func:`state_endpoints` binds them to one service.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.api.endpoints import ApiError, Endpoint
from bridge.auth.tokens import Principal
from bridge.brokers.base import BrokerError, Snapshot
from bridge.calls import view
from bridge.core.service import Service
from bridge.events import channels

SCOPE = "calls:read"
TAGS = ("state",)
#: Seconds a snapshot read may take before the answer is 503.
READ_TIMEOUT = 5.0
#: Seconds the 503 answer asks the caller to wait (``Retry-After``).
RETRY_AFTER = 1
MAX_EXTENSION = 64

_ERR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}


class Unavailable(Exception):
    """The broker did not answer: the caller should retry shortly."""


async def _snapshot(service: Service, channel: str) -> Snapshot:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return await service.broker.snapshot(channel)
    except (BrokerError, TimeoutError):
        raise Unavailable() from None


def _tenant(service: Service, request: Request) -> str:
    tenant: str = request.path_params["tenant"]
    if tenant not in service.tenants():
        raise ApiError(404, "unknown_tenant", "no provider is configured for this tenant")
    return tenant


def _position(tenant: str, snapshot: Snapshot) -> dict[str, Any]:
    return {"tenant": tenant, "epoch": snapshot.epoch, "offset": snapshot.offset}


def _unavailable() -> Response:
    return JSONResponse({"error": {"code": "retry_later", "message":
                                   "the live state could not be read from the broker now; "
                                   "retry shortly"}},
                        status_code=503, headers={"retry-after": str(RETRY_AFTER)})


# -- handlers ---------------------------------------------------------------------------------


async def calls(service: Service, request: Request, principal: Principal | None) -> Response:
    tenant = _tenant(service, request)
    try:
        snapshot = await _snapshot(service, channels.tenant_calls(tenant))
    except Unavailable:
        return _unavailable()
    return JSONResponse({**_position(tenant, snapshot), "calls": view.calls(snapshot.records)})


async def extensions(service: Service, request: Request,
                     principal: Principal | None) -> Response:
    tenant = _tenant(service, request)
    try:
        snapshot = await _snapshot(service, channels.tenant_calls(tenant))
        presence = await _snapshot(service, channels.presence(tenant))
    except Unavailable:
        return _unavailable()
    return JSONResponse({**_position(tenant, snapshot),
                         "extensions": view.extensions(snapshot.records, presence.records)})


async def extension(service: Service, request: Request,
                    principal: Principal | None) -> Response:
    tenant = _tenant(service, request)
    name: str = request.path_params["extension"]
    channel = channels.extension_calls(tenant, name)
    if not 0 < len(name) <= MAX_EXTENSION or not channels.is_valid_channel(channel):
        raise ApiError(400, "invalid_extension",
                       f"extension: 1 to {MAX_EXTENSION} characters")
    try:
        snapshot = await _snapshot(service, channel)
        presence = await _snapshot(service, channels.presence(tenant))
    except Unavailable:
        return _unavailable()
    found = view.extensions(snapshot.records, presence.records, only=name)
    return JSONResponse({**_position(tenant, snapshot), "extension": found[0]})


# -- the routes -------------------------------------------------------------------------------

StateHandler = Callable[[Service, Request, Principal | None], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One state endpoint: an :class:`Endpoint` once bound to a service."""

    path: str
    handler: StateHandler
    summary: str
    #: The OpenAPI operation object (see :attr:`Endpoint.operation`).
    operation: dict[str, Any] = field(default_factory=dict)


_POSITION = ("`epoch` and `offset` are the position of the snapshot on `{channel}`: subscribe "
             "to that channel and resume from them to follow every change after it.")
_ANSWERS = {"404": _ERR, "503": {**_ERR, "description":
                                 "`retry_later`: the broker did not answer; retry shortly"}}

ROUTES = [
    Operation("/api/v1/state/{tenant}/calls", calls, "The tenant's active calls", dict(
        responses={"200": {"description": "`{tenant, epoch, offset, calls}`"}, **_ANSWERS},
        description="The calls in progress, oldest first, as docs/events.md (\"Live state\") "
                    "describes them. " + _POSITION.format(channel="calls:<tenant>"))),
    Operation("/api/v1/state/{tenant}/extensions", extensions,
              "Every extension's status", dict(
                  responses={"200": {"description": "`{tenant, epoch, offset, extensions}`"},
                             **_ANSWERS},
                  description="Each extension with a call in progress or a presence report: "
                              "`status` (`idle`, `ringing`, `talking`, `held`), its `calls` "
                              "and `online` where a provider reports presence. "
                              + _POSITION.format(channel="calls:<tenant>"))),
    Operation("/api/v1/state/{tenant}/extensions/{extension}", extension,
              "One extension's status", dict(
                  responses={"200": {"description": "`{tenant, epoch, offset, extension}`"},
                             "400": _ERR, **_ANSWERS},
                  description="The extension's status (`idle` when nothing is known of it). "
                              + _POSITION.format(channel="calls:<tenant>:<extension>"))),
]


def state_endpoints(service: Service) -> list[Endpoint]:
    """:data:`ROUTES` bound to ``service``."""
    # A deep copy each: the OpenAPI document fills in an operation's responses in place.
    return [Endpoint("GET", op.path, partial(op.handler, service), SCOPE, op.summary,
                     copy.deepcopy(op.operation), TAGS) for op in ROUTES]
