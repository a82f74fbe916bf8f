"""AntBuddy oapi REST, pure: request hashes, history windows and pages, records to events.

No I/O here: :mod:`bridge.providers.antbuddy.client` sends what these functions build.

Hashes are lowercase hex sha256 over the documented concatenation, each number written as its
decimal text without leading zeros or sign (``limit`` 100 is ``"100"``), followed by the app
secret. ``created_from`` / ``created_to`` are sent as Unix seconds in decimal text by default
(``date_format = "unix"``); ``"datetime"`` sends ``YYYY-MM-DD HH:MM:SS`` in UTC instead. The hash
covers exactly the text that is sent.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from bridge.common import fields
from bridge.events.event import Durations, Event, EventType, Hangup, Party
from bridge.upstream.kazoo import iso_from_micros

MAX_WINDOW = 31 * 86_400  # seconds; the provider refuses longer history filters
MAX_LIMIT = 100
DATE_FORMATS = ("unix", "datetime")
NUMBER_RE = re.compile(r"^\+?[0-9*#]{2,20}$")
MEDIA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@%+-]{0,254}$")

#: status_detail -> hangup cause, in Kazoo's vocabulary (the live call.ended events use it).
STATUS_CAUSES = {"SUCCESS": "NORMAL_CLEARING", "BUSY": "USER_BUSY",
                 "CANCELLED": "ORIGINATOR_CANCEL", "IVR": "NO_ANSWER"}


def sha256_hex(*parts: str) -> str:
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def app_headers(app_id: str, app_secret: str) -> dict[str, str]:
    """Headers of auth_token and click-to-call: ``x-auth-app-hash = sha256(appId + appSecret)``."""
    return {"x-auth-app-id": app_id, "x-auth-app-hash": sha256_hex(app_id, app_secret)}


def format_date(seconds: int, date_format: str = "unix") -> str:
    if date_format == "unix":
        return str(int(seconds))
    if date_format == "datetime":
        return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    raise ValueError(f"date_format must be one of {DATE_FORMATS}")


def history_params(app_id: str, app_secret: str, start: int, end: int, *, limit: int, page: int,
                   date_format: str = "unix") -> dict[str, str]:
    """Query parameters of one ``/oapi/v1/call/histories`` page, hash included."""
    if not 1 <= limit <= MAX_LIMIT or page < 1:
        raise ValueError("limit must be in 1..100 and page >= 1")
    if end < start or end - start > MAX_WINDOW:
        raise ValueError("a history window spans 0..31 days")
    params = {"appId": app_id, "created_from": format_date(start, date_format),
              "created_to": format_date(end, date_format), "limit": str(limit),
              "page": str(page)}
    params["hash"] = sha256_hex(app_id, params["created_from"], params["created_to"],
                                params["limit"], params["page"], app_secret)
    return params


def recording_params(app_id: str, app_secret: str, media: str) -> dict[str, str]:
    return {"appId": app_id, "media": media, "hash": sha256_hex(app_id, media, app_secret)}


def windows(start: int, end: int, span: int = MAX_WINDOW) -> Iterator[tuple[int, int]]:
    """``[start, end]`` (whole seconds, both inclusive) cut into windows of at most ``span``.

    Windows do not overlap: each starts one second after the previous one ends.
    """
    if span < 1:
        raise ValueError("span must be positive")
    while start <= end:
        stop = min(start + span, end)
        yield start, stop
        start = stop + 1


def next_page(page: int, received: int, limit: int) -> int | None:
    """The page to ask for after ``page`` returned ``received`` records; None: that was the last."""
    return page + 1 if received >= limit else None


def records_of(body: Any) -> list[dict[str, Any]]:
    """The records of a histories answer: a JSON array, or an object holding one."""
    if isinstance(body, dict):
        for key in ("data", "items", "histories", "records", "result"):
            if isinstance(body.get(key), list):
                body = body[key]
                break
    if not isinstance(body, list):
        raise ValueError("call histories answer holds no list of records")
    return [r for r in body if isinstance(r, dict)]


@dataclass(frozen=True)
class HistoryRecord:
    start: int  # unix_timestamp
    duration: int
    billing: int
    caller: tuple[str, ...]  # number, then username when given: every name the party goes by
    callee: tuple[str, ...]
    direction: str | None
    call_class: str | None
    status: str | None
    did_number: str | None
    recording: str | None
    raw: dict[str, Any]

    @property
    def end(self) -> int:
        return self.start + self.duration


#: ``unix_timestamp`` bounds: after the Unix epoch and before 2100-01-01.
MAX_TIMESTAMP = 4_102_444_800
MAX_TEXT = 256


def _seconds(raw: dict[str, Any], field: str) -> int:
    """A duration in whole seconds, 0..31 days; missing (null or ``""``) reads as 0."""
    value = raw.get(field)
    if value is None or value == "":
        return 0
    return fields.integer(value, field, lo=0, hi=fields.MAX_CALL_SECONDS)


def _text(raw: Any, field: str, where: str = "") -> str | None:
    value = raw.get(field) if isinstance(raw, dict) else None
    return fields.text(value, where + field, max_length=MAX_TEXT, numbers=True)


def _names(raw: dict[str, Any], side: str) -> tuple[str, ...]:
    party = raw.get(side)
    if party is None:
        return ()
    if not isinstance(party, dict):
        raise fields.FieldError(side, "must be an object")
    return tuple(n for n in (_text(party, "number", f"{side}."),
                             _text(party, "username", f"{side}.")) if n)


def parse_record(raw: dict[str, Any]) -> HistoryRecord:
    """A history record, or FieldError (a ValueError) naming the field that breaks its rule.

    ``unix_timestamp``: required, whole seconds in 1..4102444800 (a JSON integer or ASCII
    digits); ``duration_seconds`` / ``billing_seconds``: 0..31 days (missing: 0); texts
    (parties' ``number`` / ``username``, ``direction``, ``class``, ``status_detail``,
    ``did_number``, ``recording``): strings (or integers) of at most 256 characters without
    control characters.
    """
    start = fields.integer(raw.get("unix_timestamp"), "unix_timestamp", lo=1, hi=MAX_TIMESTAMP)
    return HistoryRecord(
        start=start, duration=_seconds(raw, "duration_seconds"),
        billing=_seconds(raw, "billing_seconds"), caller=_names(raw, "caller"),
        callee=_names(raw, "callee"), direction=_text(raw, "direction"),
        call_class=_text(raw, "class"), status=_text(raw, "status_detail"),
        did_number=_text(raw, "did_number"), recording=_text(raw, "recording"), raw=raw)


def record_id(app_id: str, account: str, record: HistoryRecord) -> str:
    """Deterministic id of a record: the same record fetched twice, anywhere, has one id.

    Identity is the app, the account, the start second, both parties, direction and class;
    durations are left out so a record the provider later corrects keeps its id.
    """
    identity = "\x1f".join(["antbuddy-history/1", app_id, account, str(record.start),
                            ",".join(record.caller), ",".join(record.callee),
                            record.direction or "", record.call_class or ""])
    digest = hashlib.sha256(identity.encode()).digest()[:16]
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _type(party: Any) -> Any:
    return party.get("type") if isinstance(party, dict) else None


def _party(names: tuple[str, ...]) -> Party | None:
    if not names:
        return None
    return Party(number=names[0], name=names[1] if len(names) > 1 else None)


def record_event(record: HistoryRecord, *, tenant: str, account: str, app_id: str) -> Event:
    """The ``call.completed`` event of one history record (fields in docs/providers)."""
    rid = record_id(app_id, account, record)
    direction = {"from_ab": "outgoing", "to_ab": "incoming"}.get(record.direction or "")
    caller_type, callee_type = _type(record.raw.get("caller")), _type(record.raw.get("callee"))
    extension = None
    if caller_type == "user" and direction != "incoming" and record.caller:
        extension = record.caller[0]
    elif callee_type == "user" and record.callee:
        extension = record.callee[0]
    ringing = max(0, record.duration - record.billing) if record.billing else record.duration
    detail = {"source": "history", "status_detail": record.status, "class": record.call_class,
              "did_number": record.did_number, "recording": record.recording,
              "history_direction": record.direction}
    return Event(
        id=f"abh-{rid}", type=str(EventType.COMPLETED), provider="antbuddy", tenant=tenant,
        occurred_at=iso_from_micros(record.start * 1_000_000), account=account,
        call_id=f"history-{rid}", extension=extension, direction=direction,
        caller=_party(record.caller), callee=_party(record.callee),
        hangup=None if record.status is None else Hangup(
            cause=STATUS_CAUSES.get(record.status.upper(), "UNSPECIFIED")),
        durations=Durations(duration=record.duration, billing=record.billing, ringing=ringing),
        upstream={"name": "call_history"},
        detail={k: v for k, v in detail.items() if v is not None},
    )

