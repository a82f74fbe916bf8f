"""The liveness probe's clock for a pub/sub subscription: when to probe, when one is overdue.

A subscription can die silently (a proxy or a NAT forgets the connection, the server stops
writing to it): the socket stays open and nothing arrives. The keeper publishes a probe on a
channel of its own and expects it back on the subscription. No I/O here.
"""

from __future__ import annotations

import time
from typing import Any


class Probe:
    """The liveness probe's clock (sans-I/O).

    The reader asks :meth:`step` before each read. ``("send", payload)``: publish ``payload`` on
    the probe channel, then call :meth:`sent`. ``("fail", 0)``: the last probe did not come back
    in time; the subscription is dead. ``("wait", seconds)``: nothing to do for that long. Feed
    every message of the probe channel to :meth:`received`, every other one to :meth:`activity`.
    """

    def __init__(self, interval: float | None, timeout: float) -> None:
        """``interval=None`` turns probing off: :meth:`step` always answers "wait"."""
        self.interval = interval
        self.timeout = timeout
        self.failures = 0
        #: Unix time of the last probe that came back, None before the first.
        self.last_ok: float | None = None
        self._seq = 0
        self._sent_at: float | None = None
        self._next = 0.0

    def reset(self, now: float) -> None:
        """A new connection: forget the probe in flight, probe it at once."""
        self._sent_at = None
        self._next = now

    def step(self, now: float) -> tuple[str, Any]:
        if self.interval is None:
            return "wait", float("inf")
        if self._sent_at is not None:
            left = self._sent_at + self.timeout - now
            if left > 0:
                return "wait", left
            self._sent_at = None
            self.failures += 1
            return "fail", 0.0
        if now < self._next:
            return "wait", self._next - now
        self._next = now + self.interval
        self._seq += 1
        return "send", str(self._seq).encode()

    def sent(self, now: float) -> None:
        self._sent_at = now

    def activity(self, now: float) -> None:
        """Some other message arrived: the subscription is alive, only busy.

        Under load the probe's echo can queue behind seconds of events; counting the timeout
        from the latest message means only a connection that delivers nothing at all fails.
        """
        if self._sent_at is not None:
            self._sent_at = now

    def received(self, payload: bytes) -> None:
        if self._sent_at is not None and payload == str(self._seq).encode():
            self._sent_at = None
            self.last_ok = time.time()
