"""The contract of a provider integration (Quickom, ePacific, Kompaas, AntBuddy REST).

A provider is built from its configuration block and a :class:`ProviderContext`; the service
runs :meth:`Provider.run` as one owned task (its pollers, its timers) and mounts
:meth:`Provider.endpoints` on the HTTP API. Events go to the shared pipeline through
``context.submit`` (never blocks; de-duplicated by event id).
"""

from __future__ import annotations

import asyncio
from abc import ABC
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from bridge.api.endpoints import Endpoint
from bridge.cluster.cursors import CursorStore
from bridge.events.event import Event


@dataclass
class ProviderContext:
    #: Hand an event to the pipeline. True: queued, or a duplicate of one already handled;
    #: False: dropped because the queue is full (keep the cursor, offer it again later).
    submit: Callable[[Event], bool]
    #: Shared HTTP client (no environment proxies, sensible timeouts).
    http: httpx.AsyncClient
    #: Durable cursors (Redis on redis:// brokers, memory on memory://).
    cursors: CursorStore
    #: The ``[broker]`` URL and key prefix, for providers that share state between instances
    #: on Redis (Kompaas's pending verifications); ``memory://`` keeps such state in-process.
    broker_url: str = "memory://"
    prefix: str = "callbridge:"


class Provider(ABC):
    #: ``<provider>/<tenant>``: names the provider in /readyz and logs.
    name: str = ""

    def endpoints(self) -> list[Endpoint]:
        """HTTP endpoints (webhooks, API calls) this provider adds."""
        return []

    async def run(self) -> None:
        """Pollers and timers, until cancelled. The default has none."""
        await asyncio.Event().wait()

    def snapshot(self) -> dict[str, Any]:
        """State for /readyz: at least ``{"name": ..., "ok": bool}``."""
        return {"name": self.name, "ok": True}
