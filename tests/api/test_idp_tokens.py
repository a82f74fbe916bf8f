"""A real callbridge app taking the identity provider's RS256 tokens from its JWKS, on ``/ws``
and on the HTTP API, beside its own HS256 tokens; a JWKS that cannot be fetched is a reason to
retry, shown in ``/readyz`` and ``/metrics``, never a way in."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, AsyncIterator

import httpx
import orjson
from websockets.asyncio.client import connect

from bridge.auth.tokens import mint, mint_api
from bridge.config.model import Config
from bridge.http.app import build_app
from bridge.http.serving import AppServer
from tests.auth.idp import ISSUER, Provider
from tests.downstream.harness import close_code, recv, subscribe

JWT_SECRET = secrets.token_urlsafe(32)
WAIT = 10.0


def config(jwks_url: str) -> Config:
    return Config.model_validate({
        "server": {"host": "127.0.0.1", "port": 0},
        "broker": {"url": "memory://"},
        "auth": {"jwt_secret": JWT_SECRET, "jwks_url": jwks_url, "issuer": ISSUER,
                 "jwks_min_refresh": 0.0, "roles_claim": "roles",
                 "roles": {"supervisor": {"channels": ["calls:acme", "calls:acme:*"],
                                          "scopes": ["calls:read"], "tenants": ["acme"]},
                           "ops": {"scopes": ["admin"]}}},
    })


@contextlib.asynccontextmanager
async def bridge(jwks_url: str) -> AsyncIterator[AppServer]:
    async with AppServer(build_app(config(jwks_url))) as server:
        yield server


@contextlib.asynccontextmanager
async def ws_client(server: AppServer, token: str) -> AsyncIterator[Any]:
    async with connect(server.ws_url + "/ws", compression=None, open_timeout=WAIT) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        yield ws


async def get(server: AppServer, path: str, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
        return await http.get(path, headers=headers)


async def test_rs256_tokens_from_the_jwks_on_ws_and_the_api() -> None:
    idp = Provider()
    idp.add("2024-10")
    async with idp.serving() as url, bridge(url) as server:
        # Channels from the role mapping: subscribe works for them, not for others.
        async with ws_client(server, idp.token("2024-10", roles=["supervisor"])) as ws:
            welcome = await recv(ws)
            assert welcome["type"] == "welcome" and welcome["sub"] == "agent-7"
            assert (await subscribe(ws, "calls:acme:1001"))["type"] == "subscribed"
            refused = await subscribe(ws, "calls:other", cid="x")
            assert refused["type"] == "error" and refused["code"] == "forbidden"
            renew = idp.token("2024-10", roles=["supervisor"])
            await ws.send(orjson.dumps({"type": "renew", "id": "r", "token": renew}).decode())
            assert (await recv(ws))["type"] == "renewed"
        # Channels from the channels claim.
        async with ws_client(server, idp.token("2024-10", channels=["calls:beta"])) as ws:
            assert (await recv(ws))["type"] == "welcome"
            assert (await subscribe(ws, "calls:beta"))["type"] == "subscribed"
        # The API: scopes and tenants from the roles (acme passes the token checks and has
        # no provider here; beta is not the token's).
        api = idp.token("2024-10", aud="callbridge-api", roles=["supervisor"])
        answer = await get(server, "/api/v1/state/acme/calls", api)
        assert answer.json()["error"]["code"] == "unknown_tenant"
        assert (await get(server, "/api/v1/state/beta/calls", api)).status_code == 403
        assert (await get(server, "/admin/clients", api)).status_code == 403
        ops = idp.token("2024-10", aud="callbridge-api", roles=["ops"])
        assert (await get(server, "/admin/clients", ops)).status_code == 200
        # A /ws token is not an API token, nor the other way round.
        ws_token = idp.token("2024-10", roles=["supervisor"])
        assert (await get(server, "/api/v1/state/acme/calls", ws_token)).status_code == 401
        async with ws_client(server, api) as ws:
            assert await close_code(ws) == 4001
        # callbridge's own HS256 tokens keep working beside them.
        async with ws_client(server, mint(JWT_SECRET, sub="crm", channels=["calls:acme"])) as ws:
            assert (await recv(ws))["type"] == "welcome"
        own = mint_api(JWT_SECRET, sub="crm", scopes=["admin"])
        assert (await get(server, "/admin/clients", own)).status_code == 200
        metrics = (await get(server, "/metrics")).text
        assert "callbridge_jwks_keys 1.0" in metrics
        assert "callbridge_jwks_refresh_failures_total 0.0" in metrics


async def test_jwks_down_at_start_means_retry_and_not_ready() -> None:
    idp = Provider()
    idp.add("k1")
    idp.down = True
    async with idp.serving() as url, bridge(url) as server:
        async with ws_client(server, idp.token("k1", roles=["supervisor"])) as ws:
            assert await close_code(ws) == 1013  # try again later
        api = idp.token("k1", aud="callbridge-api", roles=["supervisor"])
        answer = await get(server, "/api/v1/state/acme/calls", api)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "retry_later"
        assert answer.headers["retry-after"] == "1"
        ready = await get(server, "/readyz")
        assert ready.status_code == 503
        jwks = ready.json()["jwks"]
        assert jwks["fetched"] is False and jwks["failing"] is True
        assert "HTTP 503" in jwks["last_error"]
        # HS256 tokens do not depend on the JWKS.
        own = mint_api(JWT_SECRET, sub="crm", scopes=["admin"])
        assert (await get(server, "/admin/clients", own)).status_code == 200
        assert "callbridge_jwks_up 0.0" in (await get(server, "/metrics")).text


async def test_jwks_down_after_a_fetch_keeps_working_and_reports_it() -> None:
    idp = Provider()
    idp.add("k1")
    idp.add("k2", publish=False)
    async with idp.serving() as url, bridge(url) as server:
        idp.down = True
        async with ws_client(server, idp.token("k2", roles=["supervisor"])) as ws:
            assert await close_code(ws) == 1013  # its key may be in the JWKS: retry
        async with ws_client(server, idp.token("k1", roles=["supervisor"])) as ws:
            assert (await recv(ws))["type"] == "welcome"  # the cached key still works
        ready = await get(server, "/readyz")
        assert ready.status_code == 200, ready.json()
        jwks = ready.json()["jwks"]
        assert jwks["failing"] is True and jwks["keys"] == 1 and jwks["failures"] == 1
        metrics = (await get(server, "/metrics")).text
        assert "callbridge_jwks_refresh_failures_total 1.0" in metrics
        assert "callbridge_jwks_last_success_age_seconds" in metrics
