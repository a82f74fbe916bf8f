"""``callbridge serve`` and nginx as real processes, configured from the files under deploy/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from tests.deploy.files import NGINX_CONF, ROOT

#: One unit for every wait in these tests; raise it on a slow machine.
SCALE = float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))

NGINX = Path("/usr/sbin/nginx")


def clean_environ() -> dict[str, str]:
    """This process's environment without CALLBRIDGE__ variables: each test gives its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE__")}
    env["PYTHONPATH"] = str(ROOT)
    return env


class Serve:
    """``python -m bridge serve --config FILE`` with ``env`` added to the environment, as a
    container or a systemd unit runs it; ``wrapper`` is put in front of the command."""

    def __init__(self, config: Path, env: dict[str, str], log: Path,
                 wrapper: Sequence[str] = ()) -> None:
        self.config = config
        self.env = env
        self.log_path = log
        self.wrapper = list(wrapper)
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        """Start and return once it prints the address it serves on."""
        with open(self.log_path, "a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.wrapper, sys.executable, "-m", "bridge", "serve",
                "--config", str(self.config),
                stdout=asyncio.subprocess.PIPE, stderr=log, env={**clean_environ(), **self.env})
        assert self.proc.stdout is not None
        async with asyncio.timeout(20 * SCALE):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    await self.proc.wait()
                    raise AssertionError(
                        f"callbridge exited with {self.proc.returncode}: {self.log()}")
                match = re.search(r"serving on (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                    return

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> int:
        """SIGTERM, as docker stop, Kubernetes and systemd send it; the exit status."""
        assert self.proc is not None
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20 * SCALE):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc is not None and self.running:
            self.proc.kill()
            await self.proc.wait()

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            return await http.get(f"{self.url}{path}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]


@contextlib.asynccontextmanager
async def serving(*instances: Serve) -> AsyncIterator[None]:
    """Start the instances; kill whatever is still running on the way out."""
    try:
        for instance in instances:
            await instance.start()
        yield
    finally:
        for instance in instances:
            await instance.kill()


# -- nginx ---------------------------------------------------------------------------------

def render_nginx(conf: str, upstreams: Sequence[str], listen: str) -> str:
    """deploy/nginx/callbridge.conf with its upstream servers and its listen address replaced,
    every other line as written."""
    servers = re.findall(r"^(\s*server\s+)(\S+:\d+)", conf, flags=re.M)
    assert len(servers) == len(upstreams), \
        f"the upstream block lists {len(servers)} servers, the test runs {len(upstreams)}"
    addresses = iter(upstreams)
    conf = re.sub(r"^(\s*server\s+)(\S+:\d+)", lambda m: m.group(1) + next(addresses), conf,
                  flags=re.M)
    conf, count = re.subn(r"^(\s*listen\s+)\S+;", rf"\g<1>{listen};", conf, flags=re.M)
    assert count == 1, f"expected one listen directive, found {count}"
    return conf


def nginx_main_conf(directory: Path, site: Path) -> str:
    """A main configuration for an unprivileged nginx: every path inside ``directory``."""
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
worker_processes 1;
pid {directory / 'nginx.pid'};
error_log stderr notice;
events {{
    worker_connections 256;
}}
http {{
    access_log {directory / 'access.log'};
{temp}
    include {site};
}}
"""


class Nginx:
    """Debian's nginx running deploy/nginx/callbridge.conf on a loopback port."""

    def __init__(self, directory: Path, upstreams: Sequence[str], port: int) -> None:
        self.directory = directory
        self.port = port
        site = directory / "callbridge.conf"
        site.write_text(render_nginx(NGINX_CONF.read_text(), upstreams, f"127.0.0.1:{port}"))
        self.conf = directory / "nginx.conf"
        self.conf.write_text(nginx_main_conf(directory, site))
        self.log_path = directory / "error.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Nginx:
        with open(self.log_path, "a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(NGINX), "-p", str(self.directory), "-c", str(self.conf), "-e", "stderr",
                stdout=log, stderr=log)
        async with asyncio.timeout(10 * SCALE):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"nginx exited: {self.log()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(10 * SCALE):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]
