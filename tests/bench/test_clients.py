"""The benchmark's client workers: they connect, and run at the niceness asked for."""

from __future__ import annotations

import asyncio
import os

from bridge.bench.ceiling import app as accept_every_websocket
from bridge.bench.clients import Plan, start_workers
from bridge.http.serving import AppServer


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


async def test_client_workers_run_at_the_niceness_asked_for() -> None:
    async with AppServer(accept_every_websocket) as server:
        plan = Plan("ceiling", server.ws_url, [[], [], []])
        workers, ready = await asyncio.to_thread(start_workers, plan, 2, timeout=60, nice=7)
        try:
            assert ready.opened == 3 and ready.failed == 0
            assert [niceness(pid) for pid in workers.pids] == [os.nice(0) + 7] * 2
        finally:
            await asyncio.to_thread(workers.stop)
