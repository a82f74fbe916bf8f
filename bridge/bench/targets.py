"""The servers under test, each a subprocess: callbridge, the ceiling and the peer.

:func:`launch` starts one, waits for its "listening" line and yields a :class:`Target`; the
process is terminated (then killed) on exit. Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import tomli_w

from bridge.common import redact

TARGETS = ("callbridge", "ceiling", "peer")
_READY = re.compile(r"(?:serving on|listening on) (\S+)")


@dataclass
class Target:
    name: str
    pid: int
    #: Base URL the target printed (http:// or ws://).
    url: str
    #: Where benchmark clients connect.
    client_url: str
    jwt_secret: str = ""


def callbridge_config(*, broker_url: str, prefix: str, jwt_secret: str,
                      antbuddy: list[dict[str, Any]] | None = None,
                      upstream: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "max_connections_per_ip": 1_000_000},
        "broker": {"url": broker_url, "prefix": prefix},
        "auth": {"jwt_secret": jwt_secret},
        "logging": {"level": "WARNING"},
    }
    if upstream:
        config["upstream"] = upstream
    if antbuddy:
        config["antbuddy"] = antbuddy
    return config


@contextlib.contextmanager
def launch(name: str, *, redis_url: str, channels: list[str],
           config: dict[str, Any] | None = None, timeout: float = 60,
           server_workers: int = 1) -> Iterator[Target]:
    """Start target ``name``. ``channels``: the Redis pub/sub names the ceiling/peer read.

    ``server_workers`` > 1 runs callbridge as ``serve --workers N`` (the ceiling and the peer
    are one process whatever it says); measure such a target with ``tree=True``.
    """
    secret = ""
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as tmp:
        if name == "callbridge":
            assert config is not None
            secret = config["auth"]["jwt_secret"]
            path = os.path.join(tmp, "callbridge.toml")
            with open(path, "w") as f:
                f.write(tomli_w.dumps(config))
            os.chmod(path, 0o600)
            argv = [sys.executable, "-m", "bridge", "serve", "--config", path]
            if server_workers != 1:
                argv += ["--workers", str(server_workers)]
        elif name == "ceiling":
            argv = [sys.executable, "-m", "bridge.bench.ceiling", "--redis", redis_url]
            for c in channels:
                argv += ["--channel", c]
        elif name == "peer":
            argv = [sys.executable, "-m", "bridge.bench.peer", "--redis", redis_url,
                    "--channel", channels[0]]
        else:
            raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        try:
            url = _wait_ready(proc, timeout)
            client_url = url.replace("http://", "ws://", 1)
            if name == "callbridge":
                client_url += "/ws"
            yield Target(name, proc.pid, url, client_url, secret)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    found: list[str] = []
    tail: deque[str] = deque(maxlen=20)

    def read() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:  # keeps draining the pipe after the ready line
                tail.append(line.rstrip())
                m = _READY.search(line)
                if m and not found:
                    found.append(m.group(1))
        except (ValueError, OSError):  # closed by launch() once the target exited
            return

    threading.Thread(target=read, daemon=True, name="bench-target-output").start()
    deadline = time.monotonic() + timeout
    while not found and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if not found:
        raise RuntimeError("target did not start:\n" + "\n".join(tail))
    return found[0]


def new_secret() -> str:
    """A JWT secret for one run, registered with the log redactor."""
    secret = secrets.token_urlsafe(32)
    redact.register(secret)
    return secret
