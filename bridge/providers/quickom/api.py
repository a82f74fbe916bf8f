"""callbridge's HTTP routes for Quickom: the call webhook, call detail and streamed recording
download.

Each Quickom provider declares these routes for its own tenant (:data:`ROUTES`, which the
package's ``create`` gives it); the API router sends each request to the provider of the tenant
in its path.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from bridge.api.endpoints import ApiError
from bridge.auth.tokens import Principal
from bridge.common import fields
from bridge.providers.quickom.calls import MAX_ID
from bridge.providers.quickom.client import QuickomError
from bridge.providers.quickom.provider import QuickomProvider
from bridge.providers.routes import Route

_CHUNK = 64 * 1024
_PASSED_HEADERS = ("content-type", "content-length", "content-disposition")
_INDEX = re.compile(r"[0-9]{1,6}")

_PARTY = {"type": "object", "additionalProperties": True}
_CALL: dict[str, Any] = {
    "type": "object",
    "description": "The call as Quickom describes it (call/detail).",
    "properties": {
        "call_id": {"type": "string"},
        "start_time": {"type": "integer"}, "end_time": {"type": "integer"},
        "customer_info": _PARTY, "callee_info": _PARTY,
        "has_record": {"type": "boolean"}, "record_number": {"type": "integer"},
        "record_files": {"type": "array", "items": {"type": "object", "properties": {
            "record_id": {"type": "string"}, "start_time": {"type": "integer"},
            "end_time": {"type": "integer"}}}},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def webhook_operation() -> dict[str, Any]:
    return {
        "description": "Quickom's call webhook for one tenant. Authenticated by the `Signature` "
                       "header: lowercase hex HMAC-SHA256 under the tenant's signing secret of "
                       "call_id + start_time + end_time + customer_id + member_id (text rules in "
                       "docs/providers/quickom.md). A repeated request_id is answered 200 and "
                       "dropped.",
        "parameters": [{"name": "Signature", "in": "header", "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            **_CALL, "properties": {**_CALL["properties"], "request_id": {"type": "string"}},
            "required": ["call_id"]}}}},
        "responses": {
            "200": {"description": "accepted, or a repeat dropped", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "status": {"type": "string", "enum": ["accepted", "duplicate"]}}}}}},
            "400": _error("malformed JSON, no call_id, or a field breaking its rule "
                          "(docs/providers/quickom.md; the message names the field)"),
            "401": _error("missing or wrong signature"),
            "404": _error("no Quickom account for this tenant"),
            "413": _error("body larger than max_body_bytes"),
        },
    }


def _upstream_errors() -> dict[str, Any]:
    return {"404": _error("unknown tenant, call or recording"),
            "502": _error("Quickom refused callbridge's API key or failed"),
            "503": _error("Quickom is rate limiting"),
            "504": _error("Quickom did not answer in time")}


def _call_id(request: Request) -> str:
    try:
        return fields.identifier(request.path_params["call_id"], "call_id", max_length=MAX_ID)
    except fields.FieldError as exc:
        raise ApiError(400, "invalid_call_id", f"{exc} (1..{MAX_ID} printable characters, "
                       "no blanks)") from None


def _raise(exc: QuickomError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


def _selector(request: Request) -> tuple[str | None, int | None]:
    record_id = request.query_params.get("record_id")
    index_text = request.query_params.get("record_index")
    if record_id is not None:  # record_id wins over record_index, as Quickom documents
        try:
            return fields.identifier(record_id, "record_id", max_length=MAX_ID), None
        except fields.FieldError as exc:
            raise ApiError(400, "invalid_record_id", str(exc)) from None
    if index_text is None:
        return None, None
    if not _INDEX.fullmatch(index_text):
        raise ApiError(400, "invalid_record_index",
                       "record_index must be an integer in 0..999999 (ASCII digits)")
    return None, int(index_text)


async def webhook(provider: QuickomProvider, request: Request,
                  principal: Principal | None) -> Response:
    return await provider.receive(request)


async def detail(provider: QuickomProvider, request: Request,
                 principal: Principal | None) -> Response:
    try:
        return JSONResponse(await provider.client.detail(_call_id(request)))
    except QuickomError as exc:
        raise _raise(exc) from None


async def recording(provider: QuickomProvider, request: Request,
                    principal: Principal | None) -> Response:
    call_id = _call_id(request)
    record_id, record_index = _selector(request)
    try:
        call = await provider.client.detail(call_id)
        files = call.get("record_files")
        files = files if isinstance(files, list) else []
        if call.get("has_record") is not True or not files:
            raise ApiError(404, "no_recording", "the call has no recording")
        if record_id is not None:
            if not any(isinstance(f, dict) and str(f.get("record_id")) == record_id
                       for f in files):
                raise ApiError(404, "recording_not_found", "the call has no such record_id")
        elif record_index is not None and record_index >= len(files):
            raise ApiError(404, "recording_not_found",
                           f"record_index must be below {len(files)}")
        upstream = await provider.client.open_download(
            call_id, record_id=record_id, record_index=record_index)
    except QuickomError as exc:
        raise _raise(exc) from None

    async def body() -> AsyncIterator[bytes]:
        # Chunks pass through as they arrive: a recording is never held in memory whole.
        async for chunk in upstream.aiter_raw(_CHUNK):
            yield chunk

    headers = {k: upstream.headers[k] for k in _PASSED_HEADERS if k in upstream.headers}
    headers.setdefault("content-type", "application/octet-stream")
    if "content-encoding" in upstream.headers:
        headers["content-encoding"] = upstream.headers["content-encoding"]
    return StreamingResponse(body(), headers=headers,
                             background=BackgroundTask(upstream.aclose))


_CALLS = "/api/v1/quickom/{tenant}/calls/{call_id}"
_CALL_PARAM = {"name": "call_id", "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 256}}
_DETAIL_OP: dict[str, Any] = {
    "description": "Proxies Quickom's call/detail for the tenant's account.",
    "parameters": [_CALL_PARAM],
    "responses": {"200": {"description": "the call", "content": {
        "application/json": {"schema": _CALL}}}, **_upstream_errors()},
}
_RECORDING_OP: dict[str, Any] = {
    "description": "Streams Quickom's record/download. `record_id` wins over "
                   "`record_index`; with neither, the first recording.",
    "parameters": [
        _CALL_PARAM,
        {"name": "record_id", "in": "query", "required": False,
         "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID}},
        {"name": "record_index", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": 999_999}},
    ],
    "responses": {
        "200": {"description": "the recording", "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "400": _error("invalid call_id, record_id or record_index"),
        **_upstream_errors(),
    },
}

#: The routes of one ``[[quickom]]`` block.
ROUTES: tuple[Route[QuickomProvider], ...] = (
    Route("POST", "/webhooks/quickom/{tenant}", webhook, None,
          "Receive a Quickom call webhook", webhook_operation(), ("quickom",)),
    Route("GET", _CALLS, detail, "calls:read", "Quickom call detail", _DETAIL_OP,
          ("quickom",)),
    Route("GET", _CALLS + "/recording", recording, "calls:read",
          "Download a Quickom call recording (streamed)", _RECORDING_OP, ("quickom",)),
)
