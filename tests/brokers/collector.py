"""A broker handler for tests: records deliveries and wakes whoever waits for them."""

from __future__ import annotations

import asyncio
import os

WAIT = 5.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


class Collector:
    """The broker handler: records deliveries and wakes waiters."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, bytes]] = []
        self._changed = asyncio.Event()

    def __call__(self, channel: str, offset: str, frame: bytes) -> None:
        self.got.append((channel, offset, frame))
        self._changed.set()

    async def until(self, count: int) -> list[tuple[str, str, bytes]]:
        async with asyncio.timeout(WAIT):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.got
