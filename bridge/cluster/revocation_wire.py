"""How revocations are kept in Redis (docs/operations.md, "Token revocations").

- ``<prefix>revocations``: a sorted set, one member per revoked token id, scored with the
  unix time in milliseconds until which it stays revoked. Instances read it whole when they
  (re)subscribe; members past their time are removed on the next revoke.
- ``<prefix>revoked:<jti>``: one key per revoked id, expiring at the same time, for a consumer
  that checks a single id with ``EXISTS``.
- notices on the pub/sub channel ``<prefix>control:revoked``: ``{"jti":J,"until":T}`` (JSON,
  ``T`` in unix seconds). A bare token id (the earlier form) is read as revoked for
  :data:`BARE_NOTICE_SPAN` seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

#: Token ids are opaque strings; this bound keeps keys and messages small.
MAX_TOKEN_ID = 200
#: How long a bare-id notice (no time given) is kept here: the longest a revocation may last.
BARE_NOTICE_SPAN = 366 * 86400.0


def check_token_id(token_id: str) -> None:
    if not isinstance(token_id, str) or not token_id or len(token_id) > MAX_TOKEN_ID:
        raise ValueError(f"token id must be a non-empty string of at most {MAX_TOKEN_ID} chars")


@dataclass(frozen=True)
class Keys:
    prefix: str

    @property
    def channel(self) -> str:
        return f"{self.prefix}control:revoked"

    @property
    def index(self) -> str:
        return f"{self.prefix}revocations"

    def key(self, token_id: str) -> str:
        return f"{self.prefix}revoked:{token_id}"


def notice(token_id: str, until: float) -> bytes:
    return orjson.dumps({"jti": token_id, "until": round(until, 3)})


def parse_notice(payload: bytes, now: float) -> tuple[str, float] | None:
    """``(token_id, until)`` of a notice, or None when it is neither form."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        token_id, until = data.get("jti"), data.get("until")
        if isinstance(token_id, str) and 0 < len(token_id) <= MAX_TOKEN_ID \
                and isinstance(until, (int, float)) and not isinstance(until, bool) \
                and math.isfinite(until):
            return token_id, float(until)
        return None
    try:
        bare = payload.decode()
    except UnicodeDecodeError:
        return None
    if 0 < len(bare) <= MAX_TOKEN_ID:
        return bare, now + BARE_NOTICE_SPAN
    return None


async def store(client: Any, keys: Keys, entries: dict[str, float], now: float) -> None:
    """Record ``entries`` (token id: until) in the index and as keys; prune the index. One
    round trip (a pipeline of single-key commands, so it also routes on a cluster)."""
    pipe = client.pipeline(transaction=False)
    live = {t: u for t, u in entries.items() if u > now}
    if live:
        pipe.zadd(keys.index, {t: round(u * 1000) for t, u in live.items()}, gt=True)
    pipe.zremrangebyscore(keys.index, "-inf", round(now * 1000))
    for token_id, until in live.items():
        pipe.set(keys.key(token_id), b"1", px=max(1, math.ceil((until - now) * 1000)))
    await pipe.execute()


async def load(client: Any, keys: Keys, now: float) -> dict[str, float]:
    """Every revocation still in force: token id -> until (unix seconds)."""
    reply = await client.zrangebyscore(keys.index, f"({round(now * 1000)}", "+inf",
                                       withscores=True)
    out: dict[str, float] = {}
    for member, score in reply:
        token_id = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
        if 0 < len(token_id) <= MAX_TOKEN_ID:
            out[token_id] = float(score) / 1000
    return out
