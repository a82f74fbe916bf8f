"""``callbridge demo``: the bridge on the embedded broker against the simulators."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets

from bridge.cli import common


def register(commands: common.Commands) -> None:
    demo = common.add_command(
        commands, "demo", "run the bridge on the embedded broker against the AntBuddy "
        "simulator, printing a client token and the events")
    demo.add_argument("--host", default="127.0.0.1", help="address the bridge listens on")
    demo.add_argument("--port", type=int, default=8080, help="bridge port (0: any free port)")
    demo.add_argument("--rate", type=_positive, default=1.0, help="simulated calls per second")
    demo.add_argument("--extensions", type=_at_least_two, default=10,
                      help="how many extensions (1001, 1002, ...; at least 2)")
    demo.add_argument("--dialect", default="auto",
                      choices=["auto", "socketio-0.9", "kazoo-json", "engineio-4"],
                      help="upstream websocket dialect the bridge speaks to the simulator")
    demo.add_argument("--token-lifetime", type=_positive, default=300.0,
                      help="seconds the simulator's upstream tokens live")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--quiet", action="store_true", help="do not print events")
    demo.add_argument("--all", action="store_true",
                      help="also run the Quickom, ePacific and Kompaas simulators")
    demo.set_defaults(run=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"calls need two extensions or more, got {text}")
    return value


async def run(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.http.serving import CannotListen, StartupFailed
    from bridge.simulator.demo import run_demo

    logs.setup("DEBUG" if args.debug else "WARNING", json=False)
    if not args.debug:
        # The service's own INFO lines (started, stopped with its summary) are worth showing.
        logging.getLogger("bridge.core.service").setLevel(logging.INFO)
    stop = asyncio.Event()
    common.stop_on_signals([], stop)
    try:
        return await run_demo(args, stop, jwt_secret=secrets.token_urlsafe(32))
    except CannotListen as exc:
        raise common.cannot_listen(exc, port_option="--port", host_option="--host") from exc
    except StartupFailed as exc:
        raise common.startup_failed(args.command, exc.error, args.debug) from exc.error
