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

from bridge.events import Durations, Event, EventType, Hangup, Party

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
    for fmt in _LOCAL_FORMATS:
        try:
            naive = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    raise ValueError(f"unrecognised date {raw[:40]!r}")


_HMS = re.compile(r"^(\d+):([0-5]?\d):([0-5]?\d)$")


def hms_seconds(value: Any) -> int | None:
    """``hh:mm:ss`` (hours may exceed 23) as seconds; a bare number is taken as seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = _HMS.match(str(value).strip())
    if match:
        h, m, s = (int(g) for g in match.groups())
        return h * 3600 + m * 60 + s
    try:
        return int(float(str(value)))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


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
    pages = _number(paging.get("page_count"))
    return pages is not None and page < pages


def cdr_key(cdr: dict[str, Any]) -> str:
    """The CDR's own call id, else a hash of the fields a CDR never changes."""
    own = _text(cdr.get("call_id") or cdr.get("uuid") or cdr.get("id"))
    if own:
        return own
    stable = "|".join(str(cdr.get(k, "")) for k in
                      ("direction", "source", "destination", "start", "duration", "status"))
    return "h" + hashlib.sha256(stable.encode()).hexdigest()[:24]


def cdr_event_id(tenant: str, key: str) -> str:
    return "ep-" + hashlib.sha256(f"cdr|{tenant}|{key}".encode()).hexdigest()[:32]


def cdr_event(tenant: str, cdr: dict[str, Any], tz: ZoneInfo) -> tuple[Event, datetime]:
    """The ``call.completed`` event of one CDR, and its start (UTC). ValueError if unusable."""
    start = parse_local(str(cdr.get("start") or ""), tz)
    key = cdr_key(cdr)
    direction = str(cdr.get("direction") or "").lower() or None
    source, destination = _text(cdr.get("source")), _text(cdr.get("destination"))
    extension, pov = (destination, "incoming") if direction == "inbound" else (source, "outgoing")
    tta, talk = hms_seconds(cdr.get("tta")), hms_seconds(cdr.get("duration"))
    total = tta + talk if tta is not None and talk is not None else None
    detail = {"direction": direction, "recording": _text(cdr.get("recording")),
              "start_local": _text(cdr.get("start")), "timezone": tz.key,
              "tta": tta, "pdd": _number(cdr.get("pdd")), "mos": _number(cdr.get("mos")),
              "record_key": key}
    event = Event(
        id=cdr_event_id(tenant, key), type=EventType.COMPLETED, provider=PROVIDER, tenant=tenant,
        occurred_at=iso_ms(start), call_id=key, extension=extension,
        direction=pov if direction else None,
        caller=Party(number=source, name=_text(cdr.get("cid_name"))),
        callee=Party(number=destination),
        hangup=Hangup(cause=_text(cdr.get("status"))),
        durations=Durations(duration=total, billing=talk, ringing=tta),
        upstream={"name": "cdr", "call_id": key},
        detail={k: v for k, v in detail.items() if v is not None},
    )
    return event, start


def online_set(answer: dict[str, Any]) -> set[str]:
    """The registered extensions of an ``ext_reg`` answer (strings, or objects naming one)."""
    data = answer.get("data", answer.get("result", []))
    if not isinstance(data, list):
        raise EPacificError("ePacific ext_reg answer has no list of extensions", kind="garbage")
    out: set[str] = set()
    for item in data:
        if isinstance(item, (str, int)) and not isinstance(item, bool):
            out.add(str(item))
        elif isinstance(item, dict):
            name = next((item[k] for k in ("extension", "ext", "username", "user", "name")
                         if item.get(k) not in (None, "")), None)
            if name is None:
                raise EPacificError("ePacific ext_reg entry names no extension", kind="garbage")
            out.add(str(name))
        else:
            raise EPacificError("ePacific ext_reg answer has a malformed entry", kind="garbage")
    return out


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
