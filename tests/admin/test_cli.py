"""``callbridge admin`` as a real subprocess against a running bridge."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from bridge.auth.tokens import mint
from tests.admin.clients import Client
from tests.admin.conftest import ADMIN, antbuddy, config_data
from tests.scenarios.conftest import ACCOUNT, JWT_SECRET, SCALE, TENANT, eventually

STREAM = f"antbuddy/{TENANT}/{ACCOUNT}"


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("CALLBRIDGE__", "CALLBRIDGE_ADMIN"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "admin", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**clean, **(env or {})})
    async with asyncio.timeout(30 * SCALE):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_admin_command_drives_a_running_instance(start_simulator, start_bridge_file):
    _, sim = await start_simulator()
    bridge = await start_bridge_file(config_data([antbuddy(sim, TENANT, ACCOUNT)]))
    stream = bridge.stream(STREAM)
    await eventually(lambda: stream.status.state.value == "subscribed", 10, "the stream")
    url = ["--url", bridge.url]

    code, out, err = await cli(*url, "--token", ADMIN, "streams")
    assert code == 0, err
    header, row = out.splitlines()[1:3]
    assert header.split()[:2] == ["STREAM", "STATE"]
    assert row.split()[:2] == [STREAM, "subscribed"]
    assert "PROVIDER" in out and f"antbuddy-rest/{TENANT}/{ACCOUNT}" in out

    # The token from the environment; JSON output
    code, out, err = await cli(*url, "--json", "streams", env={"CALLBRIDGE_ADMIN_TOKEN": ADMIN})
    assert code == 0, err
    assert [s["name"] for s in orjson.loads(out)["streams"]] == [STREAM]

    # A token minted from the configuration file
    code, out, err = await cli(*url, "--config", bridge.path, "reconnect", STREAM)
    assert (code, out) == (0, f"{STREAM}: reconnecting\n"), err
    await eventually(lambda: stream.status.reconnects == 1, 10, "the reconnect")

    client = await Client.open(bridge.server.ws_url, mint(
        JWT_SECRET, sub="crm-5", channels=["calls:acme"], token_id="jti-5"), ["calls:acme"])
    try:
        code, out, err = await cli(*url, "--token", ADMIN, "clients", "--channel", "calls:acme")
        assert code == 0, err
        assert out.splitlines()[0].endswith(": 1 client(s)")
        assert out.splitlines()[2].split()[:4] == [client.session, "crm-5", "jti-5", "127.0.0.1"]
        code, out, err = await cli(*url, "--token", ADMIN, "clients", "--all")
        assert code == 0, err
        assert out.splitlines()[0] == "1 client(s) on 1 instance(s)"
        assert out.splitlines()[1].split()[:2] == ["INSTANCE", "SESSION"]
        assert out.splitlines()[2].split()[:3] == [bridge.service.leases.instance_id,
                                                   client.session, "crm-5"]
        code, out, err = await cli(*url, "--token", ADMIN, "disconnect", client.session)
        assert (code, out) == (0, f"{client.session}: closed with 4010\n"), err
        assert await client.wait_closed() == 4010
    finally:
        await client.close()

    code, out, err = await cli(*url, "--token", ADMIN, "revoke", "jti-5")
    assert code == 0 and out.startswith("jti-5: revoked until ") and "(default)" in out, err

    code, out, err = await cli(*url, "--token", ADMIN, "reload")
    assert code == 0, err
    assert f"unchanged {STREAM}" in " ".join(out.split())

    # Refusals: exit 1 with the server's reason; no token at all: exit 2
    code, out, err = await cli(*url, "--token", ADMIN, "disconnect", "0000000000000000")
    assert code == 1 and "404 not_found" in err
    code, out, err = await cli(*url, "--token", "not-a-token", "streams")
    assert code == 1 and "401 invalid_token" in err
    code, out, err = await cli(*url, "streams")
    assert code == 2 and "no token" in err
