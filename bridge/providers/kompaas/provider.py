"""Kompaas verification calls: the start API call, the outcome webhook and the timeout timer.

Pending verifications live in a :class:`~.store.PendingStore`: this process on ``memory://``,
Redis otherwise, so that any instance can take a verification's webhook or its timeout, and a
restarted one still knows what is pending.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.api.endpoints import ApiError, Endpoint
from bridge.auth.tokens import Principal
from bridge.common.redact import register
from bridge.config.providers import KompaasAccount
from bridge.events import channels
from bridge.providers.base import Provider, ProviderContext
from bridge.providers.kompaas import outcome as oc
from bridge.providers.kompaas import schema
from bridge.providers.kompaas.client import confirmation_call
from bridge.providers.kompaas.pending import FINISHED, PENDING, Held, Pending, TableFull
from bridge.providers.kompaas.store import PendingStore, StoreUnavailable
from bridge.providers.kompaas.stores import open_store
from bridge.providers.routes import Route, bind

log = logging.getLogger("bridge.providers.kompaas")

#: Largest webhook body accepted, in bytes (an outcome is a few hundred bytes).
MAX_BODY_BYTES = 65_536
#: Seconds between attempts while the store (Redis) fails.
STORE_RETRY = 2.0
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
        self.store: PendingStore = open_store(context.broker_url, context.prefix, self.tenant,
                                              capacity=max_pending)
        self._wake = asyncio.Event()
        #: The store's last failure (redacted), None while it answers.
        self._store_error: str | None = None
        self.counts = {"started": 0, "start_errors": 0, "emitted": 0, "timed_out": 0,
                       "late": 0, "duplicate": 0, "unknown": 0, "rejected_webhooks": 0,
                       "store_errors": 0}

    # -- Provider ------------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return bind(ROUTES, self, self.tenant)

    async def run(self) -> None:
        """The timer of this account: ends verifications whose deadline has passed.

        On Redis every instance runs it; each expired verification is claimed by one. The store
        is closed when it ends.
        """
        try:
            while True:
                self._wake.clear()  # before reading: a verification added meanwhile wakes us
                try:
                    await self._expire()
                    deadline = await self.store.next_deadline()
                except StoreUnavailable as exc:
                    self._store_failed(exc, "timeout sweep")
                    wait = STORE_RETRY
                else:
                    self._store_ok()
                    wait = self.store.poll_interval
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - self.store.now()))
                try:
                    # Woken early when a verification is added here; the poll interval bounds
                    # waits too (other instances add to a shared store without waking us).
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            await self.store.close()

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self._store_error is None,
                "last_error": self._store_error, "store": self.store.kind,
                "pending": self.store.size, **self.counts}

    # -- store health --------------------------------------------------------------------------

    def _store_failed(self, exc: StoreUnavailable, doing: str) -> None:
        self.counts["store_errors"] += 1
        if self._store_error is None:
            log.error("%s: verification store unreachable (%s): %s", self.name, doing, exc)
        self._store_error = str(exc)

    def _store_ok(self) -> None:
        if self._store_error is not None:
            log.info("%s: verification store reachable again", self.name)
            self._store_error = None

    # -- timer ---------------------------------------------------------------------------------

    async def _expire(self) -> None:
        for entry in await self.store.expire():
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
        try:
            room = await self.store.has_room()
        except StoreUnavailable as exc:
            # Nothing placed yet: a paid call whose outcome could not be tracked is not made.
            self._store_failed(exc, "start")
            raise ApiError(503, "store_unavailable",
                           "callbridge cannot reach its verification store (Redis); no call was "
                           "placed, retry later") from None
        self._store_ok()
        if not room:
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
        entry = Pending(uuid=uuid, phone=phone, started_at=time.time(),
                        deadline=self.store.now() + self.account.verification_timeout,
                        answer=answer)
        held: Held | None = None
        try:
            held = await self.store.add(entry)
        except TableFull:  # filled up while the request was in flight: tracked by nobody
            log.error("%s: verification %s placed but not tracked (table full)", self.name, uuid)
        except StoreUnavailable as exc:
            self._store_failed(exc, "start")
            log.error("%s: verification %s placed but not recorded: no event will follow",
                      self.name, uuid)
            raise ApiError(503, "store_unavailable",
                           f"Kompaas is placing verification call {uuid}, but callbridge could "
                           "not record it (its verification store, Redis, is unreachable): no "
                           "event will follow for it") from None
        if held is not None:  # its outcome overtook this answer
            self._emit(entry, held)
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
        held = Held(q931=q931, final=final, outcome=oc.classify(q931, final))
        try:
            state, entry, earlier = await self.store.complete(uuid, held)
        except StoreUnavailable as exc:
            # A 5xx: the delivery failed, so Kompaas may deliver it again.
            self._store_failed(exc, "webhook")
            raise ApiError(503, "store_unavailable",
                           "callbridge cannot reach its verification store (Redis); deliver "
                           "the webhook again later") from None
        self._store_ok()
        if state == PENDING:
            assert entry is not None
            self._emit(entry, held)
            return JSONResponse({"result": "emitted", "outcome": held.outcome})
        if state == FINISHED:
            kind = "late" if earlier == oc.TIMED_OUT else "duplicate"
            self.counts[kind] += 1
            log.info("%s: %s webhook for verification %s (%s; already %s): not emitted",
                     self.name, kind, uuid, held.outcome, earlier)
        else:
            kind = "unknown"
            self.counts[kind] += 1
            log.warning("%s: webhook for verification %s, which callbridge is not tracking "
                        "(started elsewhere, or its start's answer is still on its way): not "
                        "emitted", self.name, uuid)
        return JSONResponse({"result": kind, "outcome": held.outcome})

    def _emit(self, entry: Pending, held: Held) -> None:
        """Publish the outcome of ``entry``, which this instance alone has just resolved."""
        self.counts["emitted"] += 1
        log.info("%s: verification %s: %s (q931 %d, %s)", self.name, entry.uuid, held.outcome,
                 held.q931, held.final)
        self._context.submit(oc.verification_event(
            tenant=self.tenant, uuid=entry.uuid, outcome=held.outcome, occurred_at=time.time(),
            phone=entry.phone, started_at=entry.started_at, answer=entry.answer,
            q931=held.q931, final=held.final))


async def _start(provider: KompaasProvider, request: Request,
                 principal: Principal | None) -> Response:
    return await provider.start(request)


async def _webhook(provider: KompaasProvider, request: Request,
                   principal: Principal | None) -> Response:
    return await provider.webhook(request)


#: The routes of one ``[[kompaas]]`` block.
ROUTES: tuple[Route[KompaasProvider], ...] = (
    Route("POST", START_PATH, _start, "verifications:write",
          "Start a Kompaas verification call", schema.START, ("kompaas",)),
    Route("POST", WEBHOOK_PATH, _webhook, None, "Kompaas verification outcome webhook",
          schema.WEBHOOK, ("kompaas",)),
)


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
