"""Kompaas verification calls: the start API call, the outcome webhook and the timeout timer."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge import channels
from bridge.api.endpoints import ApiError, Endpoint, Principal
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.kompaas import outcome as oc
from bridge.providers.kompaas import schema
from bridge.providers.kompaas.client import confirmation_call
from bridge.providers.kompaas.pending import (
    FINISHED,
    PENDING,
    Pending,
    PendingTable,
    TableFull,
)
from bridge.providers.settings import KompaasAccount
from bridge.redact import register

log = logging.getLogger("bridge.providers.kompaas")

#: Largest webhook body accepted, in bytes (an outcome is a few hundred bytes).
MAX_BODY_BYTES = 65_536
#: Outcomes of unknown verification ids kept in case their start's answer is still in flight.
MAX_ORPHANS = 1024
SECRET_HEADER = "x-callbridge-secret"
START_PATH = "/api/v1/kompaas/{tenant}/verifications"
WEBHOOK_PATH = "/webhooks/kompaas/{tenant}"


class KompaasProvider(Provider):
    def __init__(self, account: KompaasAccount, context: ProviderContext, *,
                 max_pending: int = 10_000) -> None:
        self.account = account
        self.tenant = account.tenant
        self.name = f"kompaas/{account.tenant}"
        self._context = context
        self._token = account.api_token.get_secret_value()
        self._secret = account.webhook_secret.get_secret_value().encode()
        register(self._token)
        register(account.webhook_secret.get_secret_value())
        self._pending = PendingTable(capacity=max_pending)
        self._wake = asyncio.Event()
        #: Outcomes of unknown ids, newest last: an outcome may overtake the start's answer.
        self._orphans: OrderedDict[str, tuple[int, str | None, str]] = OrderedDict()
        self.counts = {"started": 0, "start_errors": 0, "emitted": 0, "timed_out": 0,
                       "late": 0, "duplicate": 0, "unknown": 0, "rejected_webhooks": 0}

    # -- Provider ------------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        async def start(request: Request, principal: Principal | None) -> Response:
            return await self.start(request)

        async def webhook(request: Request, principal: Principal | None) -> Response:
            return await self.webhook(request)

        return [
            Endpoint("POST", START_PATH, start, "verifications:write",
                     "Start a Kompaas verification call", schema.START, ("kompaas",),
                     tenant=self.tenant),
            Endpoint("POST", WEBHOOK_PATH, webhook, None,
                     "Kompaas verification outcome webhook", schema.WEBHOOK, ("kompaas",),
                     tenant=self.tenant),
        ]

    async def run(self) -> None:
        """The one timer of this account: ends verifications whose deadline has passed."""
        loop = asyncio.get_running_loop()
        while True:
            self._expire(loop.time())
            deadline = self._pending.next_deadline()
            self._wake.clear()
            delay = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                # Woken early when a verification is added; a safety net bounds idle waits too.
                async with asyncio.timeout(min(delay, 60.0) if delay is not None else 60.0):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "ok": True, "pending": len(self._pending), **self.counts}

    # -- timer ---------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for entry in self._pending.expire(now, oc.TIMED_OUT):
            self.counts["timed_out"] += 1
            log.info("%s: verification %s timed out after %gs", self.name, entry.uuid,
                     self.account.verification_timeout)
            self._context.submit(oc.verification_event(
                tenant=self.tenant, uuid=entry.uuid, outcome=oc.TIMED_OUT,
                occurred_at=time.time(), phone=entry.phone, started_at=entry.started_at,
                answer=entry.answer, timeout=self.account.verification_timeout))

    # -- start a verification ------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        body = await _read_json(request, 4096)
        if not isinstance(body, dict) or "phone_number" not in body:
            raise ApiError(400, "invalid_body", 'the body must be {"phone_number": "<digits>"}')
        unexpected = sorted(set(body) - {"phone_number"})
        if unexpected:
            raise ApiError(400, "invalid_body", f"unexpected field(s): {', '.join(unexpected)}")
        try:
            phone = oc.validate_phone(body["phone_number"])
        except ValueError as exc:
            raise ApiError(400, "invalid_phone_number", str(exc)) from None
        if not self._pending.has_room():
            # Do not place a paid call whose outcome could not be tracked.
            raise ApiError(503, "too_many_pending",
                           "too many verifications are waiting for an outcome; retry later")
        try:
            answer = await confirmation_call(self._context.http, self.account.api_url,
                                             self._token, phone)
        except ApiError:
            self.counts["start_errors"] += 1
            raise
        uuid = answer["verification_call_uuid"]
        loop = asyncio.get_running_loop()
        entry = Pending(uuid=uuid, phone=phone, started_at=time.time(),
                        deadline=loop.time() + self.account.verification_timeout, answer=answer)
        try:
            self._pending.add(entry)
        except TableFull:  # filled up while the request was in flight: tracked by nobody
            log.error("%s: verification %s placed but not tracked (table full)", self.name, uuid)
        orphan = self._orphans.pop(uuid, None)
        if orphan is not None:
            self._complete(uuid, *orphan)
        self._wake.set()
        self.counts["started"] += 1
        log.info("%s: verification %s started", self.name, uuid)
        return JSONResponse({
            "verification_call_uuid": uuid, "phone_number": phone,
            "login_did": answer.get("login_did"), "code": answer.get("code"),
            "account_id": answer.get("account_id"),
            "channel": channels.verifications(self.tenant),
            "timeout_seconds": self.account.verification_timeout,
        }, status_code=201)

    # -- outcome webhook -----------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER) or request.query_params.get("secret")
        if not given:
            self.counts["rejected_webhooks"] += 1
            raise ApiError(401, "missing_secret", "the webhook secret is required (header "
                                                  "X-Callbridge-Secret or query parameter secret)")
        if not hmac.compare_digest(given.encode(), self._secret):
            self.counts["rejected_webhooks"] += 1
            log.warning("%s: webhook with a wrong secret rejected", self.name)
            raise ApiError(401, "invalid_secret", "the webhook secret is wrong")
        body = await _read_json(request, MAX_BODY_BYTES)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", "the body must be a JSON object")
        a = self.account
        fields: dict[str, Any] = {}
        for name, path, parse in (("uuid", a.field_uuid, oc.parse_uuid),
                                  ("q931", a.field_q931, oc.parse_q931),
                                  ("final", a.field_final, oc.parse_final)):
            try:
                fields[name] = parse(oc.extract(body, path))
            except ValueError as exc:
                raise ApiError(422, "invalid_field", f"{path!r} {exc}") from None
        uuid, q931, final = fields["uuid"], fields["q931"], fields["final"]
        result = oc.classify(q931, final)
        kind = self._complete(uuid, q931, final, result)
        return JSONResponse({"result": kind, "outcome": result})

    def _complete(self, uuid: str, q931: int, final: str | None, result: str) -> str:
        """Resolve ``uuid``; emit its event when it was pending. Returns the webhook result."""
        state, entry, earlier = self._pending.complete(uuid, result)
        if state == PENDING:
            assert entry is not None
            self.counts["emitted"] += 1
            log.info("%s: verification %s: %s (q931 %d, %s)", self.name, uuid, result, q931,
                     final)
            self._context.submit(oc.verification_event(
                tenant=self.tenant, uuid=uuid, outcome=result, occurred_at=time.time(),
                phone=entry.phone, started_at=entry.started_at, answer=entry.answer,
                q931=q931, final=final))
            return "emitted"
        if state == FINISHED:
            kind = "late" if earlier == oc.TIMED_OUT else "duplicate"
            self.counts[kind] += 1
            log.info("%s: %s webhook for verification %s (%s; already %s): not emitted",
                     self.name, kind, uuid, result, earlier)
            return kind
        self.counts["unknown"] += 1
        self._orphans[uuid] = (q931, final, result)
        while len(self._orphans) > MAX_ORPHANS:
            self._orphans.popitem(last=False)
        log.warning("%s: webhook for verification %s, which callbridge is not tracking "
                    "(started elsewhere or before a restart): not emitted", self.name, uuid)
        return "unknown"


async def _read_json(request: Request, limit: int) -> Any:
    """The JSON body, read up to ``limit`` bytes (413 past it, 400 when not JSON)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
