"""``[server] trusted_proxies``: the per-address limit of /ws counts clients behind a proxy.

A real uvicorn (bridge_server, as ``callbridge serve`` runs it) and real websockets clients on
127.0.0.1, which plays the proxy: each request says which client it forwards with
X-Forwarded-For, as nginx does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from typing import AsyncIterator

import orjson
import pytest
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint
from bridge.config.model import Config
from bridge.downstream import protocol as p
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server
from tests.downstream.conftest import SCALE

JWT_SECRET = secrets.token_urlsafe(32)


@contextlib.asynccontextmanager
async def bridge(trusted: list[str]) -> AsyncIterator[AppServer]:
    config = Config.model_validate({
        "server": {"host": "127.0.0.1", "port": 0, "max_connections_per_ip": 1,
                   "trusted_proxies": trusted},
        "auth": {"jwt_secret": JWT_SECRET}})
    async with bridge_server(build_app(config), config) as server:
        yield server


@contextlib.asynccontextmanager
async def client_via_proxy(server: AppServer, forwarded_for: str
                           ) -> AsyncIterator[tuple[ClientConnection, dict | int]]:
    """A /ws connection saying it forwards ``forwarded_for``; yields the connection and either
    the welcome message or the close code it was refused with."""
    token = mint(JWT_SECRET, sub="proxied", channels=["calls:acme"], ttl=600)
    ws = await connect(f"{server.ws_url}/ws", proxy=None, compression=None,
                       additional_headers={"X-Forwarded-For": forwarded_for})
    try:
        outcome: dict | int
        try:
            async with asyncio.timeout(5 * SCALE):
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                outcome = orjson.loads(await ws.recv())
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            outcome = exc.rcvd.code
        yield ws, outcome
    finally:
        await ws.close()


async def test_each_forwarded_client_gets_its_own_allowance() -> None:
    async with bridge(["127.0.0.1"]) as server:
        async with client_via_proxy(server, "203.0.113.7") as (_, first), \
                client_via_proxy(server, "198.51.100.20, 203.0.113.8") as (_, second):
            assert isinstance(first, dict) and first["type"] == "welcome"
            assert isinstance(second, dict) and second["type"] == "welcome"
            # The same client again: over its own limit of one.
            async with client_via_proxy(server, "203.0.113.7") as (_, third):
                assert third == p.TRY_AGAIN_LATER
        # Its first connection closed: that client may connect again.
        async with client_via_proxy(server, "203.0.113.7") as (_, again):
            assert isinstance(again, dict) and again["type"] == "welcome"


async def test_a_network_can_be_trusted() -> None:
    async with bridge(["127.0.0.0/8"]) as server:
        async with client_via_proxy(server, "203.0.113.7") as (_, first), \
                client_via_proxy(server, "203.0.113.8") as (_, second):
            assert first != p.TRY_AGAIN_LATER and second != p.TRY_AGAIN_LATER


async def test_without_trusted_proxies_the_header_is_ignored() -> None:
    async with bridge([]) as server:
        async with client_via_proxy(server, "203.0.113.7") as (_, first):
            assert isinstance(first, dict) and first["type"] == "welcome"
            # Another "client" by the header, but the same peer: the socket's address counts.
            async with client_via_proxy(server, "203.0.113.8") as (_, second):
                assert second == p.TRY_AGAIN_LATER


async def test_a_proxy_not_trusted_is_not_believed() -> None:
    async with bridge(["192.0.2.1"]) as server:
        async with client_via_proxy(server, "203.0.113.7") as (_, first):
            assert isinstance(first, dict) and first["type"] == "welcome"
            async with client_via_proxy(server, "203.0.113.8") as (_, second):
                assert second == p.TRY_AGAIN_LATER


@pytest.mark.parametrize("value", ["nginx", "10.0.0.300", "10.0.0.0/33", "*"])
def test_trusted_proxies_must_be_addresses_or_networks(value: str) -> None:
    with pytest.raises(ValidationError,
                       match=re.escape(f"must list IP addresses or networks, got {value!r}")):
        Config.model_validate({"server": {"trusted_proxies": [value]},
                               "auth": {"jwt_secret": JWT_SECRET}})


def test_networks_are_normalized() -> None:
    config = Config.model_validate({
        "server": {"trusted_proxies": ["10.1.2.3/8", " ::1 ", "172.28.0.10"]},
        "auth": {"jwt_secret": JWT_SECRET}})
    assert config.server.trusted_proxies == ["10.0.0.0/8", "::1", "172.28.0.10"]
