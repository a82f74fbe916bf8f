"""Benchmark clients: worker processes, each one asyncio loop holding many websocket connections.

The driver starts :func:`start_workers`, which returns once every worker has opened its share of
connections (or given up on some). Each connection speaks its target's protocol:

- ``callbridge``: ``auth`` then ``subscribe`` (docs/protocol.md), ``ping`` only if the server
  has an idle timeout;
- ``ceiling``: nothing, every message is an event;
- ``peer``: Engine.IO 4 / Socket.IO 5 over a bare websocket (``40`` connect with an auth
  object naming the rooms, ``2``/``3`` ping-pong, ``42[...]`` events).

Events carry their injection time as ``bench-<unix ns>-<seq>`` (in ``call_id``); a client that
receives one records ``receive time - injection time`` (same machine clock).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

from bridge.bench import lean
from bridge.bench.proc import raise_nofile

MARK = b"bench-"
#: Latency samples kept per worker (the first ones); counts are always exact. A million covers
#: the large call centre (about 600,000 deliveries per worker) and the firehose.
MAX_SAMPLES = 1_000_000


def stamp(seq: int) -> str:
    """An id carrying the current time, for :data:`MARK` parsing on the client."""
    return f"bench-{time.time_ns()}-{seq}"


def stamped_ns(frame: bytes) -> int | None:
    at = frame.find(MARK)
    if at < 0:
        return None
    end = frame.find(b"-", at + len(MARK))
    try:
        return int(frame[at + len(MARK):end])
    except ValueError:
        return None


@dataclass
class Plan:
    protocol: str  # callbridge | ceiling | peer
    url: str
    #: One entry per connection: the channels (callbridge) or rooms (peer) it subscribes.
    subscriptions: list[list[str]]
    token: str = ""
    connect_timeout: float = 20.0
    concurrency: int = 64
    #: Hard limit on the worker's life, whatever the driver does.
    deadline: float = 600.0


@dataclass
class Stats:
    opened: int = 0
    failed: int = 0
    closed_early: int = 0
    received: int = 0
    first_rx: float = 0.0
    last_rx: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_event(self, frame: bytes) -> None:
        now = time.time_ns()
        self.received += 1
        if not self.first_rx:
            self.first_rx = now / 1e9
        self.last_rx = now / 1e9
        sent = stamped_ns(frame)
        if sent is not None and len(self.latencies_ms) < MAX_SAMPLES:
            self.latencies_ms.append((now - sent) / 1e6)

    def error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text[:200])


class Workers:
    """Worker processes under the driver's control."""

    def __init__(self, procs: list[mp.process.BaseProcess], pipes: list[Connection]) -> None:
        self._procs, self._pipes = procs, pipes

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, to read their CPU time (the clients share the machine)."""
        return [p.pid for p in self._procs if p.pid is not None]

    def _ask(self, command: str, timeout: float) -> list[Any]:
        for p in self._pipes:
            p.send(command)
        replies = []
        for p in self._pipes:
            if not p.poll(timeout):
                raise TimeoutError(f"a benchmark worker did not answer {command!r}")
            replies.append(p.recv())
        return replies

    def received(self) -> int:
        return sum(self._ask("count", 30))

    def stop(self, timeout: float = 60) -> Stats:
        total = Stats()
        for s in self._ask("stop", timeout):
            total.opened += s.opened
            total.failed += s.failed
            total.closed_early += s.closed_early
            total.received += s.received
            total.first_rx = min(x for x in (total.first_rx, s.first_rx) if x) if (
                total.first_rx or s.first_rx) else 0.0
            total.last_rx = max(total.last_rx, s.last_rx)
            total.latencies_ms += s.latencies_ms
            total.errors += s.errors
        self.close()
        return total

    def close(self) -> None:
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for p in self._pipes:
            p.close()


def start_workers(plan: Plan, workers: int, *, timeout: float = 120,
                  nice: int = 0) -> tuple[Workers, Stats]:
    """Split ``plan.subscriptions`` over ``workers`` processes, each at niceness ``nice``;
    wait until all are connected."""
    ctx = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    pipes: list[Connection] = []
    n = max(1, min(workers, len(plan.subscriptions)))
    for i in range(n):
        part = Plan(**{**plan.__dict__, "subscriptions": plan.subscriptions[i::n]})
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(part, theirs, nice), daemon=True,
                           name=f"bench-client-{i}")
        proc.start()
        theirs.close()
        procs.append(proc)
        pipes.append(ours)
    group = Workers(procs, pipes)
    ready = Stats()
    for p in pipes:
        if not p.poll(timeout):
            group.close()
            raise TimeoutError("benchmark clients did not connect in time")
        opened, failed, errors = p.recv()
        ready.opened += opened
        ready.failed += failed
        ready.errors += errors
    return group, ready


def _worker_main(plan: Plan, pipe: Connection, nice: int = 0) -> None:
    if nice:
        os.nice(nice)
    raise_nofile()
    asyncio.run(_worker(plan, pipe))


async def _worker(plan: Plan, pipe: Connection) -> None:
    stats = Stats()
    limit = asyncio.Semaphore(plan.concurrency)
    stop = asyncio.Event()
    handshakes = [asyncio.Event() for _ in plan.subscriptions]
    tasks = [asyncio.create_task(_client(plan, subs, stats, limit, done, stop))
             for subs, done in zip(plan.subscriptions, handshakes)]
    async with asyncio.timeout(plan.deadline):
        await asyncio.wait([asyncio.create_task(e.wait()) for e in handshakes])
        # Thousands of connections are now long-lived objects: out of the collector's sight,
        # a full collection (a tenth of a second at 5,000 connections) no longer stalls every
        # client of this worker mid-measurement.
        gc.collect()
        gc.freeze()
        pipe.send((stats.opened, stats.failed, stats.errors))
        commands: asyncio.Queue[str] = asyncio.Queue(maxsize=8)
        loop = asyncio.get_running_loop()
        loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
        try:
            while True:
                command = await commands.get()
                if command == "count":
                    pipe.send(stats.received)
                else:
                    break
        finally:
            loop.remove_reader(pipe.fileno())
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send(stats)


async def _client(plan: Plan, subs: list[str], stats: Stats, limit: asyncio.Semaphore,
                  ready: asyncio.Event, stop: asyncio.Event) -> None:
    try:
        async with limit:
            async with asyncio.timeout(plan.connect_timeout):
                ws = await lean.connect(_url(plan), max_size=2**22)
                try:
                    heartbeat = await _handshake(plan, ws, subs)
                except BaseException:
                    ws.close()
                    raise
        stats.opened += 1
    except Exception as exc:  # every failure is counted, the run goes on
        stats.failed += 1
        stats.error(f"{type(exc).__name__}: {exc}")
        ready.set()
        return
    ready.set()
    try:
        await _receive(plan.protocol, ws, stats, heartbeat)
        if not stop.is_set():
            stats.closed_early += 1
            stats.error("closed by the server")
    finally:
        ws.close()


def _url(plan: Plan) -> str:
    if plan.protocol == "peer":
        return plan.url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
    return plan.url


async def _handshake(plan: Plan, ws: lean.LeanConnection, subs: list[str]) -> float | None:
    """Protocol-specific opening; returns the keepalive interval the client must honour."""
    if plan.protocol == "callbridge":
        ws.send(orjson.dumps({"type": "auth", "token": plan.token}).decode())
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"auth refused: {welcome.get('type')}")
        if subs:
            ws.send(orjson.dumps({"type": "subscribe", "id": 1, "channels": subs}).decode())
            while True:  # heartbeats may come first
                reply = orjson.loads(await ws.recv())
                if reply.get("type") == "subscribed":
                    break
                if reply.get("type") == "error":
                    raise RuntimeError(f"subscribe refused: {reply.get('code')}")
        idle = float(welcome.get("idle_timeout") or 0)
        return idle / 3 if idle > 0 else None  # only an idle timeout asks clients to ping
    if plan.protocol == "peer":
        # Engine.IO packets come as text frames.
        opening = await ws.recv()
        if not opening.startswith("0"):
            raise RuntimeError("not an Engine.IO open packet")
        ws.send("40" + orjson.dumps({"rooms": subs}).decode())
        while True:
            packet = await ws.recv()
            if packet == "2":
                ws.send("3")
            elif packet.startswith("40"):
                return None
            elif packet.startswith("44"):
                raise RuntimeError("socket.io connect refused")
    return None


async def _receive(protocol: str, ws: lean.LeanConnection, stats: Stats,
                   keepalive: float | None) -> None:
    """Count (and time) every event until the connection closes; frames are handled as they
    arrive, inside the connection's read callback."""
    if protocol == "callbridge":
        def on_frame(frame: bytes) -> None:
            if frame.startswith(b'{"type":"event"'):
                stats.on_event(frame)
    elif protocol == "peer":
        def on_frame(frame: bytes) -> None:
            if frame.startswith(b"42"):
                stats.on_event(frame)
            elif frame == b"2":
                ws.send("3")
    else:
        on_frame = stats.on_event
    ws.stream(on_frame)
    while not ws.closed.done():
        if keepalive is None:
            await asyncio.shield(ws.closed)
            break
        try:
            async with asyncio.timeout(keepalive):
                await asyncio.shield(ws.closed)
        except TimeoutError:
            # callbridge closes a connection that sends nothing for its idle timeout.
            ws.send('{"type":"ping"}')
