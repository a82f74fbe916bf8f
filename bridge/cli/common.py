"""What every command shares: parsers with defaults shown, configuration loading, signals,
exit codes, and failures told in one line (the traceback only with --debug)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from bridge.common.redact import redact
from bridge.config.model import Config

Commands = Any  # argparse's subparsers action (a private class)

#: Exit statuses (docs/operations.md lists them).
EXIT_OK = 0
#: Something unexpected failed (the traceback is shown with --debug).
EXIT_FAILURE = 1
#: The configuration or the command line is wrong (the message names the key or option).
EXIT_CONFIG = 2
#: The server cannot listen on its address (port in use, no permission).
EXIT_LISTEN = 3
#: Something the command depends on is unreachable or refuses it: Redis at start, or a check
#: of ``callbridge check --online``.
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with every option's default shown (none for flags and options without one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        return super()._get_help_string(action)


def add_command(commands: Commands, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=kwargs.pop("description", help),
        formatter_class=Formatter, **kwargs)
    parser.add_argument("--debug", action="store_true",
                        help="log at DEBUG and show tracebacks of failures")
    return parser


class CommandFailed(Exception):
    """A failure the command tells in one line (``str()``) and exits with ``status``; the
    exception behind it, if any, is the ``__cause__`` (its traceback shown with --debug)."""

    def __init__(self, line: str, status: int) -> None:
        super().__init__(line)
        self.status = status


def fail(message: str, status: int) -> CommandFailed:
    """``callbridge: <message>``, exiting with ``status``."""
    return CommandFailed(f"callbridge: {message}", status)


def unexpected(command: str, error: BaseException, debug: bool) -> CommandFailed:
    """The line for an exception nobody foresaw: its type and its (redacted) message."""
    text = " ".join(redact(str(error)).split())[:300]
    line = f"callbridge {command}: unexpected error: {type(error).__name__}"
    line += f": {text}" if text else ""
    if not debug:
        line += "; run again with --debug for the traceback"
    return CommandFailed(line, EXIT_FAILURE)


def run_command(args: argparse.Namespace) -> int:
    """Run the command; a failure becomes one line on stderr and its exit status."""
    run: Callable[[argparse.Namespace], int | Awaitable[int]] = args.run
    debug = bool(getattr(args, "debug", False))
    if debug:
        from bridge.common import logs

        logs.setup("DEBUG", json=False)  # a command that sets logging up keeps DEBUG itself
    try:
        result = run(args)
        if asyncio.iscoroutine(result):
            status: int = asyncio.run(result)
            return status
        assert isinstance(result, int)
        return result
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CommandFailed as exc:
        return _report(exc, exc.__cause__, debug)
    except Exception as exc:
        return _report(unexpected(args.command, exc, debug), exc, debug)


def _report(failure: CommandFailed, cause: BaseException | None, debug: bool) -> int:
    if debug and cause is not None:
        print(redact("".join(traceback.format_exception(cause))), end="", file=sys.stderr)
    print(str(failure), file=sys.stderr, flush=True)
    return failure.status


def cannot_listen(error: Any, *, port_option: str, host_option: str) -> CommandFailed:
    """The line for a :class:`bridge.http.serving.CannotListen`: the address, the reason and
    what to change (``port_option``/``host_option``: where the user sets them)."""
    where = f"cannot listen on {error.host}:{error.port}: {error.reason}"
    if error.errno == errno.EADDRINUSE:
        step = (f"stop the other process, or choose another port with {port_option} "
                "(0: any free port)")
    elif error.errno == errno.EACCES:
        step = (f"ports below 1024 need privileges: choose a port from 1024 up with "
                f"{port_option} (0: any free port)")
    elif error.errno == errno.EADDRNOTAVAIL:
        step = (f"{error.host} is not an address of this machine: choose another with "
                f"{host_option} (0.0.0.0: every address)")
    else:
        step = f"check {host_option} and {port_option}"
    return fail(f"{where}; {step}", EXIT_LISTEN)


def startup_failed(command: str, error: BaseException, debug: bool) -> CommandFailed:
    """The line for what the app's startup raised (:class:`bridge.http.serving.StartupFailed`):
    an unreachable dependency is told as such (status 4), anything else as unexpected."""
    from bridge.core.service import DependencyUnavailable

    if isinstance(error, DependencyUnavailable):
        return fail(str(error), EXIT_UNAVAILABLE)
    return unexpected(command, error, debug)


def load(path: str | None) -> Config:
    from bridge.config.load import ConfigError, load_config

    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        print(f"callbridge: configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def tune_gc() -> None:
    """Keep the collector's pauses off the delivery path.

    Everything alive once serving starts (modules, configuration, the app) is moved out of the
    collector's sight, and young collections run less often: with thousands of connections a
    full collection otherwise stalls the event loop for a noticeable fraction of a second.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def stop_on_signals(servers: Sequence[Stoppable], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def handler() -> None:
        stop.set()
        for server in servers:
            server.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)
