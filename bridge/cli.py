"""``callbridge``: serve, demo, token, simulate, tail, admin, bench."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Protocol

from bridge import __version__
from bridge.config.model import Config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"callbridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the bridge from a configuration file")
    serve.add_argument("--config", metavar="FILE.toml",
                       help="configuration file (environment variables override it)")

    demo = commands.add_parser(
        "demo", help="run the bridge on the embedded broker against the AntBuddy simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="bridge port (0: any free port)")
    demo.add_argument("--rate", type=float, default=1.0, help="simulated calls per second")
    demo.add_argument("--extensions", type=int, default=10, help="extensions 1001, 1002, ...")
    demo.add_argument("--dialect", default="auto",
                      choices=["auto", "socketio-0.9", "kazoo-json", "engineio-4"])
    demo.add_argument("--token-lifetime", type=float, default=300.0,
                      help="seconds the simulator's upstream tokens live")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--quiet", action="store_true", help="do not print events")
    demo.add_argument("--all", action="store_true",
                      help="also run the Quickom, ePacific and Kompaas simulators")

    token = commands.add_parser("token", help="mint a client token for /ws")
    token.add_argument("--sub", required=True, help="who the token is for")
    token.add_argument("--channels", nargs="+", required=True, metavar="PATTERN",
                       help="channel patterns the token grants, e.g. 'calls:acme:*'")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    token.add_argument("--config", metavar="FILE.toml",
                       help="read auth.jwt_secret from here (or CALLBRIDGE__AUTH__JWT_SECRET)")

    api = commands.add_parser("api-token", help="mint a token for the HTTP API")
    api.add_argument("--sub", required=True, help="who the token is for")
    api.add_argument("--scopes", nargs="+", required=True,
                     help="calls:read, calls:dial, verifications:write, admin")
    api.add_argument("--tenants", nargs="+", default=["*"], metavar="PATTERN",
                     help="tenants it may act for (patterns; default: all)")
    api.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    api.add_argument("--config", metavar="FILE.toml",
                     help="read auth.jwt_secret from here (or CALLBRIDGE__AUTH__JWT_SECRET)")

    sim = commands.add_parser("simulate", help="run the AntBuddy simulator alone")
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

    tail = commands.add_parser(
        "tail", help="print channels' events from Redis, live or from a position")
    tail.add_argument("channels", nargs="+", metavar="CHANNEL", help="e.g. calls:acme:1001")
    where = tail.add_mutually_exclusive_group()
    where.add_argument("--from", dest="offset", metavar="OFFSET",
                       help="start after this offset of the current epoch (0: every event kept)")
    where.add_argument("--since", metavar="DURATION",
                       help="start with the events of the last 30s, 10m, 2h, 1d")
    tail.add_argument("--format", default="json", choices=["json", "table"],
                      help="json: one envelope per line; table: a readable row per event")
    tail.add_argument("--group", metavar="NAME",
                      help="read as one worker of this consumer group, acknowledging each event")
    tail.add_argument("--config", metavar="FILE.toml",
                      help="read [broker] url and prefix from here")
    tail.add_argument("--redis", metavar="URL", help="redis:// or redis-cluster:// URL "
                      "(instead of the configuration's [broker] url)")
    tail.add_argument("--prefix", help="key prefix (instead of the configuration's)")

    admin = commands.add_parser(
        "admin", help="operate a running instance through its /admin API (docs/admin.md)")
    from bridge.admin.cli import add_arguments as _admin_arguments
    _admin_arguments(admin)

    # -- bench ---------------------------------------------------------------------------------
    bench = commands.add_parser(
        "bench", help="benchmark callbridge against a bare websockets server and python-socketio")
    from bridge.bench.runner import add_arguments as _bench_arguments
    _bench_arguments(bench)
    # -- end bench -----------------------------------------------------------------------------

    args = parser.parse_args(argv)
    if args.command == "bench":
        from bridge.bench.runner import main as bench_main
        return bench_main(args, list(sys.argv[1:] if argv is None else argv))
    if args.command == "token":
        return _token(args)
    if args.command == "api-token":
        return _api_token(args)
    if args.command == "admin":
        from bridge.admin.cli import main as admin_main
        return admin_main(args)
    runner = {"serve": _serve, "demo": _demo, "simulate": _simulate, "tail": _tail}[args.command]
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130


def _load(path: str | None) -> Config:
    from bridge.config.load import ConfigError, load_config

    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        print(f"callbridge: configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _token(args: argparse.Namespace) -> int:
    from bridge.auth.tokens import mint
    from bridge.events.channels import is_valid_pattern

    bad = [p for p in args.channels if not is_valid_pattern(p)]
    if bad:
        print(f"callbridge token: invalid channel pattern(s): {', '.join(bad)}", file=sys.stderr)
        return 2
    config = _load(args.config)
    print(mint(config.auth.jwt_secret.get_secret_value(), sub=args.sub,
               channels=args.channels, ttl=args.ttl))
    return 0


def _api_token(args: argparse.Namespace) -> int:
    from bridge.auth.tokens import mint_api

    config = _load(args.config)
    try:
        token = mint_api(config.auth.jwt_secret.get_secret_value(), sub=args.sub,
                         scopes=args.scopes, tenants=args.tenants, ttl=args.ttl)
    except ValueError as exc:
        print(f"callbridge api-token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _tune_gc() -> None:
    """Keep the collector's pauses off the delivery path.

    Everything alive once serving starts (modules, configuration, the app) is moved out of the
    collector's sight, and young collections run less often: with thousands of connections a
    full collection otherwise stalls the event loop for a noticeable fraction of a second.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def _stop_on_signals(servers: Sequence[_Stoppable], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def handler() -> None:
        stop.set()
        for server in servers:
            server.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


#: Seconds past ``[server] shutdown_timeout`` after which a stuck shutdown is cut short.
SHUTDOWN_OVERRUN = 3.0


async def _serve(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.http.app import build_app
    from bridge.http.serving import bridge_server

    config = _load(args.config)
    logs.setup(config.logging.level)
    app = build_app(config, config_path=args.config)
    server = bridge_server(app, config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.TimerHandle] = []

    def shutdown() -> None:
        if stopping:
            return  # already on its way out, within the deadline
        # Leases first, so another instance takes the streams over while clients are closed.
        app.state.service.begin_shutdown()
        server.stop()
        stopping.append(loop.call_later(config.server.shutdown_timeout + SHUTDOWN_OVERRUN,
                                        _overrun, config.server.shutdown_timeout))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown)
    # SIGHUP: re-read the configuration file and apply its account blocks (docs/operations.md).
    loop.add_signal_handler(signal.SIGHUP, app.state.admin.reloader.request)
    await server.start()
    _tune_gc()
    print(f"callbridge serving on {server.url}", flush=True)
    await server.wait()
    for handle in stopping:
        handle.cancel()
    return 0


def _overrun(timeout: float) -> None:
    """The shutdown outlived its deadline (something hangs): exit now, with status 1."""
    import logging

    logging.getLogger("bridge.core.service").error(
        "shutdown not finished %.0fs after the signal: exiting now", timeout + SHUTDOWN_OVERRUN)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(1)


async def _tail(args: argparse.Namespace) -> int:
    from bridge.consumer.tail import parse_since, starts, tail
    from bridge.events.channels import is_valid_channel

    bad = [c for c in args.channels if not is_valid_channel(c)]
    if bad:
        print(f"callbridge tail: invalid channel(s): {', '.join(bad)}", file=sys.stderr)
        return 2
    url, prefix = args.redis, args.prefix
    if url is None or prefix is None:
        config = _load(args.config)
        url = url or config.broker.url
        prefix = config.broker.prefix if prefix is None else prefix
    if not url.startswith(("redis://", "rediss://", "redis-cluster://")):
        print("callbridge tail: needs a Redis broker (--redis URL, or [broker] url)",
              file=sys.stderr)
        return 2
    if args.group is not None and (args.offset or args.since):
        print("callbridge tail: --group reads from the group's position, not --from/--since",
              file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since) if args.since else None
        start = await starts(url, prefix, args.channels, offset=args.offset, since=since)
    except ValueError as exc:
        print(f"callbridge tail: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    _stop_on_signals([], stop)
    return await tail(url, args.channels, prefix=prefix, start=start, fmt=args.format,
                      group=args.group, out=sys.stdout, stop=stop)


async def _simulate(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.http.serving import AppServer
    from bridge.simulator.app import Simulator, SimulatorSettings

    logs.setup("INFO")
    settings = SimulatorSettings(
        extensions=[str(1001 + i) for i in range(args.extensions)],
        accounts=args.accounts, calls_per_second=args.rate,
        token_lifetime=args.token_lifetime, expire_format=args.expire_format,
        expiry_policy=args.expiry_policy,
    )
    if args.app:
        settings.apps = dict(args.app)
    server = AppServer(Simulator(settings).build_app(), host=args.host, port=args.port)
    _stop_on_signals([server], asyncio.Event())
    await server.start()
    print(f"AntBuddy simulator on {server.url} (oapi) and {server.ws_url} (signals)", flush=True)
    await server.wait()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.simulator.demo import run_demo

    logs.setup("WARNING", json=False)
    stop = asyncio.Event()
    return await run_demo(args, stop, lambda servers: _stop_on_signals(servers, stop),
                          jwt_secret=secrets.token_urlsafe(32))


if __name__ == "__main__":
    raise SystemExit(main())
