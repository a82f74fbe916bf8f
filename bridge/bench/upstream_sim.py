"""The AntBuddy simulator in the driver process, and callbridge pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator

import httpx

from bridge.bench.targets import Target, callbridge_config, launch, new_secret
from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings

TENANT = "bench"


def antbuddy_blocks(sim_url: str, apps: dict[str, str],
                    accounts: list[str]) -> list[dict[str, Any]]:
    """One ``[[antbuddy]]`` per account; account ``i`` uses app ``i`` (apps cycle)."""
    ids = list(apps)
    ws_url = sim_url.replace("http://", "ws://", 1)
    return [{"tenant": TENANT, "oapi_url": sim_url, "ws_url": ws_url,
             "dialect": "kazoo-json", "app_id": ids[i % len(ids)],
             "app_secret": apps[ids[i % len(ids)]], "account_id": a}
            for i, a in enumerate(accounts)]


@contextlib.asynccontextmanager
async def bridge_on_simulator(settings: SimulatorSettings, *, broker_url: str, prefix: str,
                              upstream: dict[str, Any] | None = None,
                              ready_timeout: float = 120.0, server_workers: int = 1
                              ) -> AsyncIterator[tuple[Simulator, Target, float]]:
    """The simulator serving, callbridge launched against it and ready (/readyz 200).

    Yields the simulator, the target and the seconds callbridge took to become ready.
    """
    simulator = Simulator(settings)
    secret = new_secret()
    async with contextlib.AsyncExitStack() as stack:
        server = AppServer(simulator.build_app())
        await server.start()
        stack.push_async_callback(_stop, server)
        config = callbridge_config(broker_url=broker_url, prefix=prefix, jwt_secret=secret,
                                   upstream=upstream,
                                   antbuddy=antbuddy_blocks(server.url, settings.apps,
                                                            settings.accounts))
        t0 = time.monotonic()
        # launch() blocks while it waits; the simulator must keep answering meanwhile.
        target = await asyncio.to_thread(stack.enter_context,
                                         launch("callbridge", redis_url="", channels=[],
                                                config=config, server_workers=server_workers))
        await wait_ready(target, ready_timeout)
        yield simulator, target, time.monotonic() - t0


async def _stop(server: AppServer) -> None:
    server.stop()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await server.wait()


async def readyz(target: Target) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{target.url}/readyz")
        return r.status_code, r.json()


async def wait_ready(target: Target, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            try:
                status, body = await readyz(target)
            except httpx.TimeoutException:
                continue  # a server busy starting hundreds of streams answers late: ask again
            if status == 200:
                return body
            await asyncio.sleep(0.2)
