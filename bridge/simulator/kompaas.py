"""A fake of Kompaas's paid-methods API: confirmation calls and their outcome webhooks.

It enforces what the provider document (kompaas-flash-call-sk.txt) says and answers in its
shape:

- ``POST /api/protected/api/auth/confirmationCall`` needs ``Authorization: Bearer <token>``
  (401 otherwise) and a JSON body ``{"phone_number": "<digits>"}`` in international format
  without ``+``; it answers ``{"status": "success", "code": 200, "object": {"login_did", "code",
  "account_id", "verification_call_uuid"}}`` with the id shaped ``<12 hex>_<account id>``.
  The document shows no error bodies; this fake answers ``{"status": "error", "code": N,
  "message": ...}`` with 401, 422 (bad number) and any queued fault.
- After ``delay`` seconds the outcome is posted to ``webhook_url`` as the customer's JSON body
  template (``body_template``, placeholders ``{{verification_call_uuid}}``, ``{{q931_status}}``,
  ``{{final_status}}``, ``{{phone_number}}``; a string that is exactly one placeholder becomes
  the typed value). No signature: the document defines none.
- Each call costs :data:`PRICE_EUR`; with ``balance`` set and spent, the call is accepted but
  not placed and the outcome is Q.931 41 (billing problem), as the document describes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("bridge.simulator.kompaas")

CONFIRMATION_PATH = "/api/protected/api/auth/confirmationCall"
PRICE_EUR = 0.0083
_NUMBER = re.compile(r"[1-9][0-9]{7,14}")
DEFAULT_TEMPLATE: dict[str, Any] = {
    "verification_call_uuid": "{{verification_call_uuid}}",
    "q931_status": "{{q931_status}}",
    "final_status": "{{final_status}}",
}


@dataclass
class PlacedCall:
    uuid: str
    phone: str
    #: (q931_status, final_status) to deliver; None: no webhook is ever sent.
    outcome: tuple[int, str | None] | None
    delivered: list[int] = field(default_factory=list)  # HTTP statuses of deliveries


class KompaasFake:
    def __init__(self, token: str, *, account_id: str = "117793", login_did: str = "7777777777",
                 webhook_url: str | None = None, webhook_headers: dict[str, str] | None = None,
                 body_template: Any = None, delay: float = 0.0,
                 balance: float | None = None) -> None:
        self.token = token
        self.account_id = account_id
        self.login_did = login_did
        self.webhook_url = webhook_url
        self.webhook_headers = dict(webhook_headers or {})
        self.body_template = DEFAULT_TEMPLATE if body_template is None else body_template
        self.delay = delay
        self.balance = balance
        #: phone number -> outcome its next calls get; default 16 + ANSWER (answered).
        self.outcomes: dict[str, tuple[int, str | None] | None] = {}
        self.calls: list[PlacedCall] = []
        self._faults: list[tuple[int, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    # -- scripting -----------------------------------------------------------------------------

    def fail_next(self, status: int, body: Any = None) -> None:
        """The next confirmation call answers ``status`` with ``body`` (JSON, or raw bytes)."""
        self._faults.append((status, body))

    def render(self, uuid: str, phone: str, q931: int, final: str | None) -> Any:
        values: dict[str, Any] = {"verification_call_uuid": uuid, "q931_status": q931,
                                  "final_status": final, "phone_number": phone}
        return _fill(self.body_template, values)

    async def deliver(self, call: PlacedCall, q931: int, final: str | None, *,
                      url: str | None = None, headers: dict[str, str] | None = None,
                      ) -> httpx.Response:
        """POST the outcome webhook of ``call`` now, as Kompaas would."""
        target = url or self.webhook_url
        if target is None:
            raise ValueError("no webhook URL configured")
        body = orjson.dumps(self.render(call.uuid, call.phone, q931, final))
        http = self._http or httpx.AsyncClient(trust_env=False, timeout=10)
        try:
            response = await http.post(target, content=body, headers={
                "content-type": "application/json",
                **(self.webhook_headers if headers is None else headers)})
        finally:
            if http is not self._http:
                await http.aclose()
        call.delivered.append(response.status_code)
        return response

    # -- the API -------------------------------------------------------------------------------

    async def _confirmation_call(self, request: Request) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(),
                                                                 self.token.encode()):
            return _error(401, "Unauthenticated.")
        if self._faults:
            status, body = self._faults.pop(0)
            if isinstance(body, bytes):
                return Response(body, status_code=status, media_type="text/plain")
            return JSONResponse(body if body is not None else
                                {"status": "error", "code": status, "message": "Server Error"},
                                status_code=status)
        raw = await request.body()
        try:
            data = orjson.loads(raw) if len(raw) <= 4096 else None
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return _error(400, "The request body must be a JSON object.")
        phone = data.get("phone_number")
        if not isinstance(phone, str) or not _NUMBER.fullmatch(phone):
            return _error(422, "The phone number must be in international format, digits only.")
        uuid = f"{secrets.token_hex(6)}_{self.account_id}"
        outcome = self.outcomes.get(phone, (16, "ANSWER"))
        if self.balance is not None:
            if self.balance < PRICE_EUR:
                outcome = (41, "CANCEL")
            else:
                self.balance -= PRICE_EUR
        call = PlacedCall(uuid=uuid, phone=phone, outcome=outcome)
        self.calls.append(call)
        if outcome is not None and self.webhook_url is not None:
            task = asyncio.create_task(self._deliver_later(call, *outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse({"status": "success", "code": 200, "object": {
            "login_did": self.login_did, "code": self.login_did[-4:],
            "account_id": self.account_id, "verification_call_uuid": uuid}})

    async def _deliver_later(self, call: PlacedCall, q931: int, final: str | None) -> None:
        await asyncio.sleep(self.delay)
        try:
            await self.deliver(call, q931, final)
        except httpx.HTTPError as exc:
            log.warning("kompaas fake: webhook for %s failed: %s", call.uuid, type(exc).__name__)

    def build_app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self._http = httpx.AsyncClient(trust_env=False, timeout=10)
            try:
                yield
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await self._http.aclose()
                self._http = None

        return Starlette(routes=[Route(CONFIRMATION_PATH, self._confirmation_call,
                                       methods=["POST"])], lifespan=lifespan)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "code": status, "message": message},
                        status_code=status)


def _fill(template: Any, values: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, str):
        for name, value in values.items():
            marker = "{{" + name + "}}"
            if template == marker:
                return value
            template = template.replace(marker, "" if value is None else str(value))
    return template
