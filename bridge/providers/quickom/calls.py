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

from bridge.common import fields
from bridge.events.event import Durations, Event, EventType, Party

PROVIDER = "quickom"
#: Times at or above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
#: Times are positive and below this (milliseconds in the year 33658): a 64-bit-safe bound.
MAX_TIME = 1e15
MAX_ID = 256
MAX_TEXT = 256
#: A call with more recordings than this is not a call record.
MAX_RECORDS = 1000
#: Party fields, and those that may come as JSON integers (ids and numbers written unquoted).
_PARTY_FIELDS = {"customer_info": ("customer_id", "name", "phone_number", "email"),
                 "callee_info": ("member_id", "name", "phone_number", "email")}
_NUMERIC_OK = frozenset({"customer_id", "member_id", "phone_number"})


class InvalidCall(ValueError):
    """A record that is not a usable call: no ``call_id``, or a field that breaks its rule.

    The message names the field (``start_time``, ``record_files[0].record_id``...) and never
    holds its value.
    """


def event_id(tenant: str, call_id: str) -> str:
    """26 lowercase base32 characters of sha256 over ``("quickom/1", tenant, call_id)``."""
    digest = hashlib.sha256("\x1f".join(("quickom/1", tenant, call_id)).encode()).digest()
    return base64.b32encode(digest[:16]).decode().rstrip("=").lower()


def parse_time(value: Any, field: str) -> float | None:
    """A Quickom time in seconds: None when absent (null); else seconds or milliseconds since
    the epoch, as a JSON number or a decimal string of ASCII digits, above 0 and below
    :data:`MAX_TIME`. FieldError otherwise (``"١٢٣"``, ``"1e40"``, ``true``, ``-1``...)."""
    if value is None:
        return None
    number = fields.number(value, field, lo=0.0, hi=MAX_TIME)
    if number <= 0 or number >= MAX_TIME:
        raise fields.FieldError(field, f"must be above 0 and below {MAX_TIME:.0e}")
    return number / 1000 if number >= _MS_THRESHOLD else number


def epoch_seconds(value: Any) -> float | None:
    """:func:`parse_time`, with None for a malformed time too (for sorting only)."""
    try:
        return parse_time(value, "time")
    except fields.FieldError:
        return None


def iso(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + \
        f".{millis % 1000:03d}Z"


def _info(record: dict[str, Any], key: str) -> dict[str, str | None]:
    """The party object ``key`` (missing or null: no party), its documented fields read."""
    info = record.get(key)
    if info is None:
        info = {}
    if not isinstance(info, dict):
        raise fields.FieldError(key, "must be an object")
    return {name: fields.text(info.get(name), f"{key}.{name}", max_length=MAX_TEXT,
                              numbers=name in _NUMERIC_OK)
            for name in _PARTY_FIELDS[key]}


def recordings(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record files, each ``{index, record_id, start_time, end_time}`` (ISO times).

    ``record_files`` is a list (or null) of objects; FieldError names a malformed entry.
    """
    files = record.get("record_files")
    if files is None:
        return []
    if not isinstance(files, list):
        raise fields.FieldError("record_files", "must be a list")
    if len(files) > MAX_RECORDS:
        raise fields.FieldError("record_files", f"has more than {MAX_RECORDS} entries")
    out = []
    for index, item in enumerate(files):
        where = f"record_files[{index}]"
        if not isinstance(item, dict):
            raise fields.FieldError(where, "must be an object")
        start = parse_time(item.get("start_time"), f"{where}.start_time")
        end = parse_time(item.get("end_time"), f"{where}.end_time")
        out.append({"index": index,
                    "record_id": fields.text(item.get("record_id"), f"{where}.record_id",
                                             max_length=MAX_ID, numbers=True),
                    "start_time": iso(start) if start is not None else None,
                    "end_time": iso(end) if end is not None else None})
    return out


def call_event(record: dict[str, Any], tenant: str) -> Event:
    """The ``call.completed`` event of one call record.

    InvalidCall when ``call_id`` is missing or not an id (a string of 1..256 printable
    characters; a number is refused), or when any other documented field breaks its rule
    (times: :func:`parse_time`; texts: at most 256 characters, no control characters;
    ``has_record``: a boolean; ``record_number``: an integer in 0..1000).
    """
    try:
        return _call_event(record, tenant)
    except fields.FieldError as exc:
        raise InvalidCall(str(exc)) from None


def _call_event(record: dict[str, Any], tenant: str) -> Event:
    raw_id = record.get("call_id")
    if raw_id is None or raw_id == "":
        raise InvalidCall("the call has no call_id")
    call_id = fields.identifier(raw_id, "call_id", max_length=MAX_ID)
    start = parse_time(record.get("start_time"), "start_time")
    end = parse_time(record.get("end_time"), "end_time")
    customer, member = _info(record, "customer_info"), _info(record, "callee_info")
    member_id = member["member_id"]
    has_record = record.get("has_record")
    if has_record is not None and not isinstance(has_record, bool):
        raise fields.FieldError("has_record", "must be true or false")
    record_number = record.get("record_number")
    if record_number is not None:
        record_number = fields.integer(record_number, "record_number", lo=0, hi=MAX_RECORDS,
                                       text=False, integral_floats=False)
    duration = int(round(end - start)) if start is not None and end is not None \
        and end >= start else None
    occurred = end if end is not None else start
    detail = {
        "start_time": iso(start) if start is not None else None,
        "end_time": iso(end) if end is not None else None,
        "customer": customer,
        "member": member,
        "has_record": has_record is True,
        "record_number": record_number,
        "recordings": recordings(record),
        "time_source": None if occurred is not None else "none",
    }
    return Event(
        id=event_id(tenant, call_id), type=EventType.COMPLETED, provider=PROVIDER,
        tenant=tenant, occurred_at=iso(occurred) if occurred is not None else iso(0),
        call_id=call_id, extension=member_id,
        direction="incoming" if member_id is not None else None,
        caller=Party(number=customer["phone_number"], name=customer["name"]),
        callee=Party(number=member["phone_number"], name=member["name"]),
        durations=Durations(duration=duration) if duration is not None else None,
        upstream={"name": "quickom.call"},
        detail={k: v for k, v in detail.items() if v is not None},
    )
