"""The AntBuddy wiring: streams sharing credentials share one token manager, a changed secret
gets its own, and link trouble becomes a ``system.notice`` with secrets redacted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.brokers.memory import MemoryBroker
from bridge.cluster.leases import LocalLeases
from bridge.cluster.notices import LocalNotices
from bridge.common.redact import register
from bridge.config.model import AntBuddyAccount, UpstreamConfig
from bridge.core.pipeline import Pipeline
from bridge.core.streams import StreamFactory, system_notice
from bridge.events.event import EventType


def account(account_id: str, *, secret: str = "app-secret-0123456789") -> AntBuddyAccount:
    return AntBuddyAccount(tenant="acme", oapi_url="http://127.0.0.1:9/oapi",
                           ws_url="ws://127.0.0.1:9/ws", app_id="app", app_secret=secret,
                           account_id=account_id)


@pytest.fixture
async def factory() -> AsyncIterator[StreamFactory]:
    async with httpx.AsyncClient() as http:
        yield StreamFactory(UpstreamConfig(), http, Pipeline(MemoryBroker()),
                            LocalLeases("instance-a", 10.0), LocalNotices())


async def test_streams_with_one_set_of_credentials_share_one_token(
        factory: StreamFactory) -> None:
    one, _ = factory.build(account("a1"))
    two, _ = factory.build(account("a2"))
    other, _ = factory.build(account("a3", secret="another-secret-0123456789"))
    assert one.tokens is two.tokens
    assert other.tokens is not one.tokens


async def test_managers_no_stream_uses_are_forgotten(factory: StreamFactory) -> None:
    one, _ = factory.build(account("a1"))
    factory.keep_tokens_of([])
    again, _ = factory.build(account("a1"))
    assert again.tokens is not one.tokens


async def test_each_stream_runs_under_its_own_lease(factory: StreamFactory) -> None:
    stream, runner = factory.build(account("a1"))
    assert runner.stream == stream.name


def test_a_notice_names_the_link_and_hides_secrets() -> None:
    register("tok-0123456789abcdef0123")
    notice = system_notice("acme", "a1", "auth_failed",
                           "refused token tok-0123456789abcdef0123", "antbuddy/acme/a1")
    assert notice.type is EventType.SYSTEM and notice.tenant == "acme"
    assert notice.detail["stream"] == "antbuddy/acme/a1"
    assert "tok-0123456789abcdef0123" not in notice.detail["message"]
    assert notice.id.startswith("sys-")
