"""Startup failures as a user meets them: one line on stderr naming the thing and the next
step, the documented exit status, no traceback, no secret."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import tomli_w

from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings
from tests.cli.run import callbridge

SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))
JWT_SECRET = "startup-test-jwt-secret-0123456789abcdef"
APP_ID = "startup-app"
APP_SECRET = "startup-app-secret-0123456789"


def test_a_busy_port_stops_the_demo_in_one_line_before_anything_starts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        result = callbridge("demo", "--port", str(port), timeout=60 * SCALE)
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"callbridge: cannot listen on 127.0.0.1:{port}: address already in use; stop the "
        "other process, or choose another port with --port (0: any free port)"]
    assert "Traceback" not in result.stderr
    assert "callbridge demo" not in result.stdout  # nothing started: no banner


def test_a_busy_port_stops_serve_naming_the_key(tmp_path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        config = tmp_path / "callbridge.toml"
        config.write_text(tomli_w.dumps({"server": {"host": "127.0.0.1", "port": port},
                                         "auth": {"jwt_secret": JWT_SECRET}}))
        result = callbridge("serve", "--config", str(config), timeout=60 * SCALE)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"callbridge: cannot listen on 127.0.0.1:{port}: address "
                               "already in use; ")
    assert "[server] port or CALLBRIDGE__SERVER__PORT" in lines[0]


REDIS_PASSWORD = "redis-pw-never-shown-4711"


def _unreachable_redis(tmp_path: Path, port: int) -> tuple[str, int]:
    """A configuration whose broker is a closed local port, with a password in its URL."""
    config = tmp_path / "callbridge.toml"
    config.write_text(tomli_w.dumps({
        "broker": {"url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"},
        "auth": {"jwt_secret": JWT_SECRET}}))
    return str(config), port


def test_unreachable_redis_is_one_line_with_host_and_port_and_no_password(
        tmp_path, closed_port) -> None:
    config, port = _unreachable_redis(tmp_path, closed_port)
    password = REDIS_PASSWORD
    result = callbridge("serve", "--config", config, timeout=60 * SCALE)
    assert result.returncode == 4, result.stderr
    assert result.stderr.splitlines() == [
        f"callbridge: Redis at 127.0.0.1:{port} is unreachable (connection refused): is "
        "redis-server running there? check [broker] url"]
    assert password not in result.stderr + result.stdout
    assert JWT_SECRET not in result.stderr + result.stdout


def test_debug_shows_the_traceback_and_still_masks_the_password(tmp_path, closed_port) -> None:
    config, port = _unreachable_redis(tmp_path, closed_port)
    password = REDIS_PASSWORD
    result = callbridge("serve", "--config", config, "--debug", timeout=60 * SCALE)
    assert result.returncode == 4, result.stderr
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"callbridge: Redis at 127.0.0.1:{port} ")
    assert password not in result.stderr


async def test_refused_credentials_are_one_error_line_naming_the_block_and_key(
        tmp_path) -> None:
    simulator = Simulator(SimulatorSettings(apps={APP_ID: APP_SECRET}, accounts=["acct-1"],
                                            traffic=False))
    wrong = "wrong-app-secret-never-shown-99"
    async with AppServer(simulator.build_app()) as sim:
        config = tmp_path / "callbridge.toml"
        config.write_text(tomli_w.dumps({
            "server": {"host": "127.0.0.1", "port": 0},
            "auth": {"jwt_secret": JWT_SECRET},
            "upstream": {"auth_retry": 0.2},
            "antbuddy": [{"tenant": "acme", "account_id": "acct-1", "oapi_url": sim.url,
                          "ws_url": sim.ws_url, "app_id": APP_ID, "app_secret": wrong}],
        }))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
        assert proc.stderr is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(30 * SCALE):
                while not any("credentials refused" in line for line in lines):
                    line = (await proc.stderr.readline()).decode()
                    assert line, "serve exited: " + "".join(lines)
                    lines.append(line)
                # Retried every 0.2 s, refused every time: still that one line.
                while simulator.tokens.requests < 4:
                    await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30 * SCALE):
                rest = (await proc.stderr.read()).decode()
                status = await proc.wait()
    log = "".join(lines) + rest
    assert status == 0, log
    refused = [orjson.loads(line) for line in log.splitlines() if "refused" in line]
    assert [(r["level"], r["msg"].rsplit(";", 1)[0]) for r in refused] == [
        ("error", "antbuddy[acme] (account acct-1): credentials refused by the oapi (HTTP 401): "
                  "check app_id and app_secret (CALLBRIDGE__ANTBUDDY__ACME__APP_SECRET)")]
    assert refused[0]["msg"].rsplit(";", 1)[1].startswith(" retrying in ")
    assert wrong not in log and APP_SECRET not in log


#: The real command, with a fault no user can cause: the simulator fails to build its app.
FAULTY_DEMO = """
import sys
from bridge.cli import main
from bridge.simulator.app import Simulator

def broken(self):
    raise RuntimeError("simulator broke, token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")

Simulator.build_app = broken
raise SystemExit(main(sys.argv[1:]))
"""


def _faulty_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    return subprocess.run([sys.executable, "-c", FAULTY_DEMO, "demo", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60 * SCALE, env=env)


def test_an_unexpected_error_is_one_line_with_its_type_and_no_token() -> None:
    result = _faulty_demo()
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "callbridge demo: unexpected error: RuntimeError: simulator broke, token [redacted]; "
        "run again with --debug for the traceback"]


def test_debug_shows_the_unexpected_traceback() -> None:
    result = _faulty_demo("--debug")
    assert result.returncode == 1, result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "in broken" in result.stderr
    assert "eyJzdWIiOiJ4In0" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "callbridge demo: unexpected error: RuntimeError: simulator broke, token [redacted]")
