"""Behind deploy/nginx/callbridge.conf, each client has its own per-address allowance on /ws.

callbridge runs deploy/compose/callbridge.toml with the environment overriding what differs from
the compose network: here nginx is 127.0.0.1, not its compose address, so that is the trusted
proxy; the per-address limit is lowered to 1 to see it bite. Every client connects to nginx
from 127.0.0.1 and names the address it stands for in X-Forwarded-For, to which nginx appends
the peer it saw (``$proxy_add_x_forwarded_for``), as it does for a client on the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.config.load import load_config
from bridge.downstream.protocol import TRY_AGAIN_LATER
from tests.deploy.files import DEPLOY, env_file
from tests.deploy.processes import NGINX, SCALE, Nginx, Serve, serving
from tests.deploy.test_nginx import nginx_directory
from tests.support.redis_server import free_port

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK),
    reason=f"{NGINX} not installed (Debian package nginx-light; .ci/run installs it)")

CONFIG = DEPLOY / "compose" / "callbridge.toml"
SECRETS = DEPLOY / "compose" / "secrets.env"


def test_compose_trusts_its_nginx_only() -> None:
    compose_nginx = "172.28.0.10"
    config = load_config(str(CONFIG), env_file(SECRETS))
    assert config.server.trusted_proxies == [compose_nginx]
    assert config.server.max_connections_per_ip == 1000
    compose = (DEPLOY / "compose.yaml").read_text()
    assert f"ipv4_address: {compose_nginx}" in compose


def test_every_deployed_configuration_uses_the_normal_limit() -> None:
    configs = [CONFIG, DEPLOY / "systemd" / "callbridge.toml"]
    for path in configs:
        server = tomllib.loads(path.read_text())["server"]
        assert server["max_connections_per_ip"] == 1000, path
        assert server["trusted_proxies"], path


@contextlib.asynccontextmanager
async def proxied_client(url: str, token: str, claimed: str) -> AsyncIterator[dict | int]:
    """A /ws client through nginx standing for ``claimed``: the welcome, or the close code."""
    ws = await connect(url, proxy=None, compression=None,
                       additional_headers={"X-Forwarded-For": claimed})
    try:
        try:
            async with asyncio.timeout(10 * SCALE):
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                outcome: dict | int = orjson.loads(await ws.recv())
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            outcome = exc.rcvd.code
        yield outcome
    finally:
        await ws.close()


async def test_clients_behind_nginx_are_counted_apart(tmp_path: Path) -> None:
    secret_env = env_file(SECRETS)
    [account] = load_config(str(CONFIG), secret_env).antbuddy
    tenant_var = re.sub(r"[-.+]", "_", account.tenant.upper())
    nowhere = f"http://127.0.0.1:{free_port()}"  # no upstream: only /ws matters here
    port = free_port()
    instance = Serve(CONFIG, {
        **secret_env,
        "CALLBRIDGE__SERVER__HOST": "127.0.0.1",
        "CALLBRIDGE__SERVER__PORT": str(port),
        "CALLBRIDGE__SERVER__TRUSTED_PROXIES": "127.0.0.1",
        "CALLBRIDGE__SERVER__MAX_CONNECTIONS_PER_IP": "1",
        "CALLBRIDGE__BROKER__URL": "memory://",
        f"CALLBRIDGE__ANTBUDDY__{tenant_var}__OAPI_URL": nowhere,
        f"CALLBRIDGE__ANTBUDDY__{tenant_var}__WS_URL": nowhere,
    }, tmp_path / "callbridge.log")
    token = mint(secret_env["CALLBRIDGE__AUTH__JWT_SECRET"], sub="deploy-test",
                 channels=["calls:demo"], ttl=600)
    async with contextlib.AsyncExitStack() as stack:
        directory = await stack.enter_async_context(nginx_directory())
        await stack.enter_async_context(serving(instance))
        # The file's upstream lists two instances; both are this one here.
        proxy = await stack.enter_async_context(
            Nginx(directory, [f"127.0.0.1:{port}"] * 2, free_port()))
        url = f"{proxy.ws_url}/ws"
        async with proxied_client(url, token, "203.0.113.7") as first, \
                proxied_client(url, token, "203.0.113.8") as second:
            assert isinstance(first, dict) and first["type"] == "welcome", instance.log()
            assert isinstance(second, dict) and second["type"] == "welcome", instance.log()
            async with proxied_client(url, token, "203.0.113.7") as third:
                assert third == TRY_AGAIN_LATER
