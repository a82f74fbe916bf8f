"""Two callbridge instances behind nginx (deploy/nginx/callbridge.conf), set up as compose does.

The instances load deploy/compose/callbridge.toml with compose/secrets.env; the environment
overrides only what differs between this machine and the compose network (addresses, ports, a
unique Redis prefix, a short lease ttl). The simulator plays the upstream with the app compose
gives it, and nginx runs the configuration as written, with the upstream addresses and the
listen port replaced.

A websocket client talks to nginx only. The instance holding it is stopped (SIGTERM, as
``docker compose stop`` does), and later the other one, after the first was restarted: each
time the client reconnects through nginx, lands on the instance still running, resumes from its
last (epoch, offset), and receives exactly the channel's history it missed, with no duplicate.
While one instance is down, plain requests through nginx all succeed too (proxy_next_upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bridge.auth.tokens import mint
from bridge.config.load import load_config
from bridge.http.serving import AppServer
from bridge.redisconn.clients import drop_prefix
from bridge.simulator.app import Simulator, SimulatorSettings
from tests.deploy.files import DEPLOY, env_file, simulator_app
from tests.deploy.processes import NGINX, SCALE, Nginx, Serve, serving
from tests.scenarios.conftest import eventually
from tests.support.redis_server import free_port

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK),
    reason=f"{NGINX} not installed (Debian package nginx-light; .ci/run installs it)")

SHARED_REDIS = "redis://127.0.0.1:6379/0"
CONFIG = DEPLOY / "compose" / "callbridge.toml"
SECRETS = DEPLOY / "compose" / "secrets.env"


class ResumingClient:
    """A websocket client that keeps the last (epoch, offset) of its channel and, on every
    (re)connection, subscribes with it as ``resume`` (docs/protocol.md)."""

    def __init__(self, url: str, token: str, channel: str) -> None:
        self.url = url
        self.token = token
        self.channel = channel
        self.events: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.close_codes: list[int | None] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def open(self) -> None:
        """Connect through nginx (retrying while it answers 502), authenticate, subscribe (with
        ``resume`` once an event was seen); return when the subscription is confirmed."""
        deadline = time.monotonic() + 15 * SCALE
        while True:
            try:
                self._ws = await connect(self.url, proxy=None, compression=None,
                                         open_timeout=5 * SCALE)
                break
            except (OSError, InvalidHandshake, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        subscribe: dict[str, Any] = {"type": "subscribe", "id": "s", "channels": [self.channel]}
        if self.events:
            last = self.events[-1]
            subscribe["resume"] = {self.channel: {"epoch": last["epoch"],
                                                  "offset": last["offset"]}}
        await self._ws.send(orjson.dumps({"type": "auth", "token": self.token}).decode())
        await self._ws.send(orjson.dumps(subscribe).decode())
        self._subscribed.clear()
        self._reader = asyncio.create_task(self._read(self._ws))
        async with asyncio.timeout(10 * SCALE):
            await self._subscribed.wait()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                message = orjson.loads(frame)
                if message["type"] == "event":
                    self.events.append(message)
                else:
                    self.replies.append(message)
                    if message["type"] == "subscribed":
                        self._subscribed.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)

    async def closed_with(self) -> int | None:
        """Wait for the server to close the connection; its close code."""
        assert self._reader is not None
        async with asyncio.timeout(15 * SCALE):
            await asyncio.shield(self._reader)
        return self.close_codes[-1]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def replies_of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.replies if r["type"] == kind]


@contextlib.asynccontextmanager
async def nginx_directory() -> AsyncIterator[Path]:
    """A directory nginx's workers can reach: when the test runs as root they run as nobody."""
    directory = Path(tempfile.mkdtemp(prefix="callbridge-nginx-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def ready(instance: Serve) -> bool:
    return (await instance.get("/readyz")).status_code == 200


async def clients_on(instances: list[Serve]) -> list[int]:
    """How many websocket clients each running instance holds (0 for a stopped one)."""
    counts = []
    for instance in instances:
        counts.append((await instance.get("/readyz")).json()["clients"]["clients"]
                      if instance.running else 0)
    return counts


async def holder_of_the_client(instances: list[Serve]) -> Serve:
    async def one_holder() -> bool:
        return sorted(await clients_on(instances)) == [0, 1]

    await eventually(one_holder, 10, "exactly one instance to hold the client")
    return instances[(await clients_on(instances)).index(1)]


async def test_a_client_through_nginx_resumes_on_the_other_instance_each_time_one_stops(
        tmp_path):
    secret_env = env_file(SECRETS)
    [account] = load_config(str(CONFIG), secret_env).antbuddy
    app = simulator_app()
    tenant_var = re.sub(r"[-.+]", "_", account.tenant.upper())
    channel = f"calls:{account.tenant}"
    prefix = f"cbtest-deploy-{secrets.token_hex(4)}:"
    stream_key = f"{prefix}{{{channel}}}:stream"
    simulator = Simulator(SimulatorSettings(
        apps={app.app_id: app.app_secret}, accounts=app.accounts,
        extensions=["1001", "1002", "1003"], traffic=False, time_scale=0.02, seed=17))
    ports = [free_port(), free_port()]

    def instance(n: int, sim: AppServer) -> Serve:
        return Serve(CONFIG, {
            **secret_env,
            "CALLBRIDGE__SERVER__HOST": "127.0.0.1",
            "CALLBRIDGE__SERVER__PORT": str(ports[n]),
            "CALLBRIDGE__BROKER__URL": SHARED_REDIS,
            "CALLBRIDGE__BROKER__PREFIX": prefix,
            "CALLBRIDGE__LEASE__TTL": "2",
            "CALLBRIDGE__LEASE__INSTANCE_ID": f"callbridge-{n + 1}",
            f"CALLBRIDGE__ANTBUDDY__{tenant_var}__OAPI_URL": sim.url,
            f"CALLBRIDGE__ANTBUDDY__{tenant_var}__WS_URL": sim.ws_url,
        }, tmp_path / f"callbridge-{n + 1}.log")

    redis = aioredis.Redis.from_url(SHARED_REDIS)

    async def published_after(offset: str, count: int) -> bool:
        return len(await redis.xrange(stream_key, min=f"({offset}", max="+")) >= count

    async def caught_up(client: ResumingClient) -> bool:
        [(newest, _)] = await redis.xrevrange(stream_key, count=1)
        return bool(client.events) and client.events[-1]["offset"] == newest.decode()

    token = mint(secret_env["CALLBRIDGE__AUTH__JWT_SECRET"], sub="deploy-test",
                 channels=[channel], ttl=600)
    try:
        async with contextlib.AsyncExitStack() as stack:
            sim = await stack.enter_async_context(AppServer(simulator.build_app()))
            directory = await stack.enter_async_context(nginx_directory())
            group = [instance(0, sim), instance(1, sim)]
            await stack.enter_async_context(serving(*group))
            proxy = await stack.enter_async_context(
                Nginx(directory, [f"127.0.0.1:{port}" for port in ports], free_port()))
            for one in group:
                await eventually(functools.partial(ready, one), 15, "both instances ready")
            async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
                assert (await http.get(f"{proxy.url}/readyz")).status_code == 200

            client = ResumingClient(f"{proxy.ws_url}/ws", token, channel)
            stack.push_async_callback(client.close)
            await client.open()
            simulator.start_traffic(4.0)
            stack.push_async_callback(simulator.stop_traffic)
            for round_ in range(2):
                seen = len(client.events)
                await eventually(lambda: len(client.events) >= seen + 5, 15,  # noqa: B023
                                 "events before the stop")
                holder = await holder_of_the_client(group)
                other = group[1 - group.index(holder)]
                assert await holder.stop() == 0, holder.log()
                assert await client.closed_with() == 1012, "service restart: reconnect, resume"
                # events go on while the client is away: the other instance runs the upstream
                await eventually(
                    functools.partial(published_after, client.events[-1]["offset"], 5), 15,
                    "events published while the client was away")
                if round_ == 0:
                    await passive_failover(proxy)
                await client.open()
                assert await holder_of_the_client(group) is other, \
                    "nginx must pass the reconnection to the running instance"
                if round_ == 0:
                    # the stopped instance comes back; the next stop hits the other one
                    await holder.start()
                    await eventually(functools.partial(ready, holder), 15,
                                     "the restarted instance to be ready")
            await simulator.stop_traffic()
            await eventually(functools.partial(caught_up, client), 15,
                             "the client to receive the newest event")
            assert_nginx_log_clean(proxy)
        entries = await redis.xrange(stream_key, min=client.events[0]["offset"],
                                     max=client.events[-1]["offset"])
    finally:
        await redis.aclose()
        await drop_prefix(SHARED_REDIS, prefix)

    history = [(entry_id.decode(), orjson.loads(fields[b"e"])["id"])
               for entry_id, fields in entries]
    received = [(m["offset"], m["event"]["id"]) for m in client.events]
    assert len(received) == len({event_id for _, event_id in received}), "duplicate event"
    assert received == history, "the client's events differ from the channel's history"
    assert len({m["epoch"] for m in client.events}) == 1
    assert not client.replies_of("gap"), client.replies_of("gap")
    assert len(client.replies_of("welcome")) == 3
    assert client.close_codes[:2] == [1012, 1012]


async def passive_failover(proxy: Nginx) -> None:
    """With one instance stopped, plain requests through nginx still all succeed: those sent to
    the stopped one are refused there and passed to the other (proxy_next_upstream)."""
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        for _ in range(4):
            assert (await http.get(f"{proxy.url}/healthz")).status_code == 200
    # least_conn breaks ties round-robin: one of those went to the stopped instance first
    assert "Connection refused" in proxy.log(), proxy.log()


def assert_nginx_log_clean(proxy: Nginx) -> None:
    """nginx reported no serious problem (errors about the stopped instance are expected:
    that is the failover at work)."""
    log = proxy.log()
    assert "[emerg]" not in log and "[alert]" not in log and "[crit]" not in log, log
