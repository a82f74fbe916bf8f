"""``callbridge simulate``: the AntBuddy simulator alone."""

from __future__ import annotations

import argparse
import asyncio

from bridge.cli import common


def register(commands: common.Commands) -> None:
    sim = common.add_command(commands, "simulate", "run the AntBuddy simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--rate", type=float, default=1.0, help="calls per second")
    sim.add_argument("--extensions", type=int, default=10)
    sim.add_argument("--accounts", nargs="+", default=["acct-demo"])
    sim.add_argument("--app", nargs=2, action="append", metavar=("APP_ID", "APP_SECRET"),
                     help="an application the oapi accepts (repeatable)")
    sim.add_argument("--token-lifetime", type=float, default=3600.0)
    sim.add_argument("--expire-format", default="ttl", choices=["ttl", "unix", "unix_ms", "iso"])
    sim.add_argument("--expiry-policy", default="subscribe", choices=["subscribe", "disconnect"])
    sim.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.http.serving import AppServer
    from bridge.simulator.app import Simulator, SimulatorSettings

    logs.setup("DEBUG" if args.debug else "INFO")
    settings = SimulatorSettings(
        extensions=[str(1001 + i) for i in range(args.extensions)],
        accounts=args.accounts, calls_per_second=args.rate,
        token_lifetime=args.token_lifetime, expire_format=args.expire_format,
        expiry_policy=args.expiry_policy,
    )
    if args.app:
        settings.apps = dict(args.app)
    server = AppServer(Simulator(settings).build_app(), host=args.host, port=args.port)
    common.stop_on_signals([server], asyncio.Event())
    await server.start()
    print(f"AntBuddy simulator on {server.url} (oapi) and {server.ws_url} (signals)", flush=True)
    await server.wait()
    return common.EXIT_OK
