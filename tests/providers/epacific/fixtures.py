"""Shared pieces of the ePacific tests: the fake under uvicorn and a provider built on it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from bridge.cluster.cursors import CursorStore, MemoryCursors
from bridge.config.providers import EPacificAccount
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.base import ProviderContext
from bridge.providers.epacific import EPacificProvider, create
from bridge.simulator.epacific import EPacificFake

KEY = "ep-key-" + secrets.token_hex(6)
SECRET = "ep-secret-" + secrets.token_hex(8)


@dataclass
class Rig:
    fake: EPacificFake
    server: AppServer
    http: httpx.AsyncClient
    events: list[Event] = field(default_factory=list)

    def provider(self, cursors: CursorStore, clock: Callable[[], datetime] | None = None,
                 **account: Any) -> EPacificProvider:
        """A new provider instance (as after a restart) on ``cursors``."""
        block = {"tenant": "acme", "api_url": self.server.url, "api_key": KEY,
                 "api_secret": SECRET, "timezone": self.fake.timezone, "page_limit": 3,
                 "initial_lookback": 3600.0}
        block.update(account)
        block["settle_window"] = block.pop("settle", 300.0)

        def submit(event: Event) -> bool:
            self.events.append(event)
            return True

        context = ProviderContext(submit=submit, http=self.http, cursors=cursors)
        provider = create(EPacificAccount.model_validate(block), context, streams=None)
        if clock is not None:
            provider.cdrs.clock = clock
            provider.presence.clock = clock
        return provider

    def ids(self) -> list[str]:
        return [e.id for e in self.events]


async def make_rig(timezone: str = "Asia/Ho_Chi_Minh") -> AsyncIterator[Rig]:
    fake = EPacificFake(KEY, SECRET, timezone=timezone)
    async with AppServer(fake.build_app()) as server:
        async with httpx.AsyncClient(trust_env=False) as http:
            yield Rig(fake, server, http)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for value in make_rig():
        yield value


@pytest.fixture
def memory_cursors() -> MemoryCursors:
    return MemoryCursors()
