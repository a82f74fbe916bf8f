"""``callbridge serve``: run the bridge from a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from bridge.cli import common

#: Seconds past ``[server] shutdown_timeout`` after which a stuck shutdown is cut short.
SHUTDOWN_OVERRUN = 3.0


def register(commands: common.Commands) -> None:
    serve = common.add_command(commands, "serve", "run the bridge from a configuration file")
    serve.add_argument("--config", metavar="FILE.toml",
                       help="configuration file; CALLBRIDGE__SECTION__KEY environment "
                            "variables override it (docs/configuration.md)")
    serve.add_argument("--check", action="store_true",
                       help="read the configuration as callbridge check does, print what "
                            "would run, and exit (0 valid, 2 not)")
    serve.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from bridge.common import logs
    from bridge.http.app import build_app
    from bridge.http.serving import CannotListen, StartupFailed, bridge_server

    if args.check:
        from bridge.cli.check import check

        return await check(args.config, debug=args.debug)
    config = common.load(args.config)
    logs.setup("DEBUG" if args.debug else config.logging.level)
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
    try:
        await server.start()  # listens first: a busy port fails before anything starts
    except CannotListen as exc:
        raise common.cannot_listen(
            exc, port_option="[server] port or CALLBRIDGE__SERVER__PORT",
            host_option="[server] host or CALLBRIDGE__SERVER__HOST") from exc
    except StartupFailed as exc:
        raise common.startup_failed(args.command, exc.error, args.debug) from exc.error
    common.tune_gc()
    print(f"callbridge serving on {server.url}", flush=True)
    await server.wait()
    for handle in stopping:
        handle.cancel()
    return common.EXIT_OK


def _overrun(timeout: float) -> None:
    """The shutdown outlived its deadline (something hangs): exit now, with status 1."""
    logging.getLogger("bridge.core.service").error(
        "shutdown not finished %.0fs after the signal: exiting now", timeout + SHUTDOWN_OVERRUN)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(common.EXIT_FAILURE)
