"""Reloading the configuration file into a running service (SIGHUP, ``POST /admin/reload``).

The file is read again with the process's environment overrides and validated as at start-up.
A file that does not validate changes nothing: the error, one line per problem naming its key
(secrets never echoed), goes to the log and to the API caller, and the running configuration
stays. A valid file's account blocks are applied by :meth:`bridge.core.service.Service.reload`;
sections that cannot change while running are reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from bridge.config.changes import Changes
from bridge.config.load import ConfigError, load_config
from bridge.config.model import Config
from bridge.core.service import ReloadRefused, Service

log = logging.getLogger("bridge.reload")


class ReloadError(Exception):
    """Nothing was applied. ``code``: ``invalid_config`` (the file does not validate; see
    ``problems``) or ``unavailable`` (no file to read, or the service is not running)."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or []


def file_loader(path: str | None) -> Callable[[], Config] | None:
    """How to read the configuration again: ``path`` with the environment; None without a
    file (an app built from a ``Config`` in code has nothing to reload)."""
    if path is None:
        return None
    return lambda: load_config(path, os.environ)


class Reloader:
    """Serializes reloads of one service and reports each outcome in the log."""

    def __init__(self, service: Service, load: Callable[[], Config] | None, *,
                 on_change: Callable[[], None] = lambda: None) -> None:
        """``on_change`` runs after a reload changed the accounts (the API re-mounts the
        providers' endpoints)."""
        self.service = service
        self._load = load
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._again = False

    async def reload(self) -> Changes:
        """Read, validate and apply the file; raises :class:`ReloadError` when nothing was."""
        if self._load is None:
            raise ReloadError("unavailable", "this instance was not started from a "
                              "configuration file: there is nothing to reload")
        try:
            config = self._load()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s",
                      "; ".join(exc.problems))
            raise ReloadError("invalid_config", "configuration error: " + "; ".join(exc.problems),
                              exc.problems) from None
        try:
            changes = await self.service.reload(config)
        except ReloadRefused as exc:
            log.warning("reload refused: %s", exc)
            raise ReloadError("unavailable", str(exc)) from None
        if changes.applies_anything:
            self._on_change()
        log.info("reload applied: %s", changes.summary())
        for section in changes.restart_needed:
            log.warning("reload: [%s] differs from the running configuration; it takes effect "
                        "only after a restart (the running values stay)", section)
        return changes

    def request(self) -> None:
        """Reload in the background (a signal handler); a request made while a reload runs
        makes it run once more afterwards, so the latest file is the one applied."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="reload")
        else:
            self._again = True

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.reload()
            except ReloadError:
                pass  # logged
            except Exception:
                log.exception("reload failed")
            if not self._again:
                return

    async def close(self) -> None:
        """Cancel a background reload, if any, and wait for it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
