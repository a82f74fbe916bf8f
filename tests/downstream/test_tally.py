"""Connection lines: DEBUG per connection, one INFO summary per interval (a storm must not
flood the log)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import orjson
import tomli_w
from websockets.asyncio.client import connect

from bridge.auth.tokens import mint
from bridge.common.logs import PerConnectionLines
from bridge.downstream.tally import Tally
from tests.support.serve_process import SCALE, ServeProcess

SECRET = "t" * 40


def test_a_summary_counts_since_the_last_one_and_says_nothing_when_idle() -> None:
    tally = Tally()
    assert tally.summary(0, 60) is None
    tally.accepted += 3
    tally.closed[1000] += 2
    tally.closed[4004] += 1
    assert tally.summary(5, 60) == ("websocket clients: 5 open; in the last 60s 3 accepted, "
                                    "3 closed (1000 x2, 4004 x1)")
    assert tally.summary(5, 60) is None


def test_per_connection_lines_are_debug_records() -> None:
    root = logging.getLogger("tally-test-root")
    root.setLevel(logging.INFO)
    line_filter = PerConnectionLines(root)
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "connection open",
                               None, None)
    other = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server",
                              None, None)
    assert not line_filter.filter(record) and line_filter.filter(other)
    root.setLevel(logging.DEBUG)
    assert line_filter.filter(record) and record.levelname == "DEBUG"


async def test_a_burst_of_connections_logs_one_summary_and_no_line_each(tmp_path) -> None:
    path = tmp_path / "callbridge.toml"
    path.write_text(tomli_w.dumps({
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {"jwt_secret": SECRET},
        "logging": {"summary_interval": 0.5},
    }))
    instance = await ServeProcess.start(str(path), str(tmp_path / "serve.log"))
    try:
        token = mint(SECRET, sub="crm", channels=["calls:acme"], ttl=600)

        async def one() -> None:
            async with connect(instance.ws_url + "/ws") as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                assert orjson.loads(await ws.recv())["type"] == "welcome"

        async with asyncio.timeout(20 * SCALE):
            await asyncio.gather(*(one() for _ in range(40)))
            while "websocket clients:" not in instance.log():
                await asyncio.sleep(0.1)
    finally:
        instance.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20 * SCALE):
            await instance.proc.wait()
    log = instance.log()
    summaries = [orjson.loads(line)["msg"] for line in log.splitlines()
                 if "websocket clients:" in line]
    assert sum(int(s.split(" accepted")[0].rsplit(" ", 1)[1]) for s in summaries) == 40
    for per_connection in ("[accepted]", "connection open", "connection closed"):
        assert per_connection not in log
    assert os.path.getsize(tmp_path / "serve.log") < 20_000
