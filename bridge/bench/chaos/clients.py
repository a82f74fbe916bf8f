"""The clients of a chaos run: worker processes, each holding many logical clients.

A logical client holds its channels for the whole run. It connects to a random instance,
authenticates, subscribes (resuming from the last position it saw on each channel once it has
one), and records every frame it receives; whenever its connection ends it connects again
(at once after 1001/1012 or a storm, else after a jittered backoff) and resumes, as
docs/protocol.md tells a client to. So one logical client spans many connections, and what it
received across all of them is what the checker (:mod:`bridge.bench.chaos.check`) judges.

The driver talks to each worker over a pipe: ``count`` (event frames so far), ``storm`` (every
connection dropped at once, without a close frame), ``slow N SECONDS`` (N clients stop reading
for that long), ``stop`` (records written to the worker's file, its summary returned).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bridge.bench.proc import raise_nofile

#: Close codes after which the client reconnects at once (docs/protocol.md, "now").
NOW = frozenset({1001, 1012})
#: Codes that need a new token: a logical client of the run never gets one.
NEW_TOKEN = frozenset({4001, 4003, 4004})


@dataclass
class ClientSpec:
    id: str
    channels: list[str]
    token: str


@dataclass
class WorkerPlan:
    urls: list[str]
    clients: list[ClientSpec]
    out_path: str
    seed: int
    connect_timeout: float = 10.0
    concurrency: int = 100
    #: Hard limit on the worker's life, whatever the driver does.
    deadline: float = 3600.0


@dataclass
class Summary:
    clients: int = 0
    subscribed: int = 0
    frames: int = 0
    connections: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class LogicalClient:
    def __init__(self, spec: ClientSpec, plan: WorkerPlan, rng: random.Random) -> None:
        self.spec = spec
        self._plan = plan
        self._rng = rng
        self.frames: list[list[Any]] = []
        self.upstream: dict[str, list[str]] = {}
        self.closes: list[list[Any]] = []
        self.errors: Counter[str] = Counter()
        self.events = 0
        self.start: float | None = None
        self.subscribed = asyncio.Event()
        self._stopped = False
        self._positions: dict[str, tuple[str, str]] = {}
        self._conn = -1
        self._ws: ClientConnection | None = None
        self._stormed = False
        self._paused_until = 0.0
        self._refused: int | None = None  # a new-token close: this client is done

    # -- commands from the worker --------------------------------------------------------------

    def storm(self) -> None:
        ws = self._ws
        if ws is not None and ws.transport is not None:
            self._stormed = True
            ws.transport.abort()

    def stop(self) -> None:
        """From now on, leave: the open connection is closed cleanly, not cut, and no new
        one is opened."""
        self._stopped = True

    def stopped(self) -> bool:
        # A method, not an attribute: it changes while the connection loop awaits, which a
        # type checker cannot see through an attribute it has already checked.
        return self._stopped

    def pause(self, seconds: float) -> None:
        self._paused_until = time.monotonic() + seconds

    def record(self) -> dict[str, Any]:
        return {"client": self.spec.id, "channels": self.spec.channels, "start": self.start,
                "frames": self.frames, "upstream": self.upstream, "closes": self.closes,
                "errors": dict(self.errors), "refused": self._refused}

    # -- the connection loop ---------------------------------------------------------------------

    async def run(self, limit: asyncio.Semaphore) -> None:
        failures = 0
        while not self.stopped() and self._refused is None:
            self._conn += 1
            conn = self._conn
            code: int | None = None
            try:
                code = await self._connection(conn, limit)
                failures = 0 if self.subscribed.is_set() else failures + 1
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.errors[type(exc).__name__] += 1
                failures += 1
            except Exception as exc:  # a malformed frame, say: recorded, and the client goes on
                self.errors[f"unexpected:{type(exc).__name__}"] += 1
                failures += 1
            self.closes.append([conn, code, time.time()])
            if self.stopped():
                return
            if code in NEW_TOKEN:
                self._refused = code
                return
            if self._stormed or code in NOW:
                self._stormed = False
                await asyncio.sleep(self._rng.uniform(0, 0.05))
            else:
                await asyncio.sleep(self._rng.uniform(0.05, min(2.0, 0.1 * 2 ** failures)))

    async def _connection(self, conn: int, limit: asyncio.Semaphore) -> int | None:
        url = self._rng.choice(self._plan.urls)
        async with limit:
            ws = await connect(url, compression=None, open_timeout=self._plan.connect_timeout,
                               max_size=2**22, max_queue=16, close_timeout=2)
        self._ws = ws
        try:
            await ws.send(orjson.dumps({"type": "auth", "token": self.spec.token}).decode())
            await self._subscribe(ws)
            await self._receive(ws, conn)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else 1006
        finally:
            self._ws = None
            if self.stopped():
                await ws.close()
            else:
                ws.transport.abort()
        return None

    async def _subscribe(self, ws: ClientConnection) -> None:
        resume = {c: {"epoch": e, "offset": o} for c, (e, o) in self._positions.items()}
        request: dict[str, Any] = {"type": "subscribe", "id": "s", "channels": self.spec.channels}
        if resume:
            request["resume"] = resume
        await ws.send(orjson.dumps(request).decode())

    async def _receive(self, ws: ClientConnection, conn: int) -> None:
        while not self.stopped():
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # a slow client: reads nothing meanwhile
                continue
            raw = await ws.recv(decode=False)
            now = time.time()
            if raw.startswith(b'{"type":"event"'):
                self._on_event(orjson.loads(raw), conn, now)
                continue
            message = orjson.loads(raw)
            kind = message.get("type")
            if kind == "gap":
                self.frames.append([conn, "g", message["channel"], message.get("epoch"), None,
                                    message["reason"], 0, now])
            elif kind == "subscribed":
                if self.start is None:
                    self.start = now
                for channel, epoch in message.get("epochs", {}).items():
                    offset = message.get("offsets", {}).get(channel)
                    if channel not in self._positions and offset is not None:
                        self._positions[channel] = (epoch, offset)  # no event yet: from here
                self.subscribed.set()
            elif kind == "error":
                self.errors[f"error:{message.get('code')}"] += 1
                if message.get("id") == "s":  # subscribe refused (broker unavailable): again
                    await asyncio.sleep(self._rng.uniform(0.2, 1.0))
                    await self._subscribe(ws)

    def _on_event(self, message: dict[str, Any], conn: int, now: float) -> None:
        channel, epoch, offset = message["channel"], message["epoch"], message["offset"]
        event = message["event"]
        provisional = 1 if message.get("provisional") else 0
        self.events += 1
        self.frames.append([conn, "e", channel, epoch, offset, event["id"], provisional, now])
        if not provisional:
            self._positions[channel] = (epoch, offset)
        upstream = event.get("upstream") or {}
        if event.get("call_id") and upstream.get("msg_id") is not None:
            self.upstream[event["id"]] = [event["call_id"], str(upstream["msg_id"])]


# -- the worker process ------------------------------------------------------------------------

def start_worker(plan: WorkerPlan) -> tuple[mp.process.BaseProcess, Connection]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_main, args=(plan, theirs), daemon=True,
                       name="chaos-clients")
    proc.start()
    theirs.close()
    return proc, ours


def _main(plan: WorkerPlan, pipe: Connection) -> None:
    raise_nofile()
    asyncio.run(_worker(plan, pipe))


async def _worker(plan: WorkerPlan, pipe: Connection) -> None:
    rng = random.Random(plan.seed)
    clients = [LogicalClient(spec, plan, random.Random(rng.random())) for spec in plan.clients]
    limit = asyncio.Semaphore(plan.concurrency)
    tasks = [asyncio.create_task(c.run(limit)) for c in clients]
    commands: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)
    loop = asyncio.get_running_loop()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    try:
        async with asyncio.timeout(plan.deadline):
            await _serve(clients, commands, pipe, rng)
    finally:
        loop.remove_reader(pipe.fileno())
        for client in clients:
            client.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    with open(plan.out_path, "wb") as f:
        for client in clients:
            f.write(orjson.dumps(client.record()) + b"\n")
    pipe.send(_summary(clients))


async def _serve(clients: list[LogicalClient], commands: asyncio.Queue[Any], pipe: Connection,
                 rng: random.Random) -> None:
    while True:
        command = await commands.get()
        name = command[0]
        if name == "count":
            pipe.send(_summary(clients))
        elif name == "storm":
            for client in clients:
                client.storm()
            pipe.send(len(clients))
        elif name == "slow":
            _, count, seconds = command
            chosen = rng.sample(clients, min(count, len(clients)))
            for client in chosen:
                client.pause(seconds)
            pipe.send(len(chosen))
        else:  # stop
            return


def _summary(clients: list[LogicalClient]) -> Summary:
    summary = Summary(clients=len(clients))
    for client in clients:
        summary.subscribed += client.subscribed.is_set()
        summary.frames += client.events
        summary.connections += client._conn + 1
        summary.errors.update(client.errors)
    return summary
