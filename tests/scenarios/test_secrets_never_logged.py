"""No secret in any log line, nor in /metrics: ``callbridge serve`` run for real, at DEBUG.

Every kind of secret is configured: the JWT key, AntBuddy app secrets and SIP passwords,
Quickom API keys and signing secrets, ePacific keys, Kompaas tokens and webhook secrets, and a
Redis password (a private ``redis-server`` with ``requirepass``). Traffic goes through every
provider's fake, and the error paths where an upstream echoes what it was sent are provoked:

- the AntBuddy simulator refuses an expired token on subscribe, echoing the token, as Kazoo does;
- an "echo" upstream answers every request of a second account of each provider with an error
  that repeats the request's headers and body: the app hash and SIP password, the Quickom
  ``Authorization``, the ePacific ``api_key``/``api_secret``, the Kompaas bearer token;
- a Quickom webhook with a wrong signature, a Kompaas webhook with a wrong secret, a websocket
  client with a forged JWT and one with an expired JWT;
- Redis restarted under the bridge (errors, reconnects, the outage buffer).

The whole stderr of the process (JSON lines) and a /metrics scrape must then hold none of the
configured secrets, none of the upstream tokens the simulator issued, none of the app hashes
(they authenticate as well as the secret they are made from), and none of the client or API
tokens used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import orjson
import redis.asyncio as aioredis
import tomli_w
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint, mint_api
from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings
from bridge.simulator.calls import Endpoint, Outcome, plan_call
from bridge.simulator.suite import ProviderFakes
from bridge.upstream.tokens import app_hash
from tests.deploy.processes import SCALE, Serve
from tests.http.scrape import scrape
from tests.scenarios.conftest import eventually
from tests.support.redis_server import PrivateRedis, private_redis

TENANT = "acme"
ECHO = "echo"
ACCOUNT = "acct-main"
APP_ID = "secret-app"


ORDINARY_HEADERS = {"host", "accept", "accept-encoding", "connection", "user-agent",
                    "content-length", "content-type"}


class EchoUpstream:
    """Answers every request with an error repeating its headers and body, as careless
    servers do: 500 to Kompaas (whose client logs the message of a 5xx), 401 to the rest."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()

    def build_app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            self.paths[request.url.path] += 1
            body = (await request.body()).decode("utf-8", "replace")
            # What was presented comes first: callers keep only the start of an error text.
            presented = [v for k, v in request.headers.items() if k not in ORDINARY_HEADERS]
            text = f"refused {presented} {body} on {request.method} {request.url.path}"
            status = 500 if "confirmationCall" in request.url.path else 401
            return JSONResponse({"status": "error", "error": text, "message": text},
                                status_code=status)

        methods = ["GET", "POST", "PUT", "DELETE"]
        return Starlette(routes=[Route("/", echo, methods=methods),
                                 Route("/{path:path}", echo, methods=methods)])


@contextlib.asynccontextmanager
async def redis_with_password(password: str) -> AsyncIterator[PrivateRedis]:
    async with private_redis() as server:
        await require_password(server, password)
        yield server


async def require_password(server: PrivateRedis, password: str) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        await client.config_set("requirepass", password)
    finally:
        await client.aclose()


async def refused_client(ws_url: str, token: str) -> int | None:
    """A /ws client presenting ``token``; the close code it gets (None: accepted)."""
    try:
        async with connect(f"{ws_url}/ws", proxy=None, compression=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            async with asyncio.timeout(10 * SCALE):
                while True:
                    if orjson.loads(await ws.recv())["type"] == "welcome":
                        return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


def shutdown_lines(path: Path, keep: int = 80) -> str:
    """The log's last lines without the HTTP client's DEBUG chatter: what a shutdown did."""
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if '"logger":"httpcore' not in line and "poll done in" not in line]
    return "\n".join(lines[-keep:])


