"""``callbridge simulate``: the AntBuddy simulator alone (with ``--all``, the Quickom, ePacific
and Kompaas fakes too), announcing what it accepts and the configuration blocks that point
``callbridge serve`` at it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys

from bridge.cli import common

DIALECTS = ["socketio-0.9", "kazoo-json", "engineio-4"]


def register(commands: common.Commands) -> None:
    sim = common.add_command(
        commands, "simulate", "run the AntBuddy simulator alone (--all: every provider's), "
        "printing the [[antbuddy]] block to paste into a configuration")
    sim.add_argument("--host", default="127.0.0.1", help="address the simulator listens on")
    sim.add_argument("--port", type=int, default=8090,
                     help="port of the oapi and the signal websocket (0: any free port)")
    sim.add_argument("--tenant", default="demo",
                     help="the tenant named in the printed configuration blocks")
    sim.add_argument("--rate", type=float, default=1.0, help="simulated calls per second")
    sim.add_argument("--extensions", type=int, default=10,
                     help="how many extensions (1001, 1002, ...)")
    sim.add_argument("--accounts", nargs="+", default=["acct-demo"], metavar="ACCOUNT_ID",
                     help="the AntBuddy accounts it simulates (one [[antbuddy]] block each)")
    sim.add_argument("--app", nargs=2, action="append", metavar=("APP_ID", "APP_SECRET"),
                     help="an application the oapi accepts, instead of the built-in one "
                     "(repeatable; the blocks use the first)")
    sim.add_argument("--token-lifetime", type=float, default=3600.0,
                     help="seconds the oapi's tokens live")
    sim.add_argument("--expire-format", default="ttl", choices=["ttl", "unix", "unix_ms", "iso"],
                     help="how the oapi writes a token's expiry: seconds left, unix seconds or "
                     "milliseconds, or an ISO date")
    sim.add_argument("--expiry-policy", default="subscribe", choices=["subscribe", "disconnect"],
                     help="what the signal websocket does when a token expires: refuse new "
                     "subscriptions, or disconnect")
    sim.add_argument("--dialects", nargs="+", default=DIALECTS, choices=DIALECTS,
                     metavar="DIALECT", help="signal websocket dialects it speaks: "
                     + ", ".join(DIALECTS))
    sim.add_argument("--all", action="store_true",
                     help="also run the Quickom, ePacific and Kompaas simulators, each on a "
                     "free port, and print their blocks")
    sim.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.events.channels import SEGMENT_SAFE
    from bridge.http.serving import AppServer
    from bridge.simulator.app import Simulator, SimulatorSettings
    from bridge.simulator.blocks import accepts, antbuddy_blocks, banner
    from bridge.simulator.suite import ProviderFakes

    if not 0 <= args.port <= 65535:
        return _usage(f"--port {args.port} is not a port: 0 (any free port) to 65535")
    if args.extensions < 1:
        return _usage(f"--extensions {args.extensions}: at least 1")
    if SEGMENT_SAFE.fullmatch(args.tenant) is None:
        return _usage(f"--tenant {args.tenant!r}: a tenant is made of A-Z a-z 0-9 _ . + -")
    logs.setup("DEBUG" if args.debug else "WARNING", json=False)
    settings = SimulatorSettings(
        extensions=[str(1001 + i) for i in range(args.extensions)],
        accounts=args.accounts, calls_per_second=args.rate,
        token_lifetime=args.token_lifetime, expire_format=args.expire_format,
        expiry_policy=args.expiry_policy, dialects=tuple(args.dialects),
    )
    if args.app:
        settings.apps = dict(args.app)
    problem = _cannot_listen(args.host, args.port)
    if problem is not None:
        print(f"callbridge simulate: cannot listen on {args.host}:{args.port}: {problem}; "
              "choose another with --port (0: any free port)", file=sys.stderr)
        return common.EXIT_LISTEN
    server = AppServer(Simulator(settings).build_app(), host=args.host, port=args.port)
    fakes = ProviderFakes(args.tenant) if args.all else None
    stop = asyncio.Event()
    common.stop_on_signals([], stop)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(server)
        summary = [accepts(settings, url=server.url, ws_url=server.ws_url)]
        blocks = {"antbuddy": antbuddy_blocks(settings, url=server.url, ws_url=server.ws_url,
                                              tenant=args.tenant)}
        if fakes is not None:
            await stack.enter_async_context(fakes.running())
            urls = fakes.urls()
            summary += [f"Quickom simulator on {urls['quickom']}",
                        f"ePacific simulator on {urls['epacific']} (new CDRs and "
                        f"registrations every {fakes.interval:g}s)",
                        f"Kompaas simulator on {urls['kompaas']}"]
            blocks.update(fakes.config())
        print(banner(summary, blocks), flush=True)
        print("Ctrl-C stops.", flush=True)
        await stop.wait()
    return common.EXIT_OK


def _usage(message: str) -> int:
    print(f"callbridge simulate: {message}", file=sys.stderr)
    return common.EXIT_CONFIG


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the simulator could not listen on ``host:port`` (None when it can), tried with the
    options the server itself uses."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"unknown host ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
