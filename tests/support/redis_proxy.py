"""A loopback TCP relay in front of a Redis server, for the faults and lags a network has."""

from __future__ import annotations

import asyncio


class Proxy:
    """A loopback TCP relay to a Redis server, for faults a real network has.

    :meth:`stop` drops every connection and refuses new ones; :meth:`mute_subscribers` makes
    every connection that has sent a SUBSCRIBE stop receiving anything, while staying open: a
    subscription that died silently; :meth:`delay_subscribers` holds what those connections
    receive back for a while, in order: a pub/sub feed lagging behind the command connections,
    as under load.
    """

    def __init__(self, upstream_port: int = 6379) -> None:
        self.port = 0
        self._upstream = upstream_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._muted: set[asyncio.StreamWriter] = set()
        self._delay = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def mute_subscribers(self) -> int:
        self._muted |= self._subscribers
        return len(self._subscribers)

    def delay_subscribers(self, seconds: float) -> None:
        """From now on, data to subscriber connections arrives ``seconds`` late, in order."""
        self._delay = seconds

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, watch=writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        watch: asyncio.StreamWriter | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if watch is not None and b"SUBSCRIBE" in data.upper():
                    self._subscribers.add(watch)
                if writer in self._muted:
                    continue  # read and dropped: the connection looks alive but says nothing
                if self._delay and writer in self._subscribers:
                    await asyncio.sleep(self._delay)  # later data waits behind this: in order
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
