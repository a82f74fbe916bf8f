"""``callbridge demo``: the simulator, the bridge on ``memory://``, and a watching client.

The bridge's port is bound before anything starts, so a busy port fails at once; on stop the
bridge shuts down before the simulators it reads from, so its upstream links close as ours,
not as lost connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.auth.tokens import mint, mint_api
from bridge.config.model import Config
from bridge.http.app import build_app
from bridge.http.serving import AppServer, bridge_server, listen
from bridge.http.web import DemoBoard
from bridge.simulator.app import Simulator, SimulatorSettings
from bridge.simulator.suite import ProviderFakes

DEMO_APP_ID = "demo-app"
DEMO_APP_SECRET = "demo-app-secret-for-the-simulator"
DEMO_TENANT = "demo"
DEMO_ACCOUNT = "acct-demo"
DEMO_CHANNELS = [f"calls:{DEMO_TENANT}", f"calls:{DEMO_TENANT}:*", f"system:{DEMO_TENANT}",
                 f"presence:{DEMO_TENANT}", f"verifications:{DEMO_TENANT}"]
WATCHED = [c for c in DEMO_CHANNELS if "*" not in c]


def demo_config(*, host: str, port: int, sim_url: str, dialect: str, jwt_secret: str,
                providers: dict[str, Any] | None = None) -> Config:
    return Config.model_validate({
        **(providers or {}),
        "server": {"host": host, "port": port},
        "broker": {"url": "memory://"},
        "auth": {"jwt_secret": jwt_secret},
        "antbuddy": [{
            "tenant": DEMO_TENANT, "oapi_url": sim_url,
            "ws_url": sim_url.replace("http://", "ws://", 1), "dialect": dialect,
            "app_id": DEMO_APP_ID, "app_secret": DEMO_APP_SECRET, "account_id": DEMO_ACCOUNT,
            # the device click-to-call rings first (the simulator treats every device as online)
            "sip_user": "demo-desk", "sip_password": "demo-desk-password",
        }],
    })


async def run_demo(args: argparse.Namespace, stop: asyncio.Event, *, jwt_secret: str) -> int:
    """Run until ``stop`` is set (or ``args.duration`` passes); raises
    :class:`bridge.http.serving.CannotListen` when the bridge's address is taken, before
    anything starts."""
    sock = listen(args.host, args.port)
    simulator = Simulator(SimulatorSettings(
        apps={DEMO_APP_ID: DEMO_APP_SECRET}, accounts=[DEMO_ACCOUNT],
        extensions=[str(1001 + i) for i in range(args.extensions)],
        calls_per_second=args.rate, token_lifetime=args.token_lifetime,
    ))
    fakes = ProviderFakes(DEMO_TENANT) if args.all else None
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)  # served, uvicorn closes it; not served, this does
        sim_server = await stack.enter_async_context(AppServer(simulator.build_app()))
        if fakes is not None:
            await stack.enter_async_context(fakes.running())
        config = demo_config(host=args.host, port=int(sock.getsockname()[1]),
                             sim_url=sim_server.url,
                             dialect=args.dialect, jwt_secret=jwt_secret,
                             providers=fakes.config() if fakes is not None else None)
        board = DemoBoard(jwt_secret=jwt_secret, tenant=DEMO_TENANT,
                          extensions=[str(1001 + i) for i in range(args.extensions)])
        app = build_app(config, demo=board)
        bridge = await stack.enter_async_context(bridge_server(app, config, sock=sock))
        token = mint(jwt_secret, sub="demo-client", channels=DEMO_CHANNELS, ttl=24 * 3600)
        api_token = mint_api(jwt_secret, sub="demo-client", tenants=[DEMO_TENANT], ttl=24 * 3600,
                             scopes=["calls:read", "calls:dial", "verifications:write"])
        print(_banner(bridge, sim_server, token, api_token), flush=True)
        tasks = []
        if not args.quiet:
            tasks.append(asyncio.create_task(_watch(f"{bridge.ws_url}/ws", token)))
        if fakes is not None:
            tasks.append(asyncio.create_task(fakes.traffic(bridge.url, api_token)))
        try:
            if args.duration is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.duration)
            else:
                await stop.wait()
        finally:
            # Like serve on a signal: counts the clients it will close, hands the streams over.
            app.state.service.begin_shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def _banner(bridge: AppServer, sim: AppServer, token: str, api_token: str) -> str:
    return "\n".join([
        "callbridge demo",
        f"  board      {bridge.url}/   (live softphone board; open it in a browser)",
        f"  websocket  {bridge.ws_url}/ws",
        f"  token      {token}",
        f"  api token  {api_token}",
        f"  health     {bridge.url}/readyz   API: {bridge.url}/openapi.json",
        f"  simulator  {sim.url}  (POST {sim.url}/_sim/drop drops the upstream link)",
        "  first message to send: {\"type\":\"auth\",\"token\":\"<token>\"}, then",
        f"  {{\"type\":\"subscribe\",\"channels\":[\"calls:{DEMO_TENANT}\"]}}",
        "  Ctrl-C stops.",
        "",
    ])


async def _watch(url: str, token: str) -> None:
    """Print the tenant's events as a client sees them, reconnecting if the bridge restarts."""
    while True:
        try:
            async with connect(url, proxy=None, compression=None) as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                await ws.send(orjson.dumps({"type": "subscribe", "id": 1,
                                            "channels": WATCHED}).decode())
                async for frame in ws:
                    message = orjson.loads(frame)
                    if message.get("type") == "event":
                        print(_line(message["event"]), flush=True)
        except (OSError, ConnectionClosed):
            await asyncio.sleep(1)


def _line(event: dict[str, Any]) -> str:
    detail = event.get("detail") or {}
    if event["type"] == "presence.changed":
        what = f"ext {detail.get('extension')} {'online' if detail.get('online') else 'offline'}"
    elif event["type"] == "verification.completed":
        what = f"verification {detail.get('outcome')}"
    else:
        caller = (event.get("caller") or {}).get("number") or "?"
        callee = (event.get("callee") or {}).get("number") or "?"
        cause = (event.get("hangup") or {}).get("cause") or ""
        what = f"ext {event.get('extension') or '-':<6} {caller} -> {callee}  {cause}"
    when = event.get("occurred_at", "")
    return f"{when}  {event['type']:<22} {event['provider']:<9} {what}".rstrip()
