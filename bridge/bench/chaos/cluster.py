"""The processes of a chaos run: a private Redis, the AntBuddy simulator, callbridge instances.

Everything listens on 127.0.0.1 only. Redis runs as its own ``redis-server`` with a password
(so that the logs can be searched for it) and a directory of its own, and can be killed and
started again empty, or shut down saving its data and started again with it. Each instance is
``python -m bridge serve`` on a fixed port (clients keep its address across restarts), its log
on a file; it can be killed (SIGKILL), stopped (SIGTERM: a hand-over) and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import tomli_w

from bridge.common import redact
from bridge.simulator.app import Simulator

_SERVING = re.compile(r"serving on (http://\S+)")
#: Safety net for a process to come up or go down.
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RecordingSimulator(Simulator):
    """The simulator, keeping for every signal it sent: the time, the account, the upstream
    key (``Call-ID``, ``Msg-ID``) and to how many sockets it went (0: nobody listened)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[float, str, str, str, int]] = []
        self.auth_tokens: list[str] = []
        # Every token issued is searched for in the logs afterwards.
        self.tokens.on_issue.append(lambda app_id, token: self.auth_tokens.append(token))

    def emit(self, account_id: str, name: str, payload: dict[str, Any]) -> int:
        delivered = super().emit(account_id, name, payload)
        self.sent.append((time.time(), account_id, str(payload.get("Call-ID")),
                          str(payload.get("Msg-ID")), delivered))
        return delivered


class Redis:
    """A private ``redis-server`` on a free loopback port, keeping nothing on disk unless told.

    :meth:`kill` then :meth:`start` loses every key, as a production Redis without persistence
    does; :meth:`stop_saving` then :meth:`start` keeps them. With ``password`` it requires AUTH
    (and the password is registered for redaction).
    """

    def __init__(self, directory: str, *, password: str | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.password = password
        auth = ""
        if password is not None:
            redact.register(password)
            auth = f":{password}@"
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._dir = directory
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING."""
        if self.running:
            return
        auth = ["--requirepass", self.password] if self.password is not None else []
        self._proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *auth,
            "--save", "", "--appendonly", "no", "--dir", self._dir, "--dbfilename", "dump.rdb",
            "--maxclients", "20000", "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(START_TIMEOUT):
            while not await self._answers():
                if self._proc.returncode is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited")
                await asyncio.sleep(0.02)

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        async with asyncio.timeout(START_TIMEOUT):
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def kill(self) -> None:
        """SIGKILL, its saved data (if any) removed: it starts again empty."""
        await self.stop(kill=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self._dir, "dump.rdb"))

    async def stop_saving(self) -> None:
        """SHUTDOWN SAVE: the next :meth:`start` loads every key back."""
        await self.command("SHUTDOWN", "SAVE")
        proc, self._proc = self._proc, None
        if proc is not None:
            async with asyncio.timeout(START_TIMEOUT):
                await proc.wait()

    async def command(self, *args: str) -> bytes:
        """One command over a plain connection (AUTH first); the first line of the reply."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            auth = _resp("AUTH", self.password) if self.password is not None else []
            writer.write(b"".join(auth + _resp(*args)))
            await writer.drain()
            if auth:
                await reader.readline()  # +OK
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answers(self) -> bool:
        try:
            return (await self.command("PING")).startswith(b"+PONG")
        except OSError:
            return False


def _resp(*args: str) -> list[bytes]:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return out


@dataclass
class Instance:
    """One ``callbridge serve`` process on a fixed port."""

    name: str
    port: int
    config_path: str
    log_path: str
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    _drain: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        if self.running:
            return
        log = open(self.log_path, "a")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "serve", "--config", self.config_path,
                stdout=asyncio.subprocess.PIPE, stderr=log)
        finally:
            log.close()
        self.starts += 1
        assert self.proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{self.name} exited at start; see {self.log_path}")
                if _SERVING.search(line):
                    break
        self._drain = asyncio.create_task(_drain(self.proc), name=f"{self.name} stdout")

    async def kill(self) -> None:
        await self._signal(signal.SIGKILL)

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM and wait for the exit (SIGKILL after ``timeout``); the exit status."""
        return await self._signal(signal.SIGTERM, timeout)

    async def _signal(self, sig: int, timeout: float = START_TIMEOUT) -> int | None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return None
        proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                status = await proc.wait()
        except TimeoutError:
            proc.kill()
            status = await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
        return status

    async def readyz(self) -> tuple[int, dict[str, Any]] | None:
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=3) as http:
                reply = await http.get(f"{self.url}/readyz")
            return reply.status_code, reply.json()
        except (httpx.HTTPError, ValueError):
            return None


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


def instance_config(*, name: str, port: int, redis_url: str, prefix: str, jwt_secret: str,
                    antbuddy: list[dict[str, Any]], providers: dict[str, Any],
                    client_queue_bytes: int, lease_ttl: float) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "max_connections_per_ip": 100_000,
                   "client_queue_bytes": client_queue_bytes, "shutdown_timeout": 6.0},
        "broker": {"url": redis_url, "prefix": prefix, "probe_interval": 1.0},
        "auth": {"jwt_secret": jwt_secret, "expiry_grace": 2.0, "leeway": 1.0},
        "logging": {"level": "INFO", "summary_interval": 10.0},
        "upstream": {"reconnect_initial": 0.2, "reconnect_max": 2.0, "auth_retry": 2.0,
                     "refresh_margin": 8.0},
        "lease": {"ttl": lease_ttl, "instance_id": name, "handover_timeout": 3.0},
        "antbuddy": antbuddy,
        **providers,
    }


def write_config(path: str, config: dict[str, Any]) -> None:
    with open(path, "w") as f:
        f.write(tomli_w.dumps(config))
    os.chmod(path, 0o600)
