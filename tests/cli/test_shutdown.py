"""A clean stop (Ctrl-C, SIGTERM) as a user reads it: exit 0, no warning, no error, no
reconnect, one summary line of what the run did."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import orjson
import tomli_w
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings

SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))
JWT_SECRET = "shutdown-test-jwt-secret-0123456789abcdef"
APP_ID = "shutdown-app"
APP_SECRET = "shutdown-app-secret-0123456789"
#: The stream's name written twice in a row: a prefix added by two layers.
DOUBLED = re.compile(r"(antbuddy/[\w.-]+/[\w.-]+): \1")
SUMMARY = re.compile(r"callbridge stopped after \d+(m \d+)?s: 1 upstream stream closed, "
                     r"1 websocket client closed, [\d,]+ events? published")


async def _spawn(*args: str, stderr: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    with stderr.open("w") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", *args, stdout=asyncio.subprocess.PIPE,
            stderr=err, env=env)


async def _line_with(proc: asyncio.subprocess.Process, pattern: str, stderr: Path) -> str:
    """The first stdout line matching ``pattern``; fails with stderr if the process ends."""
    assert proc.stdout is not None
    while True:
        line = (await proc.stdout.readline()).decode()
        assert line, f"exited early: {stderr.read_text()}"
        if re.search(pattern, line):
            return line


def _assert_quiet(log: str) -> None:
    assert "Traceback" not in log, log
    assert "reconnect" not in log.lower(), log
    assert not DOUBLED.search(log), log
    assert SUMMARY.search(log), log


async def test_ctrl_c_stops_the_demo_quietly_with_a_summary(tmp_path) -> None:
    stderr = tmp_path / "demo.err"
    proc = await _spawn("demo", "--port", "0", "--rate", "5", stderr=stderr)
    try:
        async with asyncio.timeout(30 * SCALE):
            await _line_with(proc, r" call\.\w+ ", stderr)  # its first event, as printed
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30 * SCALE):
            assert proc.stdout is not None
            await proc.stdout.read()
            status = await proc.wait()
    log = stderr.read_text()
    assert status == 0, log
    _assert_quiet(log)
    assert not [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]


async def test_sigterm_stops_serve_quietly_with_a_summary(tmp_path) -> None:
    simulator = Simulator(SimulatorSettings(apps={APP_ID: APP_SECRET}, accounts=["acct-1"],
                                            calls_per_second=5.0))
    async with AppServer(simulator.build_app()) as sim:
        config = tmp_path / "callbridge.toml"
        config.write_text(tomli_w.dumps({
            "server": {"host": "127.0.0.1", "port": 0},
            "auth": {"jwt_secret": JWT_SECRET},
            "antbuddy": [{"tenant": "acme", "account_id": "acct-1", "oapi_url": sim.url,
                          "ws_url": sim.ws_url, "app_id": APP_ID, "app_secret": APP_SECRET}],
        }))
        stderr = tmp_path / "serve.err"
        proc = await _spawn("serve", "--config", str(config), stderr=stderr)
        try:
            async with asyncio.timeout(30 * SCALE):
                url = (await _line_with(proc, r"serving on http://", stderr)).split()[-1]
                token = mint(JWT_SECRET, sub="screen", channels=["calls:acme"], ttl=600)
                async with connect(url.replace("http://", "ws://") + "/ws") as ws:
                    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                    await ws.send(orjson.dumps({"type": "subscribe", "id": 1,
                                                "channels": ["calls:acme"]}).decode())
                    while orjson.loads(await ws.recv()).get("type") != "event":
                        pass
                    proc.send_signal(signal.SIGTERM)
                    try:
                        while True:
                            await ws.recv()
                    except ConnectionClosed as closed:
                        assert closed.rcvd is not None and closed.rcvd.code == 1012
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30 * SCALE):
                status = await proc.wait()
    log = stderr.read_text()
    assert status == 0, log
    _assert_quiet(log)
    records = [orjson.loads(line) for line in log.splitlines()]
    assert [r for r in records if r["level"] in ("warning", "error")] == []
    assert APP_SECRET not in log and JWT_SECRET not in log
