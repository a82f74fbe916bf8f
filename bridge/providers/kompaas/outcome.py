"""Kompaas verification calls as pure code: phone numbers, outcome codes, webhook fields, events.

No I/O here. The outcome mapping follows the provider's (Slovak) document word for word:

=================  ==============  ===============================================
``q931_status``    ``final_status``  outcome
=================  ==============  ===============================================
16                 ANSWER          ``answered`` (the only successful verification)
17                 CANCEL          ``busy``
16                 CANCEL          ``not_answered``
31                 any             ``rejected`` (by another operator)
41                 any             ``billing_problem`` (the call was not placed)
any other code     any             ``unreachable``
16 or 17           anything else   ``unknown``
=================  ==============  ===============================================

The document says "all codes other than 31, 16 or 17: the number is unreachable", so 16 and 17
are explicitly *not* unreachable; it gives them a meaning only with the final statuses listed.
Any other pairing (17 + ANSWER, 16 + BUSY, a missing final status, ...) is reported as
``unknown`` with both values kept, rather than guessed. Final statuses compare
case-insensitively (surrounding blanks ignored).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from bridge.common import fields
from bridge.events.event import Event, EventType, Hangup, Party

PROVIDER = "kompaas"

ANSWERED = "answered"
BUSY = "busy"
NOT_ANSWERED = "not_answered"
REJECTED = "rejected"
BILLING_PROBLEM = "billing_problem"
UNREACHABLE = "unreachable"
UNKNOWN = "unknown"
TIMED_OUT = "timed_out"

#: E.164 allows at most 15 digits; country codes never start with 0. The shortest numbers in
#: use (country code + subscriber number) have 8 digits.
MIN_DIGITS = 8
MAX_DIGITS = 15
MAX_UUID_LENGTH = 128
#: Q.931 cause values are 7-bit codes (ITU-T Q.850): anything above is not a cause.
MAX_Q931 = 127
MAX_FINAL_LENGTH = 64
_UUID_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no blanks


def classify(q931: int, final: str | None) -> str:
    """The outcome of a verification call from its Q.931 cause and final status."""
    status = (final or "").strip().upper()
    if q931 == 31:
        return REJECTED
    if q931 == 41:
        return BILLING_PROBLEM
    if q931 == 16 and status == "ANSWER":
        return ANSWERED
    if q931 == 16 and status == "CANCEL":
        return NOT_ANSWERED
    if q931 == 17 and status == "CANCEL":
        return BUSY
    if q931 in (16, 17):
        return UNKNOWN
    return UNREACHABLE


def validate_phone(value: Any) -> str:
    """The phone number as Kompaas wants it (E.164 digits, no ``+``), or ValueError saying why."""
    if not isinstance(value, str):
        raise ValueError("phone_number must be a string of digits")
    number = value.strip()
    if not number:
        raise ValueError("phone_number is empty")
    if number.startswith("+"):
        raise ValueError("phone_number must be written without the leading '+' "
                         "(international format, e.g. 421222202999)")
    if not number.isascii() or not number.isdigit():
        raise ValueError("phone_number must contain digits only (no spaces, dashes or brackets)")
    if number.startswith("0"):
        raise ValueError("phone_number must start with the country code, not 0")
    if not MIN_DIGITS <= len(number) <= MAX_DIGITS:
        raise ValueError(f"phone_number must have {MIN_DIGITS} to {MAX_DIGITS} digits "
                         f"(it has {len(number)})")
    return number


def extract(body: Any, path: str) -> Any:
    """The value at dotted ``path`` in a JSON document (list items by index), or None."""
    current = body
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isascii() and part.isdigit() \
                and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
        if current is None:
            return None
    return current


def parse_uuid(value: Any) -> str:
    """The verification id: a string of 1..128 printable ASCII characters without blanks
    (``fa278be48dc2_117793``; blanks around it are removed). A number is refused: the
    document's ids always hold a ``_``, so a numeric one is a misconfigured template."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("is missing")
    if not isinstance(value, str):
        raise ValueError("must be a string")
    uuid = value.strip()
    if len(uuid) > MAX_UUID_LENGTH or not _UUID_RE.fullmatch(uuid):
        raise ValueError(f"is not a verification call id (1..{MAX_UUID_LENGTH} printable "
                         "ASCII characters, no blanks)")
    return uuid


def parse_q931(value: Any) -> int:
    """The Q.931 cause: 0..127 (a 7-bit code), as a JSON integer, a whole JSON number
    (``16.0``) or a string of ASCII digits (templates may quote it). Booleans, fractions,
    Unicode digits and anything out of range are refused."""
    try:
        return fields.integer(value, "", lo=0, hi=MAX_Q931)
    except fields.FieldError as exc:
        raise ValueError(exc.problem) from None


def parse_final(value: Any) -> str | None:
    """The final status (``ANSWER``, ``CANCEL``...): None when absent or blank, else at
    most 64 characters without control characters."""
    if value is not None and not isinstance(value, str):
        raise ValueError("is not a string")
    try:
        return fields.text(value, "", max_length=MAX_FINAL_LENGTH)
    except fields.FieldError as exc:
        raise ValueError(exc.problem) from None


def event_id(tenant: str, uuid: str) -> str:
    """One id per verification: its outcome and its timeout share it, so only one is published."""
    digest = hashlib.sha256(f"{PROVIDER}\0{tenant}\0{uuid}".encode()).hexdigest()[:32]
    return f"kp-{digest}"


def iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def account_of(uuid: str) -> str | None:
    """The customer account number after the ``_`` of a verification call id."""
    _, sep, account = uuid.rpartition("_")
    return account if sep and account.isdigit() else None


def verification_event(*, tenant: str, uuid: str, outcome: str, occurred_at: float,
                       phone: str | None, started_at: float | None,
                       answer: dict[str, Any] | None = None, q931: int | None = None,
                       final: str | None = None, timeout: float | None = None) -> Event:
    """The ``verification.completed`` event (fields documented in docs/providers/kompaas.md)."""
    answer = answer or {}
    detail: dict[str, Any] = {
        "outcome": outcome,
        "verified": outcome == ANSWERED,
        "verification_call_uuid": uuid,
        "phone_number": phone,
        "q931_status": q931,
        "final_status": final,
        "started_at": iso(started_at) if started_at is not None else None,
        "login_did": answer.get("login_did"),
        "code": answer.get("code"),
    }
    if timeout is not None:
        detail["timeout_seconds"] = timeout
    hangup = None
    if q931 is not None or final is not None:
        hangup = Hangup(cause=final, code=f"q931:{q931}" if q931 is not None else None)
    login_did = answer.get("login_did")
    return Event(
        id=event_id(tenant, uuid),
        type=EventType.VERIFICATION,
        provider=PROVIDER,
        tenant=tenant,
        occurred_at=iso(occurred_at),
        account=str(answer.get("account_id") or account_of(uuid) or "") or None,
        call_id=uuid,
        direction="outgoing",
        caller=Party(number=str(login_did)) if login_did else None,
        callee=Party(number=phone) if phone else None,
        hangup=hangup,
        upstream={"name": "timeout" if outcome == TIMED_OUT else "webhook"},
        detail={k: v for k, v in detail.items() if v is not None},
    )
