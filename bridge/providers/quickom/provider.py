"""The Quickom provider of one tenant: webhook receiver, backfill poller, API endpoints.

Several ``[[quickom]]`` blocks declare the same paths (they carry ``{tenant}``); the API router
hands each request to the provider of the tenant in its path. The routes themselves are in
:mod:`.api`, given to the provider by the package's ``create``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.api.endpoints import ApiError, Endpoint
from bridge.brokers.base import BrokerError
from bridge.common import fields
from bridge.common.backoff import backoff
from bridge.common.logs import Every
from bridge.common.recent import RecentWindow
from bridge.common.redact import redact, register
from bridge.config.providers import QuickomAccount
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.quickom import signature
from bridge.providers.quickom.backfill import Backfill, SeenCalls
from bridge.providers.quickom.calls import MAX_ID, InvalidCall, call_event
from bridge.providers.quickom.client import QuickomClient, QuickomError
from bridge.providers.quickom.webhook import read_body
from bridge.providers.routes import Route, bind

log = logging.getLogger("bridge.providers.quickom")

#: Call ids remembered (and saved in the cursor) to keep backfill from repeating calls.
SEEN_CALLS = 2000
#: Seconds between two warnings about refused webhooks.
REJECT_LOG_INTERVAL = 60.0


class QuickomProvider(Provider):
    def __init__(self, account: QuickomAccount, context: ProviderContext, *,
                 routes: Sequence[Route[QuickomProvider]] = ()) -> None:
        """``routes``: the tenant's webhook and API routes (:data:`.api.ROUTES`, given by the
        package's ``create``)."""
        self.account = account
        self.tenant = account.tenant
        self.name = f"quickom/{account.tenant}"
        self._context = context
        self._secret = account.signing_secret.get_secret_value()
        register(self._secret)
        register(account.api_key.get_secret_value())
        self.client = QuickomClient(context.http, account.api_url,
                                    account.api_key.get_secret_value())
        self.requests = RecentWindow(account.request_id_window)
        self.seen = SeenCalls(SEEN_CALLS)
        self.backfill = Backfill(tenant=self.tenant, client=self.client, cursors=context.cursors,
                                 submit=context.submit, limit=account.backfill_limit,
                                 seen=self.seen)
        self.counts = {"webhooks": 0, "repeats": 0, "rejected": 0, "backfilled": 0}
        self._ok = True
        self._last_error: str | None = None
        self._rejected_log = Every(REJECT_LOG_INTERVAL)
        self.routes = routes

    # -- webhook ---------------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return bind(self.routes, self, self.tenant)

    def _rejected(self, request: Request, why: str) -> None:
        """Count a refused webhook; warn at most every REJECT_LOG_INTERVAL seconds (a wrong
        signing secret refuses every delivery; a flood of forged ones must not flood the log)."""
        self.counts["rejected"] += 1
        if self._rejected_log.due():
            peer = request.client.host if request.client else "unknown"
            log.warning("quickom/%s: webhook from %s refused: %s (%d refused so far; check "
                        "signing_secret)", self.tenant, peer, why, self.counts["rejected"])

    async def receive(self, request: Request) -> Response:
        """Verify, de-duplicate and hand over one webhook; only fast work happens here."""
        header = request.headers.get("signature")
        if not header:
            self._rejected(request, "no Signature header")
            raise ApiError(401, "missing_signature", "the Signature header is required")
        raw = await read_body(request, self.account.max_body_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "malformed_json", "the body must be a JSON object")
        if not signature.verify(self._secret, body, header):
            self._rejected(request, "the Signature header does not match")
            raise ApiError(401, "invalid_signature", "the Signature header does not match")
        try:
            event = call_event(body, self.tenant)
        except InvalidCall as exc:
            raise ApiError(400, "invalid_call", str(exc)) from None
        request_id = body.get("request_id")
        if request_id is not None and request_id != "":
            try:
                request_id = fields.identifier(request_id, "request_id", max_length=MAX_ID,
                                               numbers=True)
            except fields.FieldError as exc:
                raise ApiError(400, "invalid_call", str(exc)) from None
        else:
            request_id = None
        if request_id is not None and not self.requests.add(request_id):
            self.counts["repeats"] += 1
            return JSONResponse({"status": "duplicate"})
        self.counts["webhooks"] += 1
        self._context.submit(event)
        assert event.call_id is not None
        self.seen.add(event.call_id)
        return JSONResponse({"status": "accepted"})

    # -- backfill --------------------------------------------------------------------------------

    async def run(self) -> None:
        interval = self.account.backfill_interval
        delays = backoff(1.0, 2.0, max(1.0, min(interval or 300.0, 300.0)))
        while True:
            try:
                self.counts["backfilled"] += await self.backfill.poll()
                self._ok, self._last_error = True, None
                delays = backoff(1.0, 2.0, max(1.0, min(interval or 300.0, 300.0)))
                if interval == 0:
                    await asyncio.Event().wait()  # only at start
                await asyncio.sleep(interval)
            except (QuickomError, BrokerError) as exc:
                self._ok = False
                self._last_error = redact(getattr(exc, "message", None) or str(exc))
                log.warning("%s: backfill failed: %s", self.name, self._last_error)
                await asyncio.sleep(next(delays))

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self._ok, "error": self._last_error,
                "counts": {**self.counts, "backfill_skipped": self.backfill.skipped},
                "cursor_calls": len(self.seen)}
