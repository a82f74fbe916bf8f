"""What every command shares: parsers with defaults shown, configuration loading, signals,
exit codes."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

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


def run_command(args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int | Awaitable[int]] = args.run
    try:
        result = run(args)
        if asyncio.iscoroutine(result):
            status: int = asyncio.run(result)
            return status
        assert isinstance(result, int)
        return result
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


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
