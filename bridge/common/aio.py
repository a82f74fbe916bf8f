"""Small asyncio helpers shared by the I/O loops."""

from __future__ import annotations

import asyncio
from typing import Awaitable


async def first_of(timeout: float | None, *aws: Awaitable[object]) -> list[bool]:
    """Wait until the first of ``aws`` completes, or ``timeout`` passes; cancel the others.

    Returns, for each awaitable in order, whether it completed. All are cancelled on return,
    and when the caller itself is cancelled.
    """
    futures = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(futures, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
    return [future in done for future in futures]
