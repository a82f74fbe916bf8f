"""``callbridge simulate``: the configuration it prints makes ``callbridge serve`` connect.

Real processes on real sockets: the simulator, then the bridge started from a file written with
the printed blocks; the bridge is ready once its upstream stream is subscribed.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from bridge.config.load import load_config
from tests.cli.run import callbridge

SECRET = "simulate-test-secret-0123456789abc"
WAIT = 30.0


@contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    """``callbridge ARGS`` as a background process, its stdout lines in a queue (its stderr
    in a file, read by :func:`stderr_of`); interrupted (Ctrl-C) on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", *args], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)
        proc.err = err  # type: ignore[attr-defined]
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            yield proc, lines
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=WAIT)
            reader.join(timeout=WAIT)
            proc.stdout.close()


def stderr_of(proc: subprocess.Popen[str]) -> str:
    err = proc.err  # type: ignore[attr-defined]
    err.seek(0)
    text: str = err.read()
    return text


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")  # the end


def announcement(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> str:
    """Everything the command prints up to its "Ctrl-C stops." line."""
    text = []
    deadline = time.monotonic() + WAIT
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no announcement within {WAIT}s; so far:\n{''.join(text)}")
        if not line:
            pytest.fail(f"exited {proc.wait()}:\n{''.join(text)}\n{stderr_of(proc)}")
        if line.startswith("Ctrl-C stops."):
            return "".join(text)
        text.append(line)


def blocks_of(text: str) -> dict[str, object]:
    """The TOML blocks of the announcement (from its first ``[[``)."""
    return tomllib.loads(text[text.index("[["):])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, text: str, port: int) -> Path:
    blocks = text[text.index("[["):]
    path.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
                    f'[auth]\njwt_secret = "{SECRET}"\n\n[broker]\nurl = "memory://"\n\n'
                    + blocks)
    return path


def test_simulate_announces_what_it_accepts_and_a_block_serve_connects_with(tmp_path):
    with running("simulate", "--port", "0", "--tenant", "acme") as (sim, sim_lines):
        text = announcement(sim, sim_lines)
        assert "demo-app" in text and "acct-demo" in text and "1001..1010" in text
        block = blocks_of(text)["antbuddy"]
        assert isinstance(block, list) and len(block) == 1
        assert block[0]["tenant"] == "acme"
        assert block[0]["app_id"] == "demo-app"
        assert block[0]["account_id"] == "acct-demo"
        assert block[0]["oapi_url"].startswith("http://127.0.0.1:")

        port = free_port()
        config = write_config(tmp_path / "callbridge.toml", text, port)
        with running("serve", "--config", str(config)) as (bridge, _):
            body = _ready(f"http://127.0.0.1:{port}/readyz", bridge)
        streams = str(body)
        assert "acme" in streams and "acct-demo" in streams


def _ready(url: str, proc: subprocess.Popen[str]) -> object:
    """The /readyz body once it answers 200 (the upstream stream subscribed)."""
    deadline = time.monotonic() + WAIT
    last: object = "no answer"
    with httpx.Client(trust_env=False, timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}: {stderr_of(proc)}")
            try:
                response = http.get(url)
            except httpx.TransportError:
                pass
            else:
                last = response.json()
                if response.status_code == 200:
                    return last
            time.sleep(0.2)  # polling an HTTP endpoint: there is no event to await
    pytest.fail(f"{url} not ready within {WAIT}s: {last}")


def test_simulate_all_prints_blocks_that_validate(tmp_path):
    with running("simulate", "--port", "0", "--all") as (sim, lines):
        text = announcement(sim, lines)
    assert sim.returncode == 0, stderr_of(sim)  # Ctrl-C stops it cleanly
    blocks = blocks_of(text)
    assert set(blocks) == {"antbuddy", "quickom", "epacific", "kompaas"}
    for name in ("Quickom", "ePacific", "Kompaas"):
        assert f"{name} simulator on http://127.0.0.1:" in text
    config = load_config(str(write_config(tmp_path / "all.toml", text, 8080)), {})
    assert [a.tenant for a in config.antbuddy] == ["demo"]
    assert [a.tenant for a in config.quickom] == ["demo"]
    assert [a.tenant for a in config.epacific] == ["demo"]
    assert [a.tenant for a in config.kompaas] == ["demo"]


def test_simulate_on_a_taken_port_says_so():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = callbridge("simulate", "--port", str(port), timeout=WAIT)
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_refuses_a_bad_tenant():
    result = callbridge("simulate", "--tenant", "a:b", timeout=WAIT)
    assert result.returncode == 2
    assert "--tenant 'a:b'" in result.stderr
