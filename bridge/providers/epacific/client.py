"""The ePacific HTTP calls: ``cdrs/json`` (by date range, by call id) and ``ext_reg/json``.

Every request is a JSON ``POST`` carrying ``api_key`` and ``api_secret`` in its body, so no
request body is ever logged; errors are :class:`EPacificError` with redacted, secret-free text.
"""

from __future__ import annotations

from typing import Any

import httpx

from bridge.common.redact import redact
from bridge.providers.epacific.protocol import (
    EPacificError,
    check_answer,
    has_next,
    rows,
)

#: Seconds one request may take.
TIMEOUT = 20.0
#: Answers larger than this are refused as garbage (bounded memory).
MAX_ANSWER = 16 * 1024 * 1024


class EPacificClient:
    def __init__(self, http: httpx.AsyncClient, api_url: str, api_key: str,
                 api_secret: str) -> None:
        self._http = http
        self._url = api_url.rstrip("/")
        self._auth = {"api_key": api_key, "api_secret": api_secret}

    async def _post(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._url}/{path}"
        try:
            async with self._http.stream("POST", url, json={**self._auth, **data},
                                         timeout=TIMEOUT) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER:
                        raise EPacificError(f"ePacific {path} answer exceeds {MAX_ANSWER} bytes",
                                            kind="garbage")
                status = response.status_code
        except httpx.HTTPError as exc:
            raise EPacificError(redact(f"ePacific {path} unreachable: {type(exc).__name__}: "
                                       f"{exc}"), kind="network") from None
        try:
            return check_answer(status, bytes(body))
        except EPacificError as exc:
            raise EPacificError(redact(f"{path}: {exc}"), status=exc.status,
                                kind=exc.kind) from None

    async def cdr_page(self, date_from: str, date_to: str, page: int,
                       limit: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of CDRs in ``[date_from, date_to]`` (provider text) and whether more follow."""
        answer = await self._post("cdrs/json", {"date_range": {"from": date_from, "to": date_to},
                                                "page": page, "limit": limit})
        records = rows(answer)
        return records, has_next(answer, page, len(records))

    async def cdr_by_call_id(self, call_id: str) -> list[dict[str, Any]]:
        """The CDRs of one call (usually one; empty when the provider knows none)."""
        return rows(await self._post("cdrs/json", {"call_id": call_id}))

    async def online(self) -> dict[str, Any]:
        """The raw ``ext_reg`` answer (see :func:`protocol.online_set`)."""
        return await self._post("ext_reg/json", {})
