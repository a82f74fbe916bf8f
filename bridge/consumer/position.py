"""Where a consumer's positions are kept between its runs: a JSON file or a Redis hash.

A store maps channel names to the :class:`~bridge.consumer.items.Position` of the last event
the consumer handled on each. :meth:`PositionStore.save` merges: channels it is not given keep
their saved position. A save that returns has reached the store (the file is on disk, the hash
written); a crash during a save leaves the previous positions, never a half-written file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from bridge.consumer.items import Position
from bridge.redisconn.clients import command_client


class PositionStore(Protocol):
    """Saved positions, by channel."""

    async def load(self) -> dict[str, Position]:
        """Every saved position (empty when nothing was saved yet)."""
        ...

    async def save(self, positions: Mapping[str, Position]) -> None:
        """Save these channels' positions, keeping the others'."""
        ...

    async def close(self) -> None:
        """Release connections; the saved positions stay."""
        ...


def _parse(raw: Any) -> Position:
    return Position(str(raw["epoch"]), str(raw["offset"]))


class FileStore:
    """Positions in one JSON file, ``{"<channel>": {"epoch": E, "offset": O}, ...}``.

    Each save writes the whole file to a temporary file in the same directory, fsyncs it and
    renames it over the old one (then fsyncs the directory), so the file is always either the
    previous or the new positions. One process writes a file at a time.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._positions: dict[str, Position] | None = None

    async def load(self) -> dict[str, Position]:
        self._positions = await asyncio.to_thread(self._read)
        return dict(self._positions)

    async def save(self, positions: Mapping[str, Position]) -> None:
        if self._positions is None:
            self._positions = await asyncio.to_thread(self._read)
        self._positions.update(positions)
        await asyncio.to_thread(self._write, dict(self._positions))

    async def close(self) -> None:
        return None

    def _read(self) -> dict[str, Position]:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return {str(channel): _parse(value) for channel, value in raw.items()}

    def _write(self, positions: dict[str, Position]) -> None:
        data = orjson.dumps({c: p.to_dict() for c, p in sorted(positions.items())})
        directory = self.path.parent
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class RedisStore:
    """Positions in one Redis hash ``key``: field = channel, value = ``{"epoch","offset"}``
    JSON. ``url`` is ``redis://`` or ``redis-cluster://`` (the hash lives in one slot)."""

    def __init__(self, url: str, key: str, *, timeout: float = 5.0) -> None:
        self.key = key
        self._client = command_client(url, timeout=timeout, pool_size=2)

    async def load(self) -> dict[str, Position]:
        raw = await self._client.hgetall(self.key)
        return {k.decode(): _parse(orjson.loads(v)) for k, v in raw.items()}

    async def save(self, positions: Mapping[str, Position]) -> None:
        if positions:
            await self._client.hset(self.key, mapping={
                c: orjson.dumps(p.to_dict()) for c, p in positions.items()})

    async def close(self) -> None:
        await self._client.aclose()
