"""``callbridge demo``: the simulator, the bridge on ``memory://``, and a watching client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Callable

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.app import build_app
from bridge.auth import mint
from bridge.config import Config
from bridge.serving import AppServer, bridge_server
from bridge.simulator.app import Simulator, SimulatorSettings

DEMO_APP_ID = "demo-app"
DEMO_APP_SECRET = "demo-app-secret-for-the-simulator"
DEMO_TENANT = "demo"
DEMO_ACCOUNT = "acct-demo"


def demo_config(*, host: str, port: int, sim_url: str, dialect: str, jwt_secret: str) -> Config:
    return Config.model_validate({
        "server": {"host": host, "port": port},
        "broker": {"url": "memory://"},
        "auth": {"jwt_secret": jwt_secret},
        "antbuddy": [{
            "tenant": DEMO_TENANT, "oapi_url": sim_url,
            "ws_url": sim_url.replace("http://", "ws://", 1), "dialect": dialect,
            "app_id": DEMO_APP_ID, "app_secret": DEMO_APP_SECRET, "account_id": DEMO_ACCOUNT,
        }],
    })


async def run_demo(args: argparse.Namespace, stop: asyncio.Event,
                   on_servers: Callable[[list[AppServer]], None], *, jwt_secret: str) -> int:
    simulator = Simulator(SimulatorSettings(
        apps={DEMO_APP_ID: DEMO_APP_SECRET}, accounts=[DEMO_ACCOUNT],
        extensions=[str(1001 + i) for i in range(args.extensions)],
        calls_per_second=args.rate, token_lifetime=args.token_lifetime,
    ))
    async with AppServer(simulator.build_app()) as sim_server:
        config = demo_config(host=args.host, port=args.port, sim_url=sim_server.url,
                             dialect=args.dialect, jwt_secret=jwt_secret)
        async with bridge_server(build_app(config), config) as bridge:
            on_servers([sim_server, bridge])
            token = mint(jwt_secret, sub="demo-client",
                         channels=[f"calls:{DEMO_TENANT}", f"calls:{DEMO_TENANT}:*",
                                   f"system:{DEMO_TENANT}"],
                         ttl=24 * 3600)
            print(_banner(bridge, sim_server, token), flush=True)
            watcher = None
            if not args.quiet:
                watcher = asyncio.create_task(_watch(f"{bridge.ws_url}/ws", token))
            try:
                if args.duration is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.duration)
                else:
                    await stop.wait()
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
    return 0


def _banner(bridge: AppServer, sim: AppServer, token: str) -> str:
    return "\n".join([
        "callbridge demo",
        f"  websocket  {bridge.ws_url}/ws",
        f"  token      {token}",
        f"  health     {bridge.url}/readyz",
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
                                            "channels": [f"calls:{DEMO_TENANT}",
                                                         f"system:{DEMO_TENANT}"]}).decode())
                async for frame in ws:
                    message = orjson.loads(frame)
                    if message.get("type") == "event":
                        print(_line(message["event"]), flush=True)
        except (OSError, ConnectionClosed):
            await asyncio.sleep(1)


def _line(event: dict) -> str:  # type: ignore[type-arg]
    caller = (event.get("caller") or {}).get("number") or "?"
    callee = (event.get("callee") or {}).get("number") or "?"
    ext = event.get("extension") or "-"
    cause = (event.get("hangup") or {}).get("cause") or ""
    return (f"{event.get('occurred_at', '')}  {event['type']:<15} ext {ext:<6} "
            f"{caller} -> {callee}  {cause}").rstrip()
