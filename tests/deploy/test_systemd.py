"""deploy/systemd: a unit systemd accepts, hardened as documented, whose example configuration
loads, and whose MemoryDenyWriteExecute=yes callbridge actually runs under."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
import textwrap

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.auth.tokens import mint
from bridge.config.load import load_config
from tests.deploy.files import DEPLOY, SYSTEMD_UNIT, env_file, seconds, unit_settings
from tests.deploy.processes import SCALE, Serve, clean_environ, serving
from tests.support.redis_server import free_port

UNIT_CONFIG = DEPLOY / "systemd" / "callbridge.toml"
UNIT_ENV = DEPLOY / "systemd" / "callbridge.env.example"


def settings() -> dict[str, list[str]]:
    return unit_settings(SYSTEMD_UNIT)


def one(key: str) -> str:
    values = settings().get(key, [])
    assert len(values) == 1, f"{key}: expected one value, found {values}"
    return values[0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify checks that ExecStart's program exists: point it at this checkout's callbridge,
    # which is what /opt/callbridge/bin/callbridge is on a host.
    program = shutil.which("callbridge", path=str(sys.prefix) + "/bin")
    assert program, "callbridge is not installed in this environment"
    exec_start = one("ExecStart").split()
    assert exec_start[0] == "/opt/callbridge/bin/callbridge"
    unit = tmp_path / "callbridge.service"
    unit.write_text(SYSTEMD_UNIT.read_text().replace(exec_start[0], program))
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0, verified.stderr
    # unknown or misspelt settings are only warned about: none may be reported
    complaints = [line for line in (verified.stdout + verified.stderr).splitlines()
                  if "callbridge.service" in line]
    assert not complaints, "\n".join(complaints)


def test_the_unit_is_hardened():
    s = settings()
    expected = {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM", "MemoryDenyWriteExecute": "yes",
    }
    for key, value in expected.items():
        assert one(key) == value, key
    assert "@system-service" in s["SystemCallFilter"]
    assert int(one("LimitNOFILE")) >= 65536
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    # a build that ends on SIGHUP comes back (systemd counts SIGHUP as a clean exit)
    assert "SIGHUP" in one("RestartForceExitStatus").split()
    assert one("EnvironmentFile") == "/etc/callbridge/callbridge.env"
    assert one("ExecStart").endswith("serve --config /etc/callbridge/callbridge.toml")


def test_stop_timeout_covers_the_shutdown_and_the_example_config_loads():
    config = load_config(str(UNIT_CONFIG), env_file(UNIT_ENV))
    assert seconds(one("TimeoutStopSec")) > 2 * config.server.shutdown_timeout
    assert config.server.host == "127.0.0.1", "behind nginx on the same host"
    # the example's secrets are placeholders, and none is in the config file itself
    text = UNIT_CONFIG.read_text()
    for name, value in env_file(UNIT_ENV).items():
        assert "REPLACE-ME" in value, name
        assert value not in text


#: Runs argv[1:] with PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN): the kernel then refuses memory that
#: is writable and executable at once, as MemoryDenyWriteExecute=yes makes systemd do. Exit 77
#: when the kernel lacks it (before Linux 6.3).
MDWE = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:
        sys.exit(77)
    import mmap
    try:
        mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        os.execv(sys.argv[1], sys.argv[1:])
    sys.exit(78)
""")


def mdwe_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", MDWE, "/bin/true"], env=clean_environ(),
                           timeout=30, check=False)
    assert probe.returncode in (0, 77), "PR_SET_MDWE was accepted but did not refuse W+X memory"
    return probe.returncode == 0


async def reply(ws: ClientConnection) -> str:
    """The type of the next frame that is not a heartbeat."""
    async with asyncio.timeout(10 * SCALE):
        while True:
            message = orjson.loads(await ws.recv())
            if message["type"] != "heartbeat":
                return str(message["type"])


async def test_callbridge_runs_with_memory_deny_write_execute(tmp_path):
    if not mdwe_available():
        pytest.skip("the kernel has no PR_SET_MDWE (Linux >= 6.3) to stand in for systemd")
    jwt_secret = secrets.token_urlsafe(32)
    port = free_port()
    config = tmp_path / "callbridge.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n')
    instance = Serve(config, {"CALLBRIDGE__AUTH__JWT_SECRET": jwt_secret}, tmp_path / "serve.log",
                     wrapper=[sys.executable, "-c", MDWE])
    async with serving(instance):
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            assert (await http.get(f"{instance.url}/healthz")).status_code == 200
        # a websocket session exercises the rest of the serving path
        token = mint(jwt_secret, sub="mdwe", channels=["calls:acme"], ttl=60)
        async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, compression=None,
                           open_timeout=5) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            assert await reply(ws) == "welcome"
            await ws.send(orjson.dumps({"type": "subscribe", "id": 1,
                                        "channels": ["calls:acme"]}).decode())
            assert await reply(ws) == "subscribed"
        assert await instance.stop() == 0, instance.log()