async def test_no_secret_reaches_a_log_line_or_a_metric(tmp_path: Path) -> None:
    def secret(n: int = 24) -> str:
        return secrets.token_urlsafe(n)

    jwt_secret, redis_password = secret(32), secret(16)
    app_secret, sip_password = secret(), secret()
    echo_app_secret, echo_sip_password = secret(), secret()
    fakes = ProviderFakes("suite", interval=0.5)
    fakes.kompaas.delay = 0.2
    echo_keys = {"quickom_api_key": secret(), "quickom_signing": secret(),
                 "epacific_key": secret(), "epacific_secret": secret(),
                 "kompaas_token": secret(), "kompaas_webhook": secret()}

    simulator = Simulator(SimulatorSettings(
        apps={APP_ID: app_secret}, accounts=[ACCOUNT], traffic=False))
    issued: list[str] = []
    issue = simulator.tokens.issue

    def recording_issue(app_id: str) -> tuple[str, float]:
        token, expires_at = issue(app_id)
        issued.append(token)
        return token, expires_at

    simulator.tokens.issue = recording_issue  # type: ignore[method-assign]
    echo = EchoUpstream()
    log_path = tmp_path / "callbridge.log"

    async with contextlib.AsyncExitStack() as stack:
        redis = await stack.enter_async_context(redis_with_password(redis_password))
        sim = await stack.enter_async_context(AppServer(simulator.build_app()))
        echo_server = await stack.enter_async_context(AppServer(echo.build_app()))
        await stack.enter_async_context(fakes.running())
        suite = fakes.config()
        config = {
            "server": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "DEBUG"},
            "upstream": {"auth_retry": 1.0, "reconnect_initial": 0.1, "reconnect_max": 0.5,
                         "request_timeout": 3.0, "token_unavailable_after": 1.0},
            "broker": {"prefix": "cbsecret:", "probe_interval": 0.5},
            "antbuddy": [
                {"tenant": TENANT, "oapi_url": sim.url, "ws_url": sim.ws_url,
                 "dialect": "kazoo-json", "app_id": APP_ID, "app_secret": app_secret,
                 "account_id": ACCOUNT, "sip_user": "acme-1001", "sip_password": sip_password},
                {"tenant": ECHO, "oapi_url": echo_server.url, "ws_url": echo_server.ws_url,
                 "dialect": "kazoo-json", "app_id": "echo-app", "app_secret": echo_app_secret,
                 "account_id": "acct-echo", "sip_user": "echo-1001",
                 "sip_password": echo_sip_password}],
            "quickom": [*suite["quickom"], {
                "tenant": ECHO, "api_url": echo_server.url,
                "api_key": echo_keys["quickom_api_key"],
                "signing_secret": echo_keys["quickom_signing"], "backfill_interval": 1.0}],
            "epacific": [*suite["epacific"], {
                "tenant": ECHO, "api_url": echo_server.url,
                "api_key": echo_keys["epacific_key"], "api_secret": echo_keys["epacific_secret"],
                "poll_interval": 1.0, "presence_interval": 1.0}],
            "kompaas": [*suite["kompaas"], {
                "tenant": ECHO, "api_url": echo_server.url,
                "api_token": echo_keys["kompaas_token"],
                "webhook_secret": echo_keys["kompaas_webhook"]}],
        }
        config_path = tmp_path / "callbridge.toml"
        config_path.write_text(tomli_w.dumps(config))
        bridge = Serve(config_path, {
            "CALLBRIDGE__AUTH__JWT_SECRET": jwt_secret,
            "CALLBRIDGE__BROKER__URL": f"redis://:{redis_password}@127.0.0.1:{redis.port}/0",
        }, log_path)
        stack.push_async_callback(bridge.kill)
        await bridge.start()
        http = await stack.enter_async_context(httpx.AsyncClient(trust_env=False, timeout=10))
        ws_url = bridge.url.replace("http://", "ws://")

        async def stream_state(tenant: str) -> dict[str, Any]:
            body = (await http.get(f"{bridge.url}/readyz")).json()
            [stream] = [s for s in body["streams"] if s["tenant"] == tenant]
            return stream

        async def subscribed() -> bool:
            return (await stream_state(TENANT))["state"] == "subscribed"

        await eventually(subscribed, 15, "the AntBuddy stream to subscribe")
        client_jwt = mint(jwt_secret, sub="softphone", ttl=600, channels=[
            f"calls:{TENANT}", "calls:suite", "verifications:suite", "presence:suite"])
        api_token = mint_api(jwt_secret, sub="crm", ttl=600,
                             scopes=["calls:read", "calls:dial", "verifications:write"])
        bearer = {"authorization": f"Bearer {api_token}"}
        events: list[dict[str, Any]] = []
        async with connect(f"{ws_url}/ws", proxy=None, compression=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": client_jwt}).decode())
            await ws.send(orjson.dumps({"type": "subscribe", "id": 1, "channels": [
                f"calls:{TENANT}", "calls:suite", "verifications:suite"]}).decode())

            async def read() -> None:
                async for frame in ws:
                    message = orjson.loads(frame)
                    if message["type"] == "event":
                        events.append(message["event"])

            reader = asyncio.create_task(read())
            stack.callback(reader.cancel)

            # AntBuddy: a call, then a token the simulator refuses (and echoes) on subscribe.
            for signal in plan_call(random.Random(3), start=time.time(), account_id=ACCOUNT,
                                    realm="sim.callbridge.local", caller=Endpoint("1001"),
                                    callee=Endpoint("1002"), outcome=Outcome.BUSY):
                simulator.emit(ACCOUNT, signal.name, signal.payload)
            simulator.tokens.clock = lambda: time.time() + 7200
            assert (await http.post(f"{sim.url}/_sim/drop")).json()["dropped"] >= 1

            async def refused_then_back() -> bool:
                stream = await stream_state(TENANT)
                return stream["reconnects"] >= 1 and stream["state"] == "subscribed" \
                    and len(issued) >= 2
            await eventually(refused_then_back, 20, "a refused token, a new one, resubscribed")
            simulator.tokens.clock = time.time

            # Click-to-call through the API: the echo account's oapi repeats the SIP password.
            for tenant in (TENANT, ECHO):
                await http.post(f"{bridge.url}/api/v1/antbuddy/{tenant}/calls",
                                json={"number": "1002"}, headers=bearer)

            # Quickom: a signed webhook, and one with a wrong signature.
            call = fakes.quickom.add_call(records=1)
            assert (await fakes.quickom.deliver(
                f"{bridge.url}/webhooks/quickom/suite", call)).status_code == 200
            forged = await fakes.quickom.deliver(f"{bridge.url}/webhooks/quickom/suite",
                                                 fakes.quickom.add_call(), signature="0" * 64)
            assert forged.status_code in (401, 403)

            # Kompaas: a verification through the fake, one through the echo upstream, and a
            # webhook with a wrong secret.
            fakes.kompaas.webhook_url = f"{bridge.url}/webhooks/kompaas/suite"
            fakes.kompaas.webhook_headers = {"X-Callbridge-Secret": fakes.kompaas_secret}
            for tenant in ("suite", ECHO):
                await http.post(f"{bridge.url}/api/v1/kompaas/{tenant}/verifications",
                                json={"phone_number": "421900123456"}, headers=bearer)
            wrong = await http.post(f"{bridge.url}/webhooks/kompaas/suite", json={},
                                    headers={"X-Callbridge-Secret": echo_keys["kompaas_webhook"]})
            assert wrong.status_code in (401, 403)
            # Pending verifications are kept in Redis, which restarts empty below: let the
            # outcome arrive first.
            await eventually(lambda: any(e["provider"] == "kompaas" for e in events), 10,
                             "the Kompaas outcome")

            # Clients with a forged and an expired JWT.
            forged_jwt = mint(secret(32), sub="intruder", channels=["calls:*"], ttl=600)
            expired_jwt = mint(jwt_secret, sub="late", channels=["calls:*"], ttl=1,
                               now=time.time() - 3600)
            for token in (forged_jwt, expired_jwt):
                assert await refused_client(ws_url, token) is not None

            # Redis restarted under the bridge: errors, reconnects, buffered events.
            await redis.stop()
            simulator.emit(ACCOUNT, "CHANNEL_CREATE", {
                "Call-ID": "during-outage", "Msg-ID": str(time.time_ns() // 1000),
                "Call-Direction": "inbound", "Presence-ID": "1001@sim.callbridge.local"})
            await asyncio.sleep(1.0)
            await redis.start()
            await require_password(redis, redis_password)

            async def broker_back() -> bool:
                body = (await http.get(f"{bridge.url}/readyz")).json()
                return body["broker"]["ok"] and body["broker"]["state"] != "buffering"
            await eventually(broker_back, 20, "the broker to be back")

            def every_provider() -> bool:
                return {"antbuddy", "quickom", "epacific", "kompaas"} <= {
                    e["provider"] for e in events}
            await eventually(every_provider, 20, "events from every provider")
            metrics = await scrape(bridge.url)
            # Every echo account was asked, with its credentials.
            echoed = " ".join(echo.paths)
            for what in ("/oapi/v1/voice/auth_token", "/api/enterprise", "confirmationCall"):
                assert what in echoed, (what, dict(echo.paths))
            assert sum(echo.paths.values()) >= 5
        assert await bridge.stop() == 0, shutdown_lines(log_path)
    log = log_path.read_text()

    configured = [jwt_secret, redis_password, app_secret, sip_password, echo_app_secret,
                  echo_sip_password, *echo_keys.values(), fakes.quickom.api_key,
                  fakes.quickom.signing_secret, fakes.epacific.api_key,
                  fakes.epacific.api_secret, fakes.kompaas.token, fakes.kompaas_secret]
    hashes = [app_hash(APP_ID, app_secret), app_hash("echo-app", echo_app_secret)]
    presented = [client_jwt, api_token, forged_jwt, expired_jwt]
    assert len(issued) >= 2
    forbidden = {"configured secret": configured, "app hash": hashes,
                 "upstream token": issued, "client token": presented}

    lines = log.splitlines()
    assert len(lines) > 100, "DEBUG logging produced too little to mean anything"
    for line in lines:
        # Every line is a JSON object: nothing reaches stderr around the logger.
        assert line.startswith("{") and isinstance(json.loads(line), dict), line
    # The error paths ran and were logged.
    for evidence in ("failed to authenticate token [redacted]", "credentials refused",
                     "webhook with a wrong secret", "token refused (bad_signature)",
                     "token refused (expired)", "broker unreachable"):
        assert evidence in log, f"no log line says {evidence!r}"
    for kind, values in forbidden.items():
        for value in values:
            assert value not in log, f"a {kind} is in the log"
            assert value not in metrics.text, f"a {kind} is in /metrics"
            # Not even a fragment: a logger that cuts long frames must not show part of one.
            middle = len(value) // 2
            for fragment in (value[middle - 6:middle + 6], value[-12:]):
                assert fragment not in log, f"part of a {kind} is in the log"
    assert re.search(r"\[redacted\]", log), "nothing was ever masked: the echoes never came"
