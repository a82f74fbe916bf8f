"""``callbridge serve``: run the bridge from a configuration file, in this process or in
``[server] workers`` processes sharing its port (:mod:`bridge.cli.workers`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any

from bridge.cli import common, workers
from bridge.cli.worker_link import WorkerLink

if TYPE_CHECKING:
    from bridge.config.model import Config
    from bridge.http.serving import AppServer

#: Seconds past ``[server] shutdown_timeout`` after which a stuck shutdown is cut short.
SHUTDOWN_OVERRUN = 3.0
#: ``--workers`` reaches the configuration (and every worker) as this override would.
WORKERS_VARIABLE = "CALLBRIDGE__SERVER__WORKERS"


def register(commands: common.Commands) -> None:
    serve = common.add_command(commands, "serve", "run the bridge from a configuration file")
    serve.add_argument("--config", metavar="FILE.toml",
                       help="configuration file; CALLBRIDGE__SECTION__KEY environment "
                            "variables override it (docs/configuration.md)")
    serve.add_argument("--check", action="store_true",
                       help="read the configuration as callbridge check does, print what "
                            "would run, and exit (0 valid, 2 not)")
    serve.add_argument("--workers", type=_count, metavar="N",
                       help="worker processes serving the one port, each a full instance on "
                            "the shared Redis (Linux; docs/operations.md); the same as "
                            "CALLBRIDGE__SERVER__WORKERS=N: overrides [server] workers "
                            "(default 1)")
    # A worker started by the supervising serve (bridge/cli/workers.py); not for users.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-status-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(run=run)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, got {text!r}")
    return value


async def run(args: argparse.Namespace) -> int:
    if args.workers is not None:
        os.environ[WORKERS_VARIABLE] = str(args.workers)
    if args.check:
        from bridge.cli.check import check

        return await check(args.config, debug=args.debug)
    if args.worker_index is not None:
        return await _worker(args)
    config = common.load(args.config)
    if config.server.workers > 1:
        from bridge.common import logs

        logs.setup("DEBUG" if args.debug else config.logging.level)
        return await workers.supervise(config, args, SHUTDOWN_OVERRUN)
    return await serve(args, config)


async def _worker(args: argparse.Namespace) -> int:
    """One worker of a supervising serve: its start reported on the status pipe, not stderr
    (the supervisor tells the user once, whichever worker failed)."""
    from bridge.config.load import ConfigError, load_config

    link = WorkerLink(args.worker_index, args.worker_status_fd)
    try:
        try:
            config = load_config(args.config, os.environ)
        except ConfigError as exc:  # the file changed since the supervisor read it
            raise common.fail("configuration error: " + "; ".join(exc.problems),
                              common.EXIT_CONFIG) from None
        return await serve(args, config, link)
    except common.CommandFailed as exc:
        failure, cause = exc, exc.__cause__
    except Exception as exc:
        failure, cause = common.unexpected(args.command, exc, args.debug), exc
    if args.debug and cause is not None:
        print("".join(traceback.format_exception(cause)), end="", file=sys.stderr)
    link.failed(failure)
    return failure.status


async def serve(args: argparse.Namespace, config: Config,
                link: WorkerLink | None = None) -> int:
    """Serve until a signal; ``link``: this process is a worker of a supervising serve."""
    from bridge.common import logs
    from bridge.http.app import build_app
    from bridge.http.serving import CannotListen, StartupFailed, bridge_server

    logs.setup("DEBUG" if args.debug else config.logging.level)
    app = build_app(config, config_path=args.config)
    server = bridge_server(app, config, reuse_port=link is not None)
    metrics = _metrics_server(app, config, link.index if link else 0)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.TimerHandle] = []

    def shutdown() -> None:
        if stopping:
            return  # already on its way out, within the deadline
        # Leases first, so another instance takes the streams over while clients are closed.
        app.state.service.begin_shutdown()
        server.stop()
        if metrics is not None:
            metrics.stop()
        stopping.append(loop.call_later(config.server.shutdown_timeout + SHUTDOWN_OVERRUN,
                                        _overrun, config.server.shutdown_timeout))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown)
    # SIGHUP: re-read the configuration file and apply its account blocks (docs/operations.md).
    loop.add_signal_handler(signal.SIGHUP, app.state.admin.reloader.request)
    if link is not None:
        link.on_supervisor_gone(shutdown)
    try:
        if metrics is not None:
            _bind(metrics, "[server] metrics_port_base")
        await server.start()  # listens first: a busy port fails before anything starts
    except CannotListen as exc:
        raise common.cannot_listen(
            exc, port_option="[server] port or CALLBRIDGE__SERVER__PORT",
            host_option="[server] host or CALLBRIDGE__SERVER__HOST") from exc
    except StartupFailed as exc:
        raise common.startup_failed(args.command, exc.error, args.debug) from exc.error
    if metrics is not None:
        await metrics.start()
    common.tune_gc()
    if link is not None:
        link.ready()
    else:
        print(f"callbridge serving on {server.url}", flush=True)
    await server.wait()
    if metrics is not None:
        await metrics.close(SHUTDOWN_OVERRUN)
    for handle in stopping:
        handle.cancel()
    return common.EXIT_OK


def _metrics_server(app: Any, config: Config, index: int) -> AppServer | None:
    """This worker's own ``/metrics`` listener on ``metrics_port_base + index``, if set."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from bridge.http.metrics import metrics_endpoint
    from bridge.http.serving import AppServer

    base = config.server.metrics_port_base
    if not base:
        return None
    only = Starlette(routes=[Route("/metrics", metrics_endpoint(app.state.metrics))])
    return AppServer(only, host=config.server.host, port=base + index, graceful_timeout=1.0)


def _bind(server: AppServer, option: str) -> None:
    from bridge.http.serving import CannotListen

    try:
        server.bind()
    except CannotListen as exc:
        raise common.cannot_listen(exc, port_option=option,
                                   host_option="[server] host") from exc


def _overrun(timeout: float) -> None:
    """The shutdown outlived its deadline (something hangs): exit now, with status 1."""
    logging.getLogger("bridge.core.service").error(
        "shutdown not finished %.0fs after the signal: exiting now", timeout + SHUTDOWN_OVERRUN)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(common.EXIT_FAILURE)
