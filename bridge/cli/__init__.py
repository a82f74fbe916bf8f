"""The ``callbridge`` command line: one module per command, each adding its own parser.

A command's heavy modules are imported only when it runs, so ``callbridge --help`` and the
light commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.cli import check, common, demo, init, serve, simulate, tail, tokens

DESCRIPTION = """\
callbridge: a realtime call-signal bridge. It keeps provider links open (AntBuddy, Quickom,
ePacific, Kompaas), turns their signals into one event schema and fans the events out over
Redis and its own websocket /ws. Start with: callbridge demo (no account, no Redis needed)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbridge", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"callbridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="callbridge COMMAND --help tells more")
    init.register(commands)
    check.register(commands)
    serve.register(commands)
    demo.register(commands)
    tokens.register(commands)
    simulate.register(commands)
    tail.register(commands)
    _admin(commands)
    _bench(commands)
    return parser


def _admin(commands: common.Commands) -> None:
    from bridge.admin.cli import add_arguments, main

    admin = common.add_command(
        commands, "admin", "operate a running instance through its /admin API (docs/admin.md)")
    add_arguments(admin)
    admin.set_defaults(run=main)


def _bench(commands: common.Commands) -> None:
    from bridge.bench.runner import add_arguments, main

    bench = common.add_command(
        commands, "bench", "benchmark callbridge against a bare websockets server and "
        "python-socketio (docs/performance.md)")
    add_arguments(bench)
    bench.set_defaults(run=lambda args: main(args, args.argv))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return common.run_command(args)
