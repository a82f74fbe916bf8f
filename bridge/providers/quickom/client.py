"""Quickom's enterprise API (``/api/enterprise/call/...``) over the shared httpx client.

Errors come back as :class:`QuickomError` with a status to show callbridge's own caller and a
message that never carries the API key (it is registered with :mod:`bridge.common.redact`).
"""

from __future__ import annotations

from typing import Any

import httpx

from bridge.common.redact import redact

_DETAIL = "/api/enterprise/call/detail"
_NEW = "/api/enterprise/call/new"
_DOWNLOAD = "/api/enterprise/call/record/download"
_ERROR_TEXT = 200


class QuickomError(Exception):
    """A failed API call: ``status`` and ``code`` for callbridge's caller, a safe message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        text = body.get("error") or body.get("message") if isinstance(body, dict) else None
    except ValueError:
        text = None
    return redact(str(text or response.reason_phrase or "")[:_ERROR_TEXT])


def error_for(response: httpx.Response, what: str) -> QuickomError:
    """The error of a non-200 answer (its body already read)."""
    status, text = response.status_code, _error_text(response)
    if status in (401, 403):
        return QuickomError(502, "upstream_unauthorized",
                            f"Quickom rejected callbridge's API key ({status})")
    if status == 404:
        return QuickomError(404, "not_found", f"Quickom knows no such {what}: {text}")
    if status == 429:
        return QuickomError(503, "upstream_busy", "Quickom is rate limiting; try again later")
    if 400 <= status < 500:
        return QuickomError(502, "upstream_rejected", f"Quickom refused the request ({status}): {text}")
    return QuickomError(502, "upstream_error", f"Quickom failed ({status})")


class QuickomClient:
    def __init__(self, http: httpx.AsyncClient, api_url: str, api_key: str) -> None:
        self._http = http
        self._url = api_url.rstrip("/")
        self._headers = {"authorization": api_key}

    async def _send(self, method: str, path: str, params: dict[str, Any], *,
                    stream: bool = False) -> httpx.Response:
        """The answer to one request; transport failures become :class:`QuickomError`."""
        request = self._http.build_request(method, self._url + path, params=params,
                                           headers=self._headers)
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise QuickomError(504, "upstream_timeout", "Quickom did not answer in time") from None
        except httpx.HTTPError as exc:
            raise QuickomError(502, "upstream_unreachable",
                               redact(f"Quickom is unreachable: {type(exc).__name__}")) from None

    async def _get_json(self, path: str, params: dict[str, Any], what: str) -> Any:
        response = await self._send("GET", path, params)
        if response.status_code != 200:
            raise error_for(response, what)
        try:
            return response.json()
        except ValueError:
            raise QuickomError(502, "upstream_invalid", "Quickom answered with invalid JSON") from None

    async def detail(self, call_id: str) -> dict[str, Any]:
        """One call (``call/detail``)."""
        body = await self._get_json(_DETAIL, {"call_id": call_id}, "call")
        if not isinstance(body, dict):
            raise QuickomError(502, "upstream_invalid", "Quickom's call detail is not an object")
        return body

    async def new_calls(self, limit: int) -> list[dict[str, Any]]:
        """Calls the webhook may have missed (``call/new``); ``limit`` in 1..50."""
        if not 1 <= limit <= 50:
            raise ValueError("limit must be in 1..50")
        body = await self._get_json(_NEW, {"limit": limit}, "call list")
        if not isinstance(body, list):
            raise QuickomError(502, "upstream_invalid", "Quickom's new calls are not a list")
        return [item for item in body if isinstance(item, dict)]

    async def open_download(self, call_id: str, *, record_id: str | None = None,
                            record_index: int | None = None) -> httpx.Response:
        """The open, unread, 200 answer of ``record/download``: the caller must ``aclose()`` it.

        Only one selector is sent, ``record_id`` when given, as the provider prescribes.
        """
        params: dict[str, Any] = {"call_id": call_id}
        if record_id is not None:
            params["record_id"] = record_id
        elif record_index is not None:
            params["record_index"] = record_index
        response = await self._send("GET", _DOWNLOAD, params, stream=True)
        if response.status_code != 200:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise error_for(response, "recording")
        return response
