"""``callbridge serve --workers N``: N worker processes on one port, supervised by this one.

Each worker is a whole callbridge instance (``serve --worker-index I``) listening on the same
address with ``SO_REUSEPORT``, so the kernel spreads new connections over them; they share
events, leases, de-duplication and revocations through Redis like instances on several machines.
The supervising process binds nothing: it checks that the port is free (resolving port 0), then
starts the workers and keeps them running.

- A worker tells its supervisor, on a pipe of its own, that it is serving (``ready``) or why it
  could not start (its status and its one line). A worker that stops without being asked after
  it was ready has crashed: it is started again after a backoff delay, logged in one line.
- A worker that cannot start is not a crash: at first start the whole command stops with that
  worker's status and line (Redis unreachable: 4), as a single process would; a restarted worker
  that fails to start :data:`MAX_START_FAILURES` times in a row does the same.
- SIGTERM and SIGINT go to every worker; each shuts down gracefully within ``[server]
  shutdown_timeout``, and a worker still running past that (plus a margin) is killed. SIGHUP
  goes to every worker, which each re-read the configuration file.
- Each worker holds its standard input open on a pipe from here: when this process dies, the
  pipe closes and the workers shut down instead of serving on unsupervised.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from bridge.cli import common
from bridge.common.backoff import backoff

if TYPE_CHECKING:
    from bridge.config.model import Config

log = logging.getLogger("bridge.cli.workers")

#: Restarts of one worker that may fail at start in a row before everything stops.
MAX_START_FAILURES = 5
#: Seconds a worker has to report that it serves (its own server start allows 30).
READY_TIMEOUT = 60.0
#: Seconds a crashed worker must have served for its restart delay to start small again.
STABLE_AFTER = 30.0
#: Seconds granted past a worker's own shutdown deadline before it is killed.
STOP_MARGIN = 2.0
#: The environment variables through which every worker reads the supervisor's values.
PORT_VARIABLE = "CALLBRIDGE__SERVER__PORT"
INSTANCE_VARIABLE = "CALLBRIDGE__LEASE__INSTANCE_ID"


def shares_ports() -> bool:
    """Whether this system spreads connections over sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def describe_exit(status: int) -> str:
    """A process's exit status in words: ``exit status 4``, ``killed by SIGKILL``."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
        return f"killed by signal {-status}"
    return f"exit status {status}"


@dataclass
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    start_failures: int = 0
    delays: Iterator[float] = field(default_factory=lambda: backoff(0.5, 2.0, 30.0))


def check_port(config: Config) -> int:
    """Fail as a single process would when the port (or a metrics port) is taken; the port,
    0 resolved to a free one that every worker then shares."""
    from bridge.http.serving import CannotListen, listen

    server = config.server
    try:
        with listen(server.host, server.port) as probe:
            port = int(probe.getsockname()[1])
    except CannotListen as exc:
        raise common.cannot_listen(
            exc, port_option="[server] port or CALLBRIDGE__SERVER__PORT",
            host_option="[server] host or CALLBRIDGE__SERVER__HOST") from exc
    for i in range(server.workers if server.metrics_port_base else 0):
        try:
            listen(server.host, server.metrics_port_base + i).close()
        except CannotListen as exc:
            raise common.cannot_listen(
                exc, port_option="[server] metrics_port_base (worker i: base + i)",
                host_option="[server] host") from exc
    return port


class Supervisor:
    """Starts ``[server] workers`` workers and keeps them until a signal or a fatal failure."""

    def __init__(self, config: Config, args: argparse.Namespace, port: int,
                 overrun: float) -> None:
        self.config = config
        self.overrun = overrun
        self.args = args
        self.port = port
        self.slots = [_Slot(i) for i in range(config.server.workers)]
        self.stopping = asyncio.Event()
        self.serving = False  # every worker has been ready once
        self.fatal: common.CommandFailed | None = None
        self.unclean: list[str] = []
        base = config.lease.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self._instance = base[:96]

    def url(self) -> str:
        return f"http://{self.config.server.host}:{self.port}"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        keepers = [asyncio.create_task(self._keep(slot), name=f"worker {slot.index}")
                   for slot in self.slots]
        try:
            await self.stopping.wait()
            await self._stop_all(keepers)
        finally:
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
        if self.fatal is not None:
            raise self.fatal
        if self.unclean:
            log.error("workers stopped uncleanly: %s", "; ".join(self.unclean))
            return common.EXIT_FAILURE
        return common.EXIT_OK

    def _forward(self, sig: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None and slot.ready:
                slot.proc.send_signal(sig)

    async def _stop_all(self, keepers: list[asyncio.Task[None]]) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = self.config.server.shutdown_timeout + self.overrun + STOP_MARGIN
        _, late = await asyncio.wait(keepers, timeout=deadline)
        if not late:
            return
        for slot in self.slots:
            proc = slot.proc
            if proc is not None and proc.returncode is None:
                log.error("worker %d (pid %d) still running %.0fs after the signal: killed",
                          slot.index, proc.pid, deadline)
                self.unclean.append(f"worker {slot.index} killed")
                proc.kill()
        await asyncio.wait(late, timeout=5.0)

    async def _keep(self, slot: _Slot) -> None:
        """Run the slot's worker, again after each crash, until stopping."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            started = loop.time()
            try:
                proc, report = await self._start(slot)
            except OSError as exc:  # no process could be started at all
                self.fatal = common.fail(f"cannot start worker {slot.index}: {exc}",
                                         common.EXIT_FAILURE)
                self.stopping.set()
                return
            was_ready = slot.ready
            status = await proc.wait()
            slot.ready = False
            if self.stopping.is_set():
                if status != 0 and was_ready:
                    self.unclean.append(f"worker {slot.index} {describe_exit(status)}")
                return
            if was_ready:
                if loop.time() - started >= STABLE_AFTER:
                    slot.delays = backoff(0.5, 2.0, 30.0)
                delay = next(slot.delays)
                log.error("worker %d (pid %d) stopped unasked (%s); restarting it in %.1fs",
                          slot.index, proc.pid, describe_exit(status), delay)
            else:
                slot.start_failures += 1
                failure = self._start_failure(slot, status, report)
                if not self.serving or slot.start_failures >= MAX_START_FAILURES:
                    self.fatal = failure
                    self.stopping.set()
                    return
                delay = next(slot.delays)
                log.error("worker %d (pid %d) failed to start (%s): %s; retrying in %.1fs "
                          "(%d of %d)", slot.index, proc.pid, describe_exit(status),
                          failure, delay, slot.start_failures, MAX_START_FAILURES)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    def _start_failure(self, slot: _Slot, status: int,
                       report: dict[str, Any] | None) -> common.CommandFailed:
        if report and isinstance(report.get("line"), str):
            return common.CommandFailed(report["line"], int(report.get("status") or 1))
        return common.fail(f"worker {slot.index} stopped while starting ({describe_exit(status)})"
                           "; run again with --debug", common.EXIT_FAILURE)

    async def _start(self, slot: _Slot) -> tuple[asyncio.subprocess.Process, dict[str, Any] | None]:
        """Start the slot's worker; return it and its first report (None: it said nothing)."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        args = [sys.executable, "-m", "bridge", "serve", "--worker-index", str(slot.index),
                "--worker-status-fd", str(write_fd)]
        args += ["--config", self.args.config] if self.args.config else []
        args += ["--debug"] if self.args.debug else []
        env = {**os.environ, PORT_VARIABLE: str(self.port),
               INSTANCE_VARIABLE: f"{self._instance}-w{slot.index}"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, pass_fds=(write_fd,), env=env)
        finally:
            os.close(write_fd)
        slot.proc = proc
        if self.stopping.is_set():  # the stop came while it was being started
            proc.terminate()
        reader = asyncio.StreamReader(limit=65536)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        report: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = await reader.readline()
            report = orjson.loads(line) if line.strip() else None
        except TimeoutError:
            proc.kill()
            report = {"status": common.EXIT_FAILURE,
                      "line": f"callbridge: worker {slot.index} did not start within "
                              f"{READY_TIMEOUT:.0f}s; run again with --debug"}
        except (ValueError, asyncio.LimitOverrunError):
            report = None
        finally:
            transport.close()
        if report and report.get("ready") and proc.returncode is None:
            slot.ready = True
            slot.start_failures = 0
            log.info("worker %d (pid %d) serving", slot.index, proc.pid)
            self._announce()
        return proc, report

    def _announce(self) -> None:
        if not self.serving and all(s.ready for s in self.slots):
            self.serving = True
            print(f"callbridge serving on {self.url()} with {len(self.slots)} workers",
                  flush=True)


async def supervise(config: Config, args: argparse.Namespace, overrun: float) -> int:
    """The whole ``serve`` command with ``[server] workers`` above 1; the exit status.

    ``overrun``: seconds past ``[server] shutdown_timeout`` after which a worker ends its own
    stuck shutdown (a worker still running :data:`STOP_MARGIN` later is killed)."""
    if not shares_ports():
        raise common.fail(
            f"[server] workers is {config.server.workers} (or --workers), but several "
            f"workers share one port only on Linux (SO_REUSEPORT), not on {sys.platform}: "
            "set workers to 1 and run one callbridge serve per port behind a load balancer",
            common.EXIT_CONFIG)
    port = check_port(config)
    return await Supervisor(config, args, port, overrun).run()
