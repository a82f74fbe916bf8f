"""A worker's end of its supervising ``callbridge serve`` (:mod:`bridge.cli.workers`).

The supervisor hands each worker a pipe (``--worker-status-fd``) on which the worker says, in
one JSON line, that it serves (``{"ready": true}``) or why it could not start (``{"status": 4,
"line": "callbridge: ..."}``): the supervisor tells the user once, whichever worker failed. The
worker's standard input is a pipe from the supervisor that is never written: its end means the
supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import orjson

from bridge.cli import common

log = logging.getLogger("bridge.cli.workers")


class WorkerLink:
    """A worker's end of its supervisor: the status pipe and the standard-input lifeline."""

    def __init__(self, index: int, status_fd: int) -> None:
        self.index = index
        self._fd = status_fd

    def ready(self) -> None:
        self._send({"ready": True})

    def failed(self, failure: common.CommandFailed) -> None:
        self._send({"status": failure.status, "line": str(failure)})

    def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            os.write(self._fd, orjson.dumps(message) + b"\n")

    def on_supervisor_gone(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` once standard input (the supervisor's pipe) closes."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(0, 512)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
                log.warning("worker %d: the supervising process is gone; stopping",
                            self.index)
                stop()

        loop.add_reader(0, readable)
