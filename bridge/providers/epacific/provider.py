"""The ePacific provider: the two pollers as one owned task, CDR lookup on the HTTP API."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.api.endpoints import ApiError, Endpoint
from bridge.auth.tokens import Principal
from bridge.common import fields
from bridge.common.redact import register
from bridge.config.providers import EPacificAccount
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.epacific.client import EPacificClient
from bridge.providers.epacific.poller import CdrPoller, PresencePoller, guarded
from bridge.providers.epacific.protocol import MAX_ID, EPacificError, cdr_event
from bridge.providers.routes import Route, bind

#: Default seconds a CDR may appear after its call started (the longest call expected).
SETTLE = 3600.0
LOOKUP_PATH = "/api/v1/epacific/{tenant}/cdrs/{call_id}"


class EPacificProvider(Provider):
    def __init__(self, account: EPacificAccount, context: ProviderContext, *,
                 settle: float = SETTLE) -> None:
        key, secret = account.api_key.get_secret_value(), account.api_secret.get_secret_value()
        register(key)
        register(secret)
        self.account = account
        self.tenant = account.tenant
        self.name = f"epacific/{account.tenant}"
        self.tz = ZoneInfo(account.timezone)
        self.client = EPacificClient(context.http, account.api_url, key, secret)
        self.cdrs = CdrPoller(tenant=self.tenant, client=self.client, cursors=context.cursors,
                              submit=context.submit, tz=self.tz, date_format=account.date_format,
                              limit=account.page_limit, lookback=account.initial_lookback,
                              settle=settle)
        self.presence = PresencePoller(tenant=self.tenant, client=self.client,
                                       cursors=context.cursors, submit=context.submit)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._every(self.account.poll_interval, "CDR poll",
                                          self.cdrs.status, self.cdrs.poll))
            tasks.create_task(self._every(self.account.presence_interval, "ext_reg poll",
                                          self.presence.status, self.presence.poll))

    async def _every(self, interval: float, what: str, status: Any,
                     poll: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await guarded(f"{self.name} {what}", status, poll)
            await asyncio.sleep(status.delay(interval))

    def snapshot(self) -> dict[str, Any]:
        cdr, presence = self.cdrs.status.to_dict(), self.presence.status.to_dict()
        cdr.update(emitted=self.cdrs.emitted, skipped=self.cdrs.skipped)
        presence["online"] = len(self.presence.online) if self.presence.online is not None else None
        presence["skipped"] = self.presence.skipped
        return {"name": self.name, "ok": cdr["ok"] and presence["ok"], "cdr": cdr,
                "presence": presence}

    def endpoints(self) -> list[Endpoint]:
        return bind(ROUTES, self, self.tenant)


async def lookup(provider: EPacificProvider, request: Request,
                 principal: Principal | None) -> Response:
    """The CDRs of the path's call id, as ePacific sent them and as events."""
    try:
        call_id = fields.identifier(request.path_params["call_id"], "call_id",
                                    max_length=MAX_ID)
    except fields.FieldError as exc:
        raise ApiError(400, "bad_call_id", f"{exc} (1..{MAX_ID} printable characters, "
                       "no blanks)") from None
    try:
        records = await provider.client.cdr_by_call_id(call_id)
    except EPacificError as exc:
        status = 502 if exc.kind != "network" else 504
        raise ApiError(status, f"upstream_{exc.kind}", str(exc)) from None
    if not records:
        raise ApiError(404, "not_found", "ePacific has no CDR for this call id")
    cdrs = []
    for record in records:
        try:
            event = cdr_event(provider.tenant, record, provider.tz)[0].to_dict()
        except ValueError:
            event = None
        cdrs.append({"record": record, "event": event})
    return JSONResponse({"tenant": provider.tenant, "call_id": call_id, "cdrs": cdrs})


_EVENT = {"type": ["object", "null"], "description": "the call.completed event of the record "
          "(docs/events.md), null when the record has no readable start"}
LOOKUP_OPERATION: dict[str, Any] = {
    "description": "Asks ePacific (`cdrs/json` with a call id) for the call's CDRs and returns "
                   "them as the provider sent them and as callbridge events.",
    "parameters": [
        {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the tenant of an `[[epacific]]` block"},
        {"name": "call_id", "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1, "maxLength": 128},
         "description": "the provider's call id"},
    ],
    "responses": {
        "200": {"description": "the call's CDRs", "content": {"application/json": {"schema": {
            "type": "object", "required": ["tenant", "call_id", "cdrs"],
            "properties": {
                "tenant": {"type": "string"}, "call_id": {"type": "string"},
                "cdrs": {"type": "array", "items": {"type": "object", "properties": {
                    "record": {"type": "object", "description": "the CDR as ePacific sent it"},
                    "event": _EVENT}}}}}}}},
        "400": {"description": "malformed call id"},
        "404": {"description": "unknown tenant, or no CDR for this call id"},
        "502": {"description": "ePacific refused or answered garbage (code `upstream_auth`, "
                               "`upstream_request`, `upstream_unavailable`, `upstream_garbage`)"},
        "504": {"description": "ePacific unreachable (code `upstream_network`)"},
    },
}

#: The routes of one ``[[epacific]]`` block.
ROUTES: tuple[Route[EPacificProvider], ...] = (
    Route("GET", LOOKUP_PATH, lookup, "calls:read", "Look up an ePacific CDR by call id",
          LOOKUP_OPERATION, ("epacific",)),
)
