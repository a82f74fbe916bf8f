"""AntBuddy oapi REST over HTTP: click-to-call, call histories, recording URLs.

Only moves bytes: requests are built by :mod:`bridge.providers.antbuddy.rest`. Every failure is
an :class:`OapiError` whose ``kind`` says what went wrong and whose text never holds a secret.
"""

from __future__ import annotations

from typing import Any, AsyncIterator
from urllib.parse import quote

import httpx

from bridge.common.redact import redact
from bridge.providers.antbuddy import rest

CLICK_TO_CALL = "/oapi/v1/call/click-to-call/"
HISTORIES = "/oapi/v1/call/histories"
PLAY_RECORDING = "/oapi/v1/call/play_recording"


class OapiError(Exception):
    """``kind``: ``device_offline`` (click-to-call 400), ``rejected`` (other 4xx),
    ``unauthorized`` (401/403), ``not_found`` (404), ``unavailable`` (5xx, network, timeout,
    unreadable answer)."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(redact(message))
        self.kind = kind
        self.status = status


class OapiClient:
    def __init__(self, http: httpx.AsyncClient, *, base_url: str, app_id: str, app_secret: str,
                 timeout: float = 10.0, date_format: str = "unix", page_limit: int = 100,
                 max_pages: int = 1000) -> None:
        if date_format not in rest.DATE_FORMATS:
            raise ValueError(f"date_format must be one of {rest.DATE_FORMATS}")
        if not 1 <= page_limit <= rest.MAX_LIMIT:
            raise ValueError("page_limit must be in 1..100")
        self._http = http
        self._base = base_url.rstrip("/")
        self._app_id = app_id
        self._secret = app_secret
        self._timeout = timeout
        self.date_format = date_format
        self.page_limit = page_limit
        self.max_pages = max_pages

    def __repr__(self) -> str:
        return f"OapiClient({self._base!r}, app_id={self._app_id!r})"

    async def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self._base + path,
                                                timeout=self._timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise OapiError("unavailable", f"{what}: {type(exc).__name__}") from None
        if response.status_code < 300:
            return response
        status = response.status_code
        kind = ("unauthorized" if status in (401, 403) else "not_found" if status == 404
                else "unavailable" if status >= 500 else "rejected")
        raise OapiError(kind, f"{what}: the provider answered {status}", status)

    async def click_to_call(self, number: str, sip_user: str, sip_password: str) -> None:
        """Ring ``sip_user``'s device, then ``number``. ``device_offline`` on the provider's 400."""
        try:
            await self._send("POST", CLICK_TO_CALL + quote(number, safe="+"), "click-to-call",
                             headers=rest.app_headers(self._app_id, self._secret),
                             json={"sipUser": sip_user, "sipPassword": sip_password})
        except OapiError as exc:
            if exc.status == 400:
                raise OapiError("device_offline", "click-to-call: the SIP device is offline "
                                "(not registered)", 400) from None
            raise

    async def recording_url(self, media: str) -> str:
        """The signed, expiring URL of a recording file (``play_recording``)."""
        response = await self._send(
            "GET", PLAY_RECORDING, "play_recording",
            params=rest.recording_params(self._app_id, self._secret, media))
        try:
            url = response.json().get("media")
        except (ValueError, AttributeError):
            url = None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise OapiError("unavailable", "play_recording: the answer holds no media URL")
        return url

    async def history_page(self, start: int, end: int, page: int) -> list[dict[str, Any]]:
        params = rest.history_params(self._app_id, self._secret, start, end,
                                     limit=self.page_limit, page=page,
                                     date_format=self.date_format)
        response = await self._send("GET", HISTORIES, "call histories", params=params)
        try:
            return rest.records_of(response.json())
        except ValueError as exc:
            raise OapiError("unavailable", f"call histories: {exc}") from None

    async def histories(self, start: int, end: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Every record from ``start`` to ``end`` (Unix seconds, inclusive), page by page: the
        range cut into 31-day windows, each read until a page shorter than the limit."""
        for lo, hi in rest.windows(start, end):
            page: int | None = 1
            while page is not None:
                if page > self.max_pages:
                    raise OapiError("unavailable", "call histories: too many pages")
                records = await self.history_page(lo, hi, page)
                if records:
                    yield records
                page = rest.next_page(page, len(records), self.page_limit)
