"""The simulator's auth-token store: issues, checks and expires AntBuddy-style tokens.

Plain state, no I/O: the oapi routes (:mod:`bridge.simulator.oapi`) serve it over HTTP and the
simulated call-signal websocket calls :meth:`TokenStore.check`. Faults for tests and demos are
queued with :meth:`TokenStore.fail_next` and :meth:`TokenStore.stall_next`.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

EXPIRE_FORMATS = ("ttl", "unix", "unix_ms", "iso")
MAX_TOKENS = 10_000  # oldest tokens are forgotten first beyond this


class TokenStore:
    """Tokens for the apps in ``apps`` (app id -> app secret).

    ``lifetime`` is each token's life in seconds; ``expire_format`` how the answer's ``expire``
    field encodes the expiry: ``ttl`` (seconds to live), ``unix``, ``unix_ms`` or ``iso``.
    """

    def __init__(
        self,
        apps: dict[str, str],
        *,
        lifetime: float = 3600.0,
        expire_format: str = "ttl",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if expire_format not in EXPIRE_FORMATS:
            raise ValueError(f"expire_format must be one of {EXPIRE_FORMATS}")
        self.apps = dict(apps)
        self.lifetime = lifetime
        self.expire_format = expire_format
        self.clock = clock
        #: auth_token requests served (any outcome); counted by the oapi routes.
        self.requests = 0
        #: the JSON body of the latest auth_token request (``{}`` when it had none).
        self.last_body: dict[str, Any] | None = None
        #: called with (app id, token) for every token issued, in order (observers: the
        #: benchmarks count refreshes and look for tokens in the logs).
        self.on_issue: list[Callable[[str, str], None]] = []
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (app id, expires_at)
        self._faults: deque[tuple[int, float]] = deque()  # (status or 0, stall seconds)

    def __repr__(self) -> str:
        return f"TokenStore(apps={sorted(self.apps)}, tokens={len(self._tokens)})"

    def issue(self, app_id: str) -> tuple[str, float]:
        """A new token for ``app_id`` and its expiry (Unix seconds)."""
        now = self.clock()
        self._prune(now)
        token = secrets.token_urlsafe(32)
        expires_at = now + self.lifetime
        self._tokens[token] = (app_id, expires_at)
        while len(self._tokens) > MAX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        for observer in self.on_issue:
            observer(app_id, token)
        return token, expires_at

    def check(self, token: str) -> bool:
        """True when ``token`` was issued here and has not expired."""
        expires_at = self.expires_at(token)
        return expires_at is not None and self.clock() < expires_at

    def expires_at(self, token: str) -> float | None:
        entry = self._tokens.get(token)
        return entry[1] if entry else None

    def app_of(self, token: str) -> str | None:
        entry = self._tokens.get(token)
        return entry[0] if entry else None

    def expire_value(self, expires_at: float) -> int | float | str:
        """``expires_at`` encoded as this store's ``expire_format`` says."""
        if self.expire_format == "ttl":
            ttl = round(max(0.0, expires_at - self.clock()), 3)
            return int(ttl) if ttl == int(ttl) else ttl
        if self.expire_format == "unix":
            return int(expires_at)
        if self.expire_format == "unix_ms":
            return int(expires_at * 1000)
        instant = datetime.fromtimestamp(expires_at, timezone.utc)
        return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` auth_token requests with ``status`` and a JSON error."""
        self._faults.extend((status, 0.0) for _ in range(count))

    def stall_next(self, count: int, seconds: float) -> None:
        """Hold each of the next ``count`` requests ``seconds`` before answering normally."""
        self._faults.extend((0, seconds) for _ in range(count))

    def take_fault(self) -> tuple[int, float]:
        """The next queued fault as ``(status, stall)``; ``(0, 0.0)`` when none is queued."""
        return self._faults.popleft() if self._faults else (0, 0.0)

    def _prune(self, now: float) -> None:
        for token in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
            del self._tokens[token]
