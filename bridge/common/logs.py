"""Logging: one JSON object per line on stderr, every record passed through the redaction filter."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from bridge.common.redact import RedactingFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        return orjson.dumps(entry).decode()


def setup(level: str = "INFO", *, json: bool = True) -> None:
    """Route every logger (uvicorn's too) through one redacting handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel("WARNING")
    logging.getLogger("httpx").setLevel("WARNING")
    # At DEBUG the websockets library dumps every frame (uvicorn hands it "uvicorn.error" for
    # the server side): client auth messages, upstream subscribe frames, tokens echoed back.
    # It cuts each frame in the middle, so a token may show only in part, which redaction
    # cannot recognise. Those loggers never go below INFO.
    for name in ("websockets", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, root.level))
    # uvicorn logs two or three INFO lines per websocket connection; they are DEBUG here
    # (the periodic summary of bridge.downstream.tally counts them instead).
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.filters[:] = [f for f in uvicorn_error.filters
                                if not isinstance(f, (PerConnectionLines, LifecycleLines))]
    uvicorn_error.addFilter(PerConnectionLines(root))
    uvicorn_error.addFilter(LifecycleLines(root))


class PerConnectionLines(logging.Filter):
    """Turns the server library's per-connection lines into DEBUG records: kept when the root
    logger is at DEBUG, dropped otherwise."""

    _MESSAGES = frozenset(('%s - "WebSocket %s" [accepted]', "connection open",
                           "connection closed"))

    def __init__(self, root: logging.Logger) -> None:
        super().__init__()
        self._root = root

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in self._MESSAGES:
            return True
        if not self._root.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class LifecycleLines(logging.Filter):
    """Turns the server library's start and stop narration into DEBUG records.

    callbridge says itself that it serves (on stdout), why it could not start (one line from
    the command) and what it did when it stops (one summary line); uvicorn's "Waiting for
    application startup." and the like would only bury those. A failed startup's "Exiting."
    line is among them: the command reports the failure.
    """

    _MESSAGES = frozenset((
        "Started server process [%d]", "Waiting for application startup.",
        "Application startup complete.", "Application startup failed. Exiting.",
        "Shutting down", "Waiting for application shutdown.", "Application shutdown complete.",
        "Application shutdown failed. Exiting.", "Finished server process [%d]",
        "Waiting for connections to close. (CTRL+C to force quit)",
        "Waiting for background tasks to complete. (CTRL+C to force quit)",
    ))

    def __init__(self, root: logging.Logger) -> None:
        super().__init__()
        self._root = root

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in self._MESSAGES:
            return True
        if not self._root.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class Every:
    """At most once per ``seconds``: for a log line about something that may repeat thousands
    of times a second (a full queue, a flood of refused requests), while counters keep the
    exact numbers."""

    __slots__ = ("seconds", "_last")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: float | None = None

    def due(self) -> bool:
        """True the first time, then once ``seconds`` have passed since the last True."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self.seconds:
            return False
        self._last = now
        return True
