"""ePacific (ccall.vn) wire rules as pure functions: dates, answers, CDR -> event, presence.

No I/O here. The provider writes dates as wall-clock text in its own time zone with minute
resolution (``YYYY-MM-DD HH:mm``); :func:`window_bounds` turns a UTC window into such text,
widening it where a DST fall-back makes a wall time ambiguous, so the provider's reading of the
text always covers the UTC window.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from bridge.common import fields
from bridge.events.event import Durations, Event, EventType, Hangup, Party

PROVIDER = "epacific"
#: Bounds leave an ambiguous wall time by whole minutes: the result is the same minute for every
#: moment of one repeated hour, so ``from`` (and what the cursor prunes) never moves backwards.
_STEP = timedelta(minutes=1)
_MAX_STEPS = 24 * 60


class EPacificError(Exception):
    """A clear, secret-free description of a failed ePacific request."""

    def __init__(self, message: str, *, status: int | None = None, kind: str = "upstream") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # "auth", "request", "unavailable", "garbage", "network"


def iso_ms(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _ambiguous(moment: datetime, tz: ZoneInfo) -> bool:
    """True when the wall time of ``moment`` in ``tz`` occurs twice (a DST fall-back)."""
    local = moment.astimezone(tz).replace(tzinfo=None)
    return (local.replace(tzinfo=tz, fold=0).utcoffset()
            != local.replace(tzinfo=tz, fold=1).utcoffset())


def request_start(start: datetime, tz: ZoneInfo) -> datetime:
    """The instant the provider reads as ``from`` for a window meant to begin at ``start``.

    Floored to its minute (the text has minute resolution), then moved back while its wall
    time is ambiguous (the repeated hour of a fall-back: the provider may read either one).
    """
    moment = start.astimezone(timezone.utc).replace(second=0, microsecond=0)
    for _ in range(_MAX_STEPS):
        if not _ambiguous(moment, tz):
            break
        moment -= _STEP
    return moment


def request_end(end: datetime, tz: ZoneInfo) -> datetime:
    """Like :func:`request_start` for ``to``: raised to the next minute, moved forward."""
    moment = end.astimezone(timezone.utc).replace(second=0, microsecond=0)
    moment += timedelta(minutes=1)
    for _ in range(_MAX_STEPS):
        if not _ambiguous(moment, tz):
            break
        moment += _STEP
    return moment


def window_bounds(start: datetime, end: datetime, tz: ZoneInfo, fmt: str) -> tuple[str, str]:
    """``date_range`` text (``from``, ``to``) whose provider reading covers ``[start, end]``."""
    return (request_start(start, tz).astimezone(tz).strftime(fmt),
            request_end(end, tz).astimezone(tz).strftime(fmt))


_LOCAL_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%d/%m/%Y %H:%M:%S")


def parse_local(text: str, tz: ZoneInfo) -> datetime:
    """A provider wall time as UTC. An ambiguous wall time reads as its first occurrence."""
    raw = text.strip()
    # strptime's %Y/%d also read non-ASCII digits: only ASCII dates are provider dates.
    if not raw.isascii() or len(raw) > 40:
        raise ValueError("unrecognised date")
    for fmt in _LOCAL_FORMATS:
        try:
            naive = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    raise ValueError(f"unrecognised date {raw[:40]!r}")


_HMS = re.compile(r"([0-9]{1,4}):([0-5]?[0-9]):([0-5]?[0-9])")
#: Bounds of the CDR's numbers: post-dial delay in seconds, mean opinion score (1..5; 0 is
#: written by switches that measured nothing).
MAX_PDD = 86_400.0
MAX_MOS = 5.0
MAX_ID = 128
MAX_TEXT = 256
MAX_URL = 2048
MAX_EXTENSION = 64


def parse_hms(value: Any, field: str) -> int | None:
    """``hh:mm:ss`` (hours may exceed 23) as seconds; a bare number is taken as seconds.

    None when absent (null or ``""``). ASCII digits only, at most 31 days; FieldError
    otherwise.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        match = _HMS.fullmatch(value.strip())
        if match:
            h, m, s = (int(g) for g in match.groups())
            value = h * 3600 + m * 60 + s
    return fields.integer(value, field, lo=0, hi=fields.MAX_CALL_SECONDS)


