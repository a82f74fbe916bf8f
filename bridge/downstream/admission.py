"""Who may open a connection: allowed Origins and connections per client address.

Both checks run before the websocket handshake is accepted. A refused Origin gets HTTP 403
(the handshake is declined); an address over its connection limit is accepted and closed at once
with 1013 so the client learns the code and backs off.
"""

from __future__ import annotations

from typing import Iterable


class OriginPolicy:
    """``allowed`` exact ``scheme://host[:port]`` origins; empty allows every origin.

    A request without an Origin header (not a browser) is always allowed: Origin protects
    browsers from cross-site pages, it does not authenticate anyone; the token does that.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed = frozenset(o.rstrip("/").lower() for o in allowed)

    def allows(self, origin: str | None) -> bool:
        if not self._allowed or origin is None:
            return True
        return origin.rstrip("/").lower() in self._allowed


class ConnectionCounter:
    """Open connections per client address, bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        """Count one more connection from ``address``; False (nothing counted) at the limit."""
        count = self._open.get(address, 0)
        if count >= self.limit:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)

    def count(self, address: str) -> int:
        return self._open.get(address, 0)
