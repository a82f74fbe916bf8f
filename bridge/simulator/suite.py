"""The Quickom, ePacific and Kompaas fakes together, for ``callbridge demo --all`` (with
traffic) and ``callbridge simulate --all``.

Each fake runs on its own loopback port, as each provider is its own service. Traffic: a Quickom
call webhook every few seconds, ePacific CDRs and registration changes on the fake's own timer,
and a Kompaas verification call started through callbridge's API (with an API token), whose
outcome the fake posts back to callbridge's webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from typing import Any, AsyncIterator

import httpx

from bridge.http.serving import AppServer
from bridge.simulator.epacific import EPacificFake
from bridge.simulator.kompaas import KompaasFake
from bridge.simulator.quickom import QuickomSimulator

log = logging.getLogger("bridge.simulator")


#: (q931 code, final status) pairs the demo's verification calls end with.
OUTCOMES = [(16, "ANSWER"), (16, "ANSWER"), (17, "CANCEL"), (16, "CANCEL"), (31, None), (1, None)]


class ProviderFakes:
    def __init__(self, tenant: str, *, interval: float = 5.0) -> None:
        self.tenant = tenant
        self.interval = interval
        token = secrets.token_urlsafe
        self.quickom = QuickomSimulator(api_key=token(16), signing_secret=token(24),
                                        recording_bytes=256 * 1024)
        self.epacific = EPacificFake(api_key=token(12), api_secret=token(16))
        self.kompaas = KompaasFake(token(24), delay=2.0)
        self.kompaas_secret = token(24)
        self._servers: dict[str, AppServer] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProviderFakes]:
        async with contextlib.AsyncExitStack() as stack:
            for name, app in (("quickom", self.quickom.build_app()),
                              ("epacific", self.epacific.build_app(
                                  traffic_interval=self.interval)),
                              ("kompaas", self.kompaas.build_app())):
                self._servers[name] = await stack.enter_async_context(AppServer(app))
            yield self

    def urls(self) -> dict[str, str]:
        """Each running fake's base URL, by provider name."""
        return {name: server.url for name, server in self._servers.items()}

    def config(self) -> dict[str, list[dict[str, Any]]]:
        """The ``[[quickom]]``, ``[[epacific]]`` and ``[[kompaas]]`` blocks for the fakes."""
        urls = self.urls()
        return {
            "quickom": [{"tenant": self.tenant, "api_url": urls["quickom"],
                         "api_key": self.quickom.api_key,
                         "signing_secret": self.quickom.signing_secret,
                         "backfill_interval": 60.0}],
            "epacific": [{"tenant": self.tenant, "api_url": urls["epacific"],
                          "api_key": self.epacific.api_key,
                          "api_secret": self.epacific.api_secret,
                          "poll_interval": self.interval, "presence_interval": self.interval}],
            "kompaas": [{"tenant": self.tenant, "api_url": urls["kompaas"],
                         "api_token": self.kompaas.token,
                         "webhook_secret": self.kompaas_secret,
                         "verification_timeout": 30.0}],
        }

    async def traffic(self, bridge_url: str, api_token: str) -> None:
        """Until cancelled: Quickom webhooks and Kompaas verifications against ``bridge_url``."""
        self.kompaas.webhook_url = f"{bridge_url}/webhooks/kompaas/{self.tenant}"
        self.kompaas.webhook_headers = {"X-Callbridge-Secret": self.kompaas_secret}
        rand = random.Random()
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    call = self.quickom.add_call(records=rand.randint(0, 2))
                    await self.quickom.deliver(
                        f"{bridge_url}/webhooks/quickom/{self.tenant}", call)
                    number = "4219" + "".join(rand.choice("0123456789") for _ in range(8))
                    self.kompaas.outcomes[number] = rand.choice(OUTCOMES)
                    await http.post(
                        f"{bridge_url}/api/v1/kompaas/{self.tenant}/verifications",
                        json={"phone_number": number},
                        headers={"authorization": f"Bearer {api_token}"})
                except httpx.HTTPError as exc:
                    log.warning("demo provider traffic: %s", type(exc).__name__)
