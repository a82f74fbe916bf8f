"""A faithful fake of ePacific's API (api.ccall.vn): ``cdrs/json`` and ``ext_reg/json``.

What it enforces, as the provider document says: every request is a ``POST`` with ``api_key`` and
``api_secret`` in its data (JSON, or form-encoded with ``date_range[from]``/``date_range[to]``);
``date_range`` bounds are ``YYYY-MM-DD HH:mm`` in the provider's time zone; ``page`` >= 1 and
``limit`` 1..:data:`MAX_LIMIT`; answers carry ``paging {txtdesc, page_current, limit,
record_count, page_count, prev_page, next_page}``. A CDR is in a range when its start's wall time
(to the minute) is between the bounds, both inclusive, compared as text, as a SQL ``DATETIME``
column would be. CDR ``start`` is wall time ``YYYY-MM-DD HH:mm:ss``.

Answers: ``{"status": "success", "data": [...], "paging": {...}}``; errors
``{"status": "error", "message": ...}`` with 401 (credentials) or 400 (request). Faults queued
with :meth:`EPacificFake.fail_next` (a status and a raw body) are served first; those in
``page_faults`` / ``call_faults`` when that page / call id is asked for (error, restart tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import math
import random
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")
_MAX_BODY = 65_536


@dataclass
class FakeCdr:
    start: datetime  # UTC
    record: dict[str, Any]


@dataclass
class EPacificFake:
    api_key: str
    api_secret: str
    timezone: str = "Asia/Ho_Chi_Minh"
    #: Give CDRs a ``call_id`` (the lookup needs one); False tests the hash fallback.
    call_ids: bool = True
    cdrs: list[FakeCdr] = field(default_factory=list)
    online: set[str] = field(default_factory=set)
    #: Every accepted request's data without credentials, for tests to inspect.
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: deque[tuple[int, bytes]] = field(default_factory=deque)
    #: page number -> a fault served once when a date-range query asks for that page.
    page_faults: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    #: call id -> a fault served once when that call id is looked up.
    call_faults: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def fail_next(self, status: int, body: bytes | str, times: int = 1) -> None:
        raw = body.encode() if isinstance(body, str) else body
        self.faults.extend([(status, raw)] * times)

    def add_cdr(self, start: datetime, *, talk: int = 30, tta: int = 5,
                direction: str = "outbound", source: str = "1001",
                destination: str = "0901234567", cid_name: str = "Thanh Nguyen",
                status: str = "NORMAL_CLEARING") -> dict[str, Any]:
        """Record a finished call that started at ``start`` (aware); returns its CDR."""
        number = next(self._ids)
        local = start.astimezone(self.tz)
        record: dict[str, Any] = {
            "direction": direction, "cid_name": cid_name, "source": source,
            "destination": destination, "start": local.strftime("%Y-%m-%d %H:%M:%S"),
            "tta": tta, "duration": f"{talk // 3600:02d}:{talk // 60 % 60:02d}:{talk % 60:02d}",
            "pdd": 1.2, "mos": 4.3, "status": status,
            "recording": f"https://api.ccall.vn/recordings/{number:08d}.mp3",
        }
        if self.call_ids:
            record["call_id"] = f"ep-{number:08d}"
        self.cdrs.append(FakeCdr(start.astimezone(timezone.utc), record))
        self.cdrs.sort(key=lambda c: (c.start, c.record.get("call_id", ""), number))
        return record

    def generate(self, count: int, *, end: datetime | None = None, span: float = 600.0,
                 rng: random.Random | None = None) -> list[dict[str, Any]]:
        """``count`` random CDRs started in the ``span`` seconds before ``end``."""
        rand = rng or random.Random()
        end = end or datetime.now(timezone.utc)
        out = []
        for _ in range(count):
            direction = rand.choice(["inbound", "outbound", "local"])
            ext = str(rand.randint(100, 106))
            other = str(rand.randint(100, 106)) if direction == "local" else (
                "09" + "".join(rand.choice("0123456789") for _ in range(8)))
            src, dst = (other, ext) if direction == "inbound" else (ext, other)
            out.append(self.add_cdr(end - timedelta(seconds=rand.uniform(0, span)),
                                    talk=rand.randint(0, 900), tta=rand.randint(0, 30),
                                    direction=direction, source=src, destination=dst,
                                    status=rand.choice(["NORMAL_CLEARING", "USER_BUSY",
                                                        "NO_ANSWER"])))
        return out

    async def traffic(self, interval: float, rng: random.Random | None = None) -> None:
        """Until cancelled: a new CDR and an online-set change every ``interval`` seconds."""
        rand = rng or random.Random()
        while True:
            await asyncio.sleep(interval)
            self.generate(1, span=min(interval, 60.0), rng=rand)
            self.online ^= {str(rand.randint(100, 106))}

    # -- HTTP -----------------------------------------------------------------------------

    def build_app(self, *, traffic_interval: float | None = None) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            task = (asyncio.create_task(self.traffic(traffic_interval))
                    if traffic_interval else None)
            try:
                yield
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

        return Starlette(routes=[Route("/cdrs/json", self._cdrs, methods=["POST"]),
                                 Route("/ext_reg/json", self._ext_reg, methods=["POST"])],
                         lifespan=lifespan)

    async def _data(self, request: Request) -> dict[str, Any] | Response:
        if self.faults:
            status, body = self.faults.popleft()
            return Response(body, status_code=status, media_type="application/json")
        body = await request.body()
        if len(body) > _MAX_BODY:
            return _error(413, "request too large")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind == "application/json":
                data = json.loads(body)
            elif kind == "application/x-www-form-urlencoded":
                form = dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
                data = {k: v for k, v in form.items() if not k.startswith("date_range[")}
                if "date_range[from]" in form or "date_range[to]" in form:
                    data["date_range"] = {"from": form.get("date_range[from]"),
                                          "to": form.get("date_range[to]")}
            else:
                return _error(400, "Content-Type must be application/json or form-encoded")
        except ValueError:
            return _error(400, "request_data is not valid JSON")
        if not isinstance(data, dict):
            return _error(400, "request_data must be an object")
        key, secret = str(data.pop("api_key", "")), str(data.pop("api_secret", ""))
        good = hmac.compare_digest(key.encode(), self.api_key.encode())
        good &= hmac.compare_digest(secret.encode(), self.api_secret.encode())
        if not good:
            return _error(401, "api_key or api_secret is invalid")
        self.requests.append(data)
        return data

    async def _ext_reg(self, request: Request) -> Response:
        data = await self._data(request)
        if isinstance(data, Response):
            return data
        return JSONResponse({"status": "success", "data": sorted(self.online)})

    async def _cdrs(self, request: Request) -> Response:
        data = await self._data(request)
        if isinstance(data, Response):
            return data
        if data.get("call_id") not in (None, ""):
            if str(data["call_id"]) in self.call_faults:
                status, raw = self.call_faults.pop(str(data["call_id"]))
                return Response(raw, status_code=status, media_type="application/json")
            found = [c.record for c in self.cdrs if c.record.get("call_id") == str(data["call_id"])]
            return JSONResponse({"status": "success", "data": found})
        try:
            page = _int(data.get("page", 1), "page", 1, 10**9)
            limit = _int(data.get("limit", DEFAULT_LIMIT), "limit", 1, MAX_LIMIT)
            low, high = _range(data.get("date_range"))
        except ValueError as exc:
            return _error(400, str(exc))
        if page in self.page_faults:
            status, raw = self.page_faults.pop(page)
            return Response(raw, status_code=status, media_type="application/json")
        chosen = [c.record for c in self.cdrs if low <= c.record["start"][:16] <= high
                  and _matches(c.record, data)]
        count = len(chosen)
        pages = math.ceil(count / limit)
        rows = chosen[(page - 1) * limit: page * limit]
        return JSONResponse({"status": "success", "data": rows, "paging": {
            "txtdesc": f"Trang {page}/{pages}, {count} dòng", "page_current": page,
            "limit": limit, "record_count": count, "page_count": pages,
            "prev_page": page > 1, "next_page": page < pages}})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return number


def _range(value: Any) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise ValueError("date_range {from, to} is required")
    bounds = []
    for name in ("from", "to"):
        text = value.get(name)
        if not isinstance(text, str) or not _DATE.match(text):
            raise ValueError(f"date_range.{name} must be formatted YYYY-MM-DD HH:mm")
        try:
            datetime.strptime(text, "%Y-%m-%d %H:%M")
        except ValueError:
            raise ValueError(f"date_range.{name} is not a real date") from None
        bounds.append(text)
    if bounds[0] > bounds[1]:
        raise ValueError("date_range.from is after date_range.to")
    return bounds[0], bounds[1]


def _matches(record: dict[str, Any], data: dict[str, Any]) -> bool:
    for name, field_name in (("hangup_cause", "status"), ("source", "source"),
                             ("destination", "destination"), ("cid_name", "cid_name"),
                             ("direction", "direction")):
        wanted = data.get(name)
        if wanted not in (None, "") and str(record.get(field_name)) != str(wanted):
            return False
    return True
