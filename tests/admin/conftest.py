"""Admin tests: the bridge under real uvicorn, started from a configuration *file* (reloads read
it again), the AntBuddy simulator, real websocket clients, the shared Redis under a unique
key prefix."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import pytest
import tomli_w

from bridge.auth.tokens import mint_api
from bridge.config.load import load_config
from bridge.core.service import Service
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server
from bridge.redisconn.clients import drop_prefix
from tests.scenarios.conftest import (  # noqa: F401  (fixtures shared with these tests)
    APP_ID,
    APP_SECRET,
    JWT_SECRET,
    start_bridge,
    start_simulator,
)

SHARED_REDIS = "redis://127.0.0.1:6379/0"
ADMIN = mint_api(JWT_SECRET, sub="ops", scopes=["admin"], ttl=3600)


toml = tomli_w.dumps


def antbuddy(sim: AppServer, tenant: str, account_id: str, **extra: Any) -> dict[str, Any]:
    """One ``[[antbuddy]]`` block against the simulator."""
    return {"tenant": tenant, "oapi_url": sim.url, "ws_url": sim.ws_url, "dialect": "kazoo-json",
            "app_id": APP_ID, "app_secret": APP_SECRET, "account_id": account_id, **extra}


def config_data(accounts: list[dict[str, Any]], *, prefix: str | None = None,
                **sections: Any) -> dict[str, Any]:
    """A whole configuration: Redis under ``prefix`` (memory:// when None), fast reconnects."""
    broker = {"url": SHARED_REDIS, "prefix": prefix, "probe_interval": 0.5} if prefix \
        else {"url": "memory://"}
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout": 5.0},
        "broker": broker,
        "auth": {"jwt_secret": JWT_SECRET},
        "upstream": {"reconnect_initial": 0.1, "reconnect_max": 0.5},
        "lease": {"ttl": 3.0},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            data[name] = {**data.get(name, {}), **values}
        else:
            data[name] = values
    data["antbuddy"] = accounts
    return data


class Bridge:
    """One in-process instance: its service, server and configuration file."""

    def __init__(self, service: Service, server: AppServer, path: str) -> None:
        self.service = service
        self.server = server
        self.path = path

    @property
    def url(self) -> str:
        return self.server.url

    def write(self, data: dict[str, Any] | str) -> None:
        with open(self.path, "w") as f:
            f.write(data if isinstance(data, str) else toml(data))

    async def call(self, method: str, path: str, *, token: str | None = ADMIN,
                   **options: Any) -> httpx.Response:
        headers = dict(options.pop("headers", {}))
        if token:
            headers["authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            return await http.request(method, f"{self.url}{path}", headers=headers, **options)

    def stream(self, name: str) -> Any:
        return next(s for s in self.service.streams if s.name == name)


@pytest.fixture
async def start_bridge_file(tmp_path: Any) -> AsyncIterator[Callable[..., Awaitable[Bridge]]]:
    servers: list[AppServer] = []

    async def start(data: dict[str, Any], name: str = "bridge") -> Bridge:
        path = str(tmp_path / f"{name}-{secrets.token_hex(3)}.toml")
        with open(path, "w") as f:
            f.write(toml(data))
        config = load_config(path, os.environ)
        service = Service(config)
        server = bridge_server(build_app(config, service, config_path=path), config)
        await server.start()
        servers.append(server)
        return Bridge(service, server, path)

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own, deleted afterwards."""
    value = f"cbtest-admin-{secrets.token_hex(4)}:"
    yield value
    with contextlib.suppress(Exception):
        await drop_prefix(SHARED_REDIS, value)
