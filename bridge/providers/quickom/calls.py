"""Quickom call records (webhook bodies, ``call/detail``, ``call/new`` items) to events.

Pure code. One call becomes one ``call.completed`` event whose id depends only on the tenant
and the ``call_id``, so the webhook and the backfill of the same call share an id and the
pipeline and broker keep one of them.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from bridge.events import Durations, Event, EventType, Party

PROVIDER = "quickom"
#: Times at or above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
_MAX_TEXT = 256


class InvalidCall(ValueError):
    """A record without the fields a call needs (a ``call_id``)."""


def event_id(tenant: str, call_id: str) -> str:
    """26 lowercase base32 characters of sha256 over ``("quickom/1", tenant, call_id)``."""
    digest = hashlib.sha256("\x1f".join(("quickom/1", tenant, call_id)).encode()).digest()
    return base64.b32encode(digest[:16]).decode().rstrip("=").lower()


def epoch_seconds(value: Any) -> float | None:
    """A Quickom time (seconds or milliseconds since the epoch, number or digits) in seconds."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not 0 < number < 1e15:
        return None
    return number / 1000 if number >= _MS_THRESHOLD else number


def iso(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + \
        f".{millis % 1000:03d}Z"


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        text = str(value).strip()
        return text[:_MAX_TEXT] or None
    return None


def _info(record: dict[str, Any], key: str) -> dict[str, Any]:
    info = record.get(key)
    return info if isinstance(info, dict) else {}


def recordings(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record files, each ``{index, record_id, start_time, end_time}`` (ISO times)."""
    files = record.get("record_files")
    out = []
    for index, item in enumerate(files if isinstance(files, list) else []):
        if not isinstance(item, dict):
            continue
        start, end = epoch_seconds(item.get("start_time")), epoch_seconds(item.get("end_time"))
        out.append({"index": index, "record_id": _text(item.get("record_id")),
                    "start_time": iso(start) if start is not None else None,
                    "end_time": iso(end) if end is not None else None})
    return out


def call_event(record: dict[str, Any], tenant: str) -> Event:
    """The ``call.completed`` event of one call record; InvalidCall without a ``call_id``."""
    call_id = _text(record.get("call_id"))
    if call_id is None:
        raise InvalidCall("the call has no call_id")
    start, end = epoch_seconds(record.get("start_time")), epoch_seconds(record.get("end_time"))
    customer, member = _info(record, "customer_info"), _info(record, "callee_info")
    member_id = _text(member.get("member_id"))
    duration = int(round(end - start)) if start is not None and end is not None \
        and end >= start else None
    occurred = end if end is not None else start
    detail = {
        "start_time": iso(start) if start is not None else None,
        "end_time": iso(end) if end is not None else None,
        "customer": {k: _text(customer.get(k))
                     for k in ("customer_id", "name", "phone_number", "email")},
        "member": {k: _text(member.get(k)) for k in ("member_id", "name", "phone_number", "email")},
        "has_record": record.get("has_record") is True,
        "record_number": record.get("record_number")
        if isinstance(record.get("record_number"), int) else None,
        "recordings": recordings(record),
        "time_source": None if occurred is not None else "none",
    }
    return Event(
        id=event_id(tenant, call_id), type=EventType.COMPLETED, provider=PROVIDER,
        tenant=tenant, occurred_at=iso(occurred) if occurred is not None else iso(0),
        call_id=call_id, extension=member_id,
        direction="incoming" if member_id is not None else None,
        caller=Party(number=_text(customer.get("phone_number")), name=_text(customer.get("name"))),
        callee=Party(number=_text(member.get("phone_number")), name=_text(member.get("name"))),
        durations=Durations(duration=duration) if duration is not None else None,
        upstream={"name": "quickom.call"},
        detail={k: v for k, v in detail.items() if v is not None},
    )
