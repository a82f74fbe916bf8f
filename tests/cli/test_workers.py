"""``callbridge serve --workers N`` as an operator runs it: one port served by N worker
processes on the shared Redis, supervised (crashes restarted, signals forwarded, startup
failures told once), each worker's metrics on a port of its own, the admin API listing and
disconnecting every worker's clients whichever worker takes the request."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import tomli_w
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint, mint_api
from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings
from tests.cli.run import callbridge
from tests.support.redis_server import private_redis

SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))
JWT_SECRET = "workers-test-jwt-secret-0123456789abcdef"
APP_ID = "workers-app"
APP_SECRET = "workers-app-secret-0123456789"
REDIS = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="several workers share a port on Linux only")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own on the shared Redis, its keys deleted afterwards."""
    name = f"cbtest-workers-{uuid.uuid4().hex[:10]}:"
    yield name
    client = aioredis.from_url(REDIS)
    try:
        keys = [key async for key in client.scan_iter(match=f"{name}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive local ports nothing listens on."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise AssertionError("no consecutive free ports")


def _config(path: Path, prefix: str, *, metrics_port_base: int = 0, url: str = REDIS,
            antbuddy: list[dict[str, Any]] | None = None) -> str:
    path.write_text(tomli_w.dumps({
        "server": {"host": "127.0.0.1", "port": 0, "metrics_port_base": metrics_port_base,
                   "shutdown_timeout": 5.0},
        "broker": {"url": url, "prefix": prefix},
        "auth": {"jwt_secret": JWT_SECRET},
        "lease": {"ttl": 3.0},
        "antbuddy": antbuddy or [],
    }))
    return str(path)


class Serve:
    """``callbridge serve --workers N`` in a subprocess, its stderr read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.url = ""

    @classmethod
    async def start(cls, config: str, workers: int = 2) -> Serve:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--config", config,
            "--workers", str(workers), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        serve = cls(proc)
        assert proc.stdout is not None
        async with asyncio.timeout(40 * SCALE):
            line = (await proc.stdout.readline()).decode()
        match = re.search(rf"serving on (http://\S+) with {workers} workers", line)
        assert match, f"{line!r}\n{serve.log()}"
        serve.url = match.group(1)
        return serve

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode())
                self._changed.notify_all()

    def log(self) -> str:
        return "".join(self.lines)

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> list[str]:
        """The first ``count`` log messages matching ``pattern`` (waiting for them)."""
        def found() -> list[str]:
            return [m for m in (_msg(line) for line in self.lines) if re.search(pattern, m)]

        async with asyncio.timeout(timeout * SCALE), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count)
        return found()[:count]

    def worker_pids(self) -> list[int]:
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return [int(pid) for pid in f.read().split()]

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30 * SCALE):
            status = await self.proc.wait()
            await self._reader
        return status


def _msg(line: str) -> str:
    try:
        return str(orjson.loads(line)["msg"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return line


async def _instances(url: str, n: int = 24) -> set[str]:
    """The instance ids that answer ``/readyz`` over ``n`` new connections."""
    seen = set()
    for _ in range(n):
        async with httpx.AsyncClient(timeout=10 * SCALE) as client:
            response = await client.get(url + "/readyz")
        seen.add(response.json()["instance_id"])
    return seen


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


async def _client(ws_url: str, sessions: dict[ClientConnection, str] | None = None
                  ) -> ClientConnection:
    """A client subscribed to ``calls:acme``; its session id goes into ``sessions``."""
    ws = await connect(ws_url + "/ws")
    token = mint(JWT_SECRET, sub="screen", channels=["calls:acme"], ttl=600)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    await ws.send(orjson.dumps({"type": "subscribe", "id": 1, "channels": ["calls:acme"]}).decode())
    while (frame := orjson.loads(await ws.recv())).get("type") != "subscribed":
        if frame.get("type") == "welcome" and sessions is not None:
            sessions[ws] = frame["session"]
    return ws


async def _event_ids(ws: ClientConnection, count: int) -> list[str]:
    ids = []
    while len(ids) < count:
        frame = orjson.loads(await ws.recv())
        if frame.get("type") == "event":
            ids.append(frame["event"]["id"])
    return ids


async def test_two_workers_serve_one_port_and_every_client_gets_each_event_once(
        tmp_path: Path, prefix: str) -> None:
    simulator = Simulator(SimulatorSettings(apps={APP_ID: APP_SECRET}, accounts=["acct-1"],
                                            traffic=False))
    base = _free_ports(2)
    async with AppServer(simulator.build_app()) as sim:
        config = _config(tmp_path / "callbridge.toml", prefix, metrics_port_base=base,
                         antbuddy=[{"tenant": "acme", "account_id": "acct-1",
                                    "oapi_url": sim.url, "ws_url": sim.ws_url,
                                    "app_id": APP_ID, "app_secret": APP_SECRET}])
        serve = await Serve.start(config)
        clients: list[ClientConnection] = []
        sessions: dict[ClientConnection, str] = {}
        try:
            base_id = f"{socket.gethostname()}-{serve.proc.pid}"
            assert await _instances(serve.url) == {f"{base_id}-w0", f"{base_id}-w1"}
            async with asyncio.timeout(30 * SCALE):
                ws_url = serve.url.replace("http://", "ws://")
                clients = [await _client(ws_url, sessions) for _ in range(16)]
                # Each worker counts its own clients on its own metrics port.
                async with httpx.AsyncClient(timeout=10 * SCALE) as http:
                    counts = [_gauge((await http.get(f"http://127.0.0.1:{port}/metrics")).text,
                                     "callbridge_clients") for port in (base, base + 1)]
                assert sum(counts) == 16 and min(counts) > 0, counts
                await serve.wait_for(r"lease antbuddy/acme/acct-1 acquired")
                simulator.start_traffic(20.0)
                received = await asyncio.gather(*(_event_ids(ws, 5) for ws in clients))
                await simulator.stop_traffic()
                # Whichever worker takes the request, the one holding the client closes it.
                admin = {"authorization": "Bearer " + mint_api(
                    JWT_SECRET, sub="ops", scopes=["admin"], ttl=600)}
                holders = set()
                async with httpx.AsyncClient(timeout=10 * SCALE, headers=admin) as http:
                    listed = (await http.get(f"{serve.url}/admin/clients",
                                             params={"instances": "all"})).json()
                    assert listed["total"] == 16 and listed["answered"] == listed["asked"] == 1
                    assert {c["session"] for listing in listed["instances"]
                            for c in listing["clients"]} == set(sessions.values())
                    for ws in clients:
                        answer = await http.post(
                            f"{serve.url}/admin/clients/{sessions[ws]}/disconnect")
                        assert answer.status_code == 200, answer.text
                        holders.add(answer.json()["instance_id"])
                        while True:
                            try:
                                await ws.recv()
                            except ConnectionClosed as closed:
                                assert closed.rcvd is not None and closed.rcvd.code == 4010
                                break
                assert holders == {f"{base_id}-w0", f"{base_id}-w1"}
        finally:
            await simulator.stop_traffic()
            for ws in clients:
                await ws.close()
            status = await serve.stop()
    # One stream, run by one worker, published once: every client on either worker got the
    # same events, in the same order, each once.
    assert all(ids == received[0] for ids in received), received
    assert len(set(received[0])) == 5
    assert status == 0, serve.log()


async def test_a_killed_worker_is_restarted_and_logged_while_the_port_keeps_serving(
        tmp_path: Path, prefix: str) -> None:
    serve = await Serve.start(_config(tmp_path / "callbridge.toml", prefix))
    try:
        first = await _instances(serve.url)
        assert len(first) == 2
        victim = serve.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        [line] = await serve.wait_for(rf"\(pid {victim}\) stopped unasked")
        assert re.fullmatch(rf"worker [01] \(pid {victim}\) stopped unasked \(killed by "
                            r"SIGKILL\); restarting it in \d+\.\ds", line), line
        index = line.split()[1]
        async with httpx.AsyncClient(timeout=10 * SCALE) as client:
            for _ in range(10):  # the other worker answers meanwhile
                assert (await client.get(serve.url + "/healthz")).status_code == 200
        await serve.wait_for(rf"worker {index} \(pid (?!{victim}\))\d+\) serving")
        assert await _instances(serve.url) == first  # the slot keeps its instance id
    finally:
        status = await serve.stop()
    assert status == 0, serve.log()


async def test_sighup_reloads_every_worker_and_sigterm_stops_them_all(
        tmp_path: Path, prefix: str) -> None:
    serve = await Serve.start(_config(tmp_path / "callbridge.toml", prefix))
    pids = serve.worker_pids()
    assert len(pids) == 2
    try:
        serve.proc.send_signal(signal.SIGHUP)
        await serve.wait_for(r"^reload applied", count=2)
    finally:
        status = await serve.stop()
    log = serve.log()
    assert status == 0, log
    assert "Traceback" not in log
    # Nothing differs on reload: the port and instance id each worker got are its config's.
    assert "differs from the running configuration" not in log, log
    assert len(re.findall(r"callbridge stopped after", log)) == 2, log
    levels = [orjson.loads(line)["level"] for line in log.splitlines()]
    assert "error" not in levels and "warning" not in levels, log
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_memory_broker_with_several_workers_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text(tomli_w.dumps({"auth": {"jwt_secret": JWT_SECRET}}))
    result = callbridge("serve", "--config", str(config), "--workers", "2",
                        timeout=60 * SCALE)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "callbridge: configuration error:",
        "server.workers: 2 workers need a Redis [broker] url (each worker is an instance of "
        "its own; they share events, leases and revocations there), got memory://; set "
        "[broker] url to redis://HOST:6379/0, or [server] workers (--workers) to 1"]


def test_unreachable_redis_stops_every_worker_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = _config(tmp_path / "callbridge.toml", "cbtest-workers:",
                     url=f"redis://127.0.0.1:{port}/0")
    result = callbridge("serve", "--config", config, "--workers", "2", timeout=60 * SCALE)
    assert result.returncode == 4, result.stderr
    assert result.stderr.splitlines() == [
        f"callbridge: Redis at 127.0.0.1:{port} is unreachable (connection refused): is "
        "redis-server running there? check [broker] url"]
    assert "serving on" not in result.stdout


def test_a_busy_port_is_told_once_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        config = tmp_path / "callbridge.toml"
        config.write_text(tomli_w.dumps({"server": {"host": "127.0.0.1", "port": port},
                                         "broker": {"url": REDIS, "prefix": "cbtest-workers:"},
                                         "auth": {"jwt_secret": JWT_SECRET}}))
        result = callbridge("serve", "--config", str(config), "--workers", "2",
                            timeout=60 * SCALE)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"callbridge: cannot listen on 127.0.0.1:{port}: address already in use; "), lines


def test_check_shows_the_workers(tmp_path: Path) -> None:
    config = _config(tmp_path / "callbridge.toml", "cbtest-workers:")
    result = callbridge("check", "--config", config,
                        env={"CALLBRIDGE__SERVER__WORKERS": "4"}, timeout=60 * SCALE)
    assert result.returncode == 0, result.stderr
    assert "listen    127.0.0.1:0   board off   workers 4   " in result.stdout


async def test_a_restarted_worker_that_cannot_start_stops_everything_after_five_tries(
        tmp_path: Path, prefix: str) -> None:
    async with private_redis() as redis_server:
        serve = await Serve.start(_config(tmp_path / "callbridge.toml", prefix,
                                          url=redis_server.url))
        try:
            await redis_server.stop()
            os.kill(serve.worker_pids()[0], signal.SIGKILL)
            tries = await serve.wait_for(r"failed to start", count=4, timeout=60)
            async with asyncio.timeout(60 * SCALE):
                status = await serve.proc.wait()
                await serve._reader
        finally:
            await serve.stop()
    assert re.fullmatch(r"worker [01] \(pid \d+\) failed to start \(exit status 4\): "
                        r"callbridge: Redis at 127\.0\.0\.1:\d+ is unreachable \(connection "
                        r"refused\): .*; retrying in \d+\.\ds \(1 of 5\)", tries[0]), tries[0]
    assert status == 4, serve.log()
    assert serve.log().splitlines()[-1].startswith("callbridge: Redis at 127.0.0.1:")
    assert "Traceback" not in serve.log()


async def test_a_worker_stuck_in_shutdown_is_killed_and_the_exit_status_says_so(
        tmp_path: Path, prefix: str) -> None:
    serve = await Serve.start(_config(tmp_path / "callbridge.toml", prefix))
    stuck = serve.worker_pids()[1]
    os.kill(stuck, signal.SIGSTOP)  # hears no signal until killed
    status = await serve.stop()
    assert status == 1, serve.log()
    assert re.search(rf"worker \d \(pid {stuck}\) still running \d+s after the signal: "
                     "killed", serve.log()), serve.log()
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)


async def test_workers_stop_when_the_supervising_process_dies(
        tmp_path: Path, prefix: str) -> None:
    serve = await Serve.start(_config(tmp_path / "callbridge.toml", prefix))
    assert len(serve.worker_pids()) == 2
    serve.proc.kill()
    await serve.wait_for(r"the supervising process is gone; stopping", count=2)
    await serve.wait_for(r"callbridge stopped after", count=2)
    # stop() reads stderr to its end: every worker has exited and closed it.
    assert await serve.stop() == -signal.SIGKILL
    assert "Traceback" not in serve.log()
