"""callbridge's HTTP API for AntBuddy: click-to-call and recording URLs.

One set of routes serves every ``[[antbuddy]]`` block; the ``{tenant}`` path parameter (and an
optional ``account_id``) picks the block among the ``directory`` of the provider that serves
the routes (see :func:`bridge.providers.antbuddy.join`). Upstream failures become clear errors:
the provider's click-to-call 400 is ``409 device_offline``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.api.endpoints import ApiError
from bridge.auth.tokens import Principal
from bridge.common import fields
from bridge.common.redact import register
from bridge.providers.antbuddy import rest
from bridge.providers.antbuddy.client import OapiError
from bridge.providers.antbuddy.provider import AntBuddyRest
from bridge.providers.routes import Route

_MAX_BODY = 4096
#: Longest sip_user, sip_password or account_id accepted in a click-to-call body.
MAX_FIELD = 128
_ERR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}
_ACCOUNT_PARAM = {"name": "account_id", "in": "query", "required": False,
                  "schema": {"type": "string"},
                  "description": "The AntBuddy account, when the tenant has several."}
_UPSTREAM = {
    "unauthorized": (502, "upstream_auth", "the provider rejected callbridge's app credentials"),
    "not_found": (404, "not_found", "the provider has no such item"),
    "rejected": (502, "upstream_rejected", "the provider refused the request"),
    "unavailable": (502, "upstream_unavailable", "the provider could not be reached"),
}


def _upstream_error(exc: OapiError) -> ApiError:
    if exc.kind == "device_offline":
        return ApiError(409, "device_offline", "the SIP device is offline (not registered with "
                        "AntBuddy); register the phone and try again")
    status, code, message = _UPSTREAM.get(exc.kind, _UPSTREAM["unavailable"])
    return ApiError(status, code, message)


def _optional_id(value: Any, field: str) -> str | None:
    """None when absent; else a string of 1..128 printable characters without blanks."""
    if value is None:
        return None
    return fields.identifier(value, field, max_length=MAX_FIELD)


def _optional_secret(value: Any, field: str) -> str | None:
    """None when absent; else a string of 1..128 printable characters (a password may hold
    spaces, kept as given). The error never shows the value."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise fields.FieldError(field, "must be a string")
    if not value:
        raise fields.FieldError(field, "is empty")
    if len(value) > MAX_FIELD:
        raise fields.FieldError(field, f"is longer than {MAX_FIELD} characters")
    if not value.isprintable():
        raise fields.FieldError(field, "must not contain control characters")
    return value


def _pick(owner: AntBuddyRest, request: Request, account_id: str | None) -> AntBuddyRest:
    """The provider of the path's tenant (and ``account_id``, when given) among ``owner``'s
    directory, read per request: a reload re-links the directory."""
    tenant = request.path_params["tenant"]
    choices = [p for p in owner.directory if p.tenant == tenant
               and (account_id is None or p.account_id == account_id)]
    if not choices:
        raise ApiError(404, "unknown_tenant", "no AntBuddy account for this tenant")
    return choices[0]


async def dial(owner: AntBuddyRest, request: Request, principal: Principal | None) -> Response:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ApiError(413, "too_large", "the request body is too large")
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    number, sip_user, sip_password = (body.get("number"), body.get("sip_user"),
                                      body.get("sip_password"))
    account_id = body.get("account_id") or request.query_params.get("account_id")
    if not isinstance(number, str) or not rest.NUMBER_RE.fullmatch(number):
        raise ApiError(422, "invalid_number",
                       "number: 2 to 20 digits (and * #), optionally after a +")
    try:
        # Checked before use or logging; messages name the field, never its value.
        sip_user, sip_password, account_id = (
            _optional_id(sip_user, "sip_user"), _optional_secret(sip_password, "sip_password"),
            _optional_id(account_id, "account_id"))
    except fields.FieldError as exc:
        raise ApiError(422, "invalid_body", str(exc)) from None
    register(sip_password)
    provider = _pick(owner, request, account_id)
    if sip_user is None and sip_password is None:
        sip_user = provider.account.sip_user
        secret = provider.account.sip_password
        sip_password = secret.get_secret_value() if secret is not None else None
    if not sip_user or not sip_password:
        raise ApiError(422, "no_device", "give sip_user and sip_password (none configured)")
    try:
        await provider.client.click_to_call(number, sip_user, sip_password)
    except OapiError as exc:
        raise _upstream_error(exc) from None
    return JSONResponse({"status": "dialing", "number": number, "sip_user": sip_user,
                         "account_id": provider.account_id})


async def recording(owner: AntBuddyRest, request: Request,
                    principal: Principal | None) -> Response:
    media = request.path_params["media"]
    if not rest.MEDIA_RE.fullmatch(media) or ".." in media:
        raise ApiError(422, "invalid_media", "media: a recording file name")
    provider = _pick(owner, request, request.query_params.get("account_id"))
    try:
        url = await provider.client.recording_url(media)
    except OapiError as exc:
        raise _upstream_error(exc) from None
    return JSONResponse({"media": media, "url": url})


_DIAL_OP: dict[str, Any] = {
    "description": "Rings the SIP device (configured, or given in the body), then "
                   "connects it to `number` (AntBuddy click-to-call).",
    "parameters": [_ACCOUNT_PARAM],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["number"], "additionalProperties": False,
        "properties": {
            "number": {"type": "string", "pattern": rest.NUMBER_RE.pattern},
            "sip_user": {"type": "string", "minLength": 1, "maxLength": MAX_FIELD},
            "sip_password": {"type": "string", "minLength": 1, "maxLength": MAX_FIELD},
            "account_id": {"type": "string", "minLength": 1, "maxLength": MAX_FIELD}}}}}},
    "responses": {
        "200": {"description": "the device is ringing", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["dialing"]},
                "number": {"type": "string"}, "sip_user": {"type": "string"},
                "account_id": {"type": "string"}}}}}},
        "400": _ERR, "404": _ERR, "409": {**_ERR, "description": "device offline"},
        "413": _ERR, "422": _ERR, "502": _ERR},
}
_RECORDING_OP: dict[str, Any] = {
    "description": "A signed, expiring URL of a recording file named by a call record "
                   "(`detail.recording`), from AntBuddy's play_recording.",
    "parameters": [_ACCOUNT_PARAM],
    "responses": {
        "200": {"description": "the URL", "content": {"application/json": {"schema": {
            "type": "object", "required": ["media", "url"], "properties": {
                "media": {"type": "string"},
                "url": {"type": "string", "format": "uri"}}}}}},
        "404": _ERR, "422": _ERR, "502": _ERR},
}
_BASE = "/api/v1/antbuddy/{tenant}"

#: The routes of one tenant, served by its first provider for all of its accounts.
ROUTES: tuple[Route[AntBuddyRest], ...] = (
    Route("POST", f"{_BASE}/calls", dial, "calls:dial", "Click-to-call", _DIAL_OP,
          ("antbuddy",)),
    Route("GET", f"{_BASE}/recordings/{{media}}", recording, "calls:read", "Recording URL",
          _RECORDING_OP, ("antbuddy",)),
)