def hms_seconds(value: Any) -> int | None:
    """:func:`parse_hms`, with None for a malformed value too."""
    try:
        return parse_hms(value, "duration")
    except fields.FieldError:
        return None


def _number(value: Any, field: str, hi: float) -> float | None:
    if value is None or value == "":
        return None
    return fields.number(value, field, lo=0.0, hi=hi)


def _text(value: Any, field: str, max_length: int = MAX_TEXT) -> str | None:
    return fields.text(value, field, max_length=max_length, numbers=True)


def check_answer(status: int, body: bytes) -> dict[str, Any]:
    """The decoded success answer, or EPacificError naming what went wrong."""
    if status in (401, 403):
        raise EPacificError(f"ePacific rejected the credentials (HTTP {status})",
                            status=status, kind="auth")
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    message = ""
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("error") or data.get("txtdesc") or "")[:200]
    if status >= 500:
        raise EPacificError(f"ePacific is unavailable (HTTP {status}) {message}".strip(),
                            status=status, kind="unavailable")
    if status >= 400:
        raise EPacificError(f"ePacific refused the request (HTTP {status}): {message or '?'}",
                            status=status, kind="request")
    if not isinstance(data, dict):
        raise EPacificError(f"ePacific answered HTTP {status} with a body that is not a JSON "
                            "object", status=status, kind="garbage")
    if str(data.get("status", "success")).lower() in ("error", "fail", "failed", "false"):
        kind = "auth" if re.search(r"(?i)key|secret|auth", message) else "request"
        raise EPacificError(f"ePacific answered an error: {message or '?'}", status=status,
                            kind=kind)
    return data


def rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of an answer (``data``; a single object is one record)."""
    data = answer.get("data", answer.get("result", []))
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise EPacificError("ePacific answered with malformed records", kind="garbage")
    return data


def has_next(answer: dict[str, Any], page: int, count: int) -> bool:
    """Whether another page follows ``page`` (``paging.next_page``, else ``page_count``)."""
    paging = answer.get("paging")
    if count == 0 or not isinstance(paging, dict):
        return False
    if "next_page" in paging:
        flag = paging["next_page"]
        return flag is True or str(flag).lower() in ("true", "1")
    try:
        pages = _number(paging.get("page_count"), "paging.page_count", float(2**31))
    except fields.FieldError as exc:
        raise EPacificError(f"ePacific answered malformed paging: {exc}", kind="garbage") \
            from None
    return pages is not None and page < pages


def cdr_key(cdr: dict[str, Any]) -> str:
    """The CDR's own call id, else a hash of the fields a CDR never changes.

    The first of ``call_id``, ``uuid``, ``id`` that is present (not null or ``""``) must be an
    id (1..128 printable characters, or a non-negative integer): FieldError otherwise.
    """
    for name in ("call_id", "uuid", "id"):
        value = cdr.get(name)
        if value is not None and value != "":
            return fields.identifier(value, name, max_length=MAX_ID, numbers=True)
    stable = "|".join(str(cdr.get(k, "")) for k in
                      ("direction", "source", "destination", "start", "duration", "status"))
    return "h" + hashlib.sha256(stable.encode()).hexdigest()[:24]


def cdr_event_id(tenant: str, key: str) -> str:
    return "ep-" + hashlib.sha256(f"cdr|{tenant}|{key}".encode()).hexdigest()[:32]


def cdr_event(tenant: str, cdr: dict[str, Any], tz: ZoneInfo) -> tuple[Event, datetime]:
    """The ``call.completed`` event of one CDR, and its start (UTC).

    ValueError (a :class:`~bridge.common.fields.FieldError` naming the field) when the CDR
    is unusable: ``start`` not a provider date; ``tta`` / ``duration`` not 0..31 days of
    seconds (``duration`` as ``hh:mm:ss`` or seconds); ``pdd`` not 0..86400; ``mos`` not
    0..5; a text over its length or holding control characters; a malformed id.
    """
    raw_start = cdr.get("start")
    if not isinstance(raw_start, str):
        raise fields.FieldError("start", "is missing" if raw_start is None else
                                "must be a date string")
    try:
        start = parse_local(raw_start, tz)
    except ValueError:
        raise fields.FieldError("start", "is not a date (YYYY-MM-DD HH:mm[:ss])") from None
    key = cdr_key(cdr)
    direction = (_text(cdr.get("direction"), "direction") or "").lower() or None
    source = _text(cdr.get("source"), "source")
    destination = _text(cdr.get("destination"), "destination")
    extension, pov = (destination, "incoming") if direction == "inbound" else (source, "outgoing")
    tta, talk = parse_hms(cdr.get("tta"), "tta"), parse_hms(cdr.get("duration"), "duration")
    total = tta + talk if tta is not None and talk is not None else None
    detail = {"direction": direction,
              "recording": _text(cdr.get("recording"), "recording", MAX_URL),
              "start_local": raw_start, "timezone": tz.key,
              "tta": tta, "pdd": _number(cdr.get("pdd"), "pdd", MAX_PDD),
              "mos": _number(cdr.get("mos"), "mos", MAX_MOS),
              "record_key": key}
    cid_name, status = _text(cdr.get("cid_name"), "cid_name"), _text(cdr.get("status"), "status")
    event = Event(
        id=cdr_event_id(tenant, key), type=EventType.COMPLETED, provider=PROVIDER, tenant=tenant,
        occurred_at=iso_ms(start), call_id=key, extension=extension,
        direction=pov if direction else None,
        caller=Party(number=source, name=cid_name),
        callee=Party(number=destination),
        hangup=Hangup(cause=status),
        durations=Durations(duration=total, billing=talk, ringing=tta),
        upstream={"name": "cdr", "call_id": key},
        detail={k: v for k, v in detail.items() if v is not None},
    )
    return event, start


def online_entries(answer: dict[str, Any]) -> tuple[set[str], list[str]]:
    """The registered extensions of an ``ext_reg`` answer (strings, or objects naming one),
    and the problems of entries skipped because their name breaks the rule (1..64 characters
    without control characters, or a non-negative integer). EPacificError when the answer is
    not such a list at all."""
    data = answer.get("data", answer.get("result", []))
    if not isinstance(data, list):
        raise EPacificError("ePacific ext_reg answer has no list of extensions", kind="garbage")
    out: set[str] = set()
    problems: list[str] = []
    for index, item in enumerate(data):
        field = f"data[{index}]"
        if isinstance(item, dict):
            key = next((k for k in ("extension", "ext", "username", "user", "name")
                        if item.get(k) not in (None, "")), None)
            if key is None:
                raise EPacificError("ePacific ext_reg entry names no extension", kind="garbage")
            item, field = item[key], f"{field}.{key}"
        elif item is None or not isinstance(item, (str, int, float)):
            raise EPacificError("ePacific ext_reg answer has a malformed entry", kind="garbage")
        try:
            name = fields.text(item, field, max_length=MAX_EXTENSION, numbers=True)
            if isinstance(item, int) and not isinstance(item, bool) and item < 0:
                raise fields.FieldError(field, "must not be negative")
            if name is None:
                raise fields.FieldError(field, "is empty")
        except fields.FieldError as exc:
            problems.append(str(exc))
            continue
        out.add(name)
    return out, problems


def online_set(answer: dict[str, Any]) -> set[str]:
    """The registered extensions of an ``ext_reg`` answer (see :func:`online_entries`)."""
    return online_entries(answer)[0]


def presence_events(tenant: str, before: set[str] | None, now_online: set[str],
                    at: datetime) -> list[Event]:
    """``presence.changed`` events for the difference between two online sets.

    ``before`` None (nothing known yet) reports every online extension as online.
    """
    known = before or set()
    changes = [(ext, True) for ext in sorted(now_online - known)]
    changes += [(ext, False) for ext in sorted(known - now_online)] if before is not None else []
    stamp = iso_ms(at)
    out = []
    for ext, online in changes:
        digest = hashlib.sha256(f"presence|{tenant}|{ext}|{online}|{stamp}".encode()).hexdigest()
        out.append(Event(id="ep-" + digest[:32], type=EventType.PRESENCE, provider=PROVIDER,
                         tenant=tenant, occurred_at=stamp, extension=ext,
                         upstream={"name": "ext_reg"},
                         detail={"extension": ext, "online": online,
                                 "initial": before is None}))
    return out
