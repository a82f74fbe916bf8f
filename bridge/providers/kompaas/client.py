"""The confirmation-call request to Kompaas, and its answers turned into clear API errors."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from bridge.api.endpoints import ApiError
from bridge.common import fields
from bridge.common.redact import redact
from bridge.providers.kompaas.outcome import parse_uuid

log = logging.getLogger("bridge.providers.kompaas")

CONFIRMATION_PATH = "/api/protected/api/auth/confirmationCall"
_MAX_MESSAGE = 200
#: The answer's fields kept besides the id, each text (or an integer read as its digits).
ANSWER_FIELDS = ("login_did", "code", "account_id")
MAX_ANSWER_TEXT = 64


async def confirmation_call(http: httpx.AsyncClient, api_url: str, token: str,
                            phone: str) -> dict[str, Any]:
    """Ask Kompaas to place a verification call to ``phone``; its ``object`` on success.

    The returned dict always has a valid ``verification_call_uuid`` (see
    :func:`~.outcome.parse_uuid`) and ``login_did``, ``code`` and ``account_id``, each text of at
    most 64 characters or None (also when Kompaas sent something else). Failures raise
    :class:`ApiError`: 502 when Kompaas rejects callbridge's token or answers nonsense, 402 on a
    payment refusal, 400 when it rejects the number, 503 when it limits the rate, 502/504 when it
    is down or slow. Messages never include the token.
    """
    try:
        response = await http.post(
            api_url + CONFIRMATION_PATH, json={"phone_number": phone},
            headers={"authorization": f"Bearer {token}", "accept": "application/json"})
    except httpx.TimeoutException:
        raise ApiError(504, "provider_timeout", "Kompaas did not answer in time") from None
    except httpx.HTTPError as exc:
        log.warning("kompaas confirmationCall failed: %s", redact(f"{type(exc).__name__}: {exc}"))
        raise ApiError(502, "provider_unavailable", "Kompaas could not be reached") from None
    status = response.status_code
    body = _json(response)
    message = _message(body)
    if status in (401, 403):
        log.error("kompaas rejected the api_token (HTTP %d)", status)
        raise ApiError(502, "provider_auth_failed",
                       "Kompaas rejected callbridge's API token (check the [[kompaas]] api_token)")
    if status == 402:
        raise ApiError(402, "insufficient_credit",
                       "Kompaas refused the call: insufficient credit on the account")
    if status == 429:
        raise ApiError(503, "provider_rate_limited", "Kompaas is limiting the request rate")
    if status in (400, 422):
        raise ApiError(400, "invalid_phone_number",
                       "Kompaas rejected the phone number" + (f": {message}" if message else ""))
    if status >= 500:
        log.warning("kompaas confirmationCall answered HTTP %d: %s", status, message)
        raise ApiError(502, "provider_error", f"Kompaas failed (HTTP {status})")
    if status != 200:
        raise ApiError(502, "provider_error", f"Kompaas answered HTTP {status}"
                       + (f": {message}" if message else ""))
    obj = body.get("object") if isinstance(body, dict) else None
    raw_uuid = obj.get("verification_call_uuid") if isinstance(obj, dict) else None
    uuid: str | None = None
    problem = ""
    try:
        uuid = parse_uuid(raw_uuid)
    except ValueError as exc:
        problem = f" (it {exc})" if raw_uuid is not None else ""
    if not isinstance(body, dict) or body.get("status") != "success" or uuid is None:
        log.warning("kompaas confirmationCall: unexpected answer: %s", redact(response.text[:500]))
        detail = problem if uuid is None else ""
        raise ApiError(502, "provider_bad_answer",
                       "Kompaas answered without a valid verification_call_uuid" + detail
                       + (f": {message}" if message else ""))
    assert isinstance(obj, dict)
    answer: dict[str, Any] = {"verification_call_uuid": uuid}
    for key in ANSWER_FIELDS:
        # The call is placed by now: a malformed extra field is dropped (null), not fatal.
        try:
            answer[key] = fields.text(obj.get(key), key, max_length=MAX_ANSWER_TEXT,
                                      numbers=True)
        except fields.FieldError as exc:
            answer[key] = None
            log.warning("kompaas confirmationCall: %s; reported as null", exc)
    return answer


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message(body: Any) -> str:
    """The provider's own error text, shortened and redacted, or ''."""
    if not isinstance(body, dict):
        return ""
    for key in ("message", "error", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return redact(value.strip()[:_MAX_MESSAGE])
    return ""
