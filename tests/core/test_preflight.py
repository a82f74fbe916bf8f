"""The online probes of ``callbridge check --online``, against real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.config.model import Config
from bridge.core.preflight import probe_all
from bridge.http.serving import AppServer
from bridge.simulator.app import Simulator, SimulatorSettings
from bridge.simulator.suite import ProviderFakes

APP, SECRET = "acme-app", "acme-app-secret-for-the-probe"
JWT = "preflight-test-jwt-secret-0123456789abcdef"
REDIS_PASSWORD = "redis-pass-never-shown"


@pytest.fixture
async def oapi() -> AsyncIterator[AppServer]:
    sim = Simulator(SimulatorSettings(apps={APP: SECRET}, accounts=["acct-1"], traffic=False))
    async with AppServer(sim.build_app()) as server:
        yield server


def _config(**sections: Any) -> Config:
    return Config.model_validate({"auth": {"jwt_secret": JWT}, **sections})


def _antbuddy(url: str, secret: str) -> dict[str, Any]:
    return {"tenant": "acme", "oapi_url": url, "ws_url": url.replace("http", "ws", 1),
            "app_id": APP, "app_secret": secret, "account_id": "acct-1"}


async def test_memory_broker_needs_nothing() -> None:
    [probe] = await probe_all(_config())
    assert (probe.name, probe.status) == ("broker", "ok")
    assert probe.detail == "memory://: embedded, nothing to reach"


async def test_redis_answers_with_its_version() -> None:
    [probe] = await probe_all(_config(broker={"url": "redis://127.0.0.1:6379/0"}))
    assert probe.status == "ok", probe.detail
    assert probe.detail.startswith("Redis at 127.0.0.1:6379: PING answered, Redis ")


async def test_redis_on_a_closed_port_names_it_and_hides_the_password(closed_port: int) -> None:
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed_port}/0"
    [probe] = await probe_all(_config(broker={"url": url}), timeout=3)
    assert probe.status == "failed"
    assert probe.detail == (f"Redis at 127.0.0.1:{closed_port} is unreachable (connection "
                            "refused): is redis-server running there? check [broker] url")


async def test_antbuddy_good_credentials_fetch_a_token(oapi: AppServer) -> None:
    _, probe = await probe_all(_config(antbuddy=[_antbuddy(oapi.url, SECRET)]))
    assert (probe.name, probe.status) == ("antbuddy[acme]", "ok"), probe.detail
    assert probe.detail.startswith(f"token fetched from 127.0.0.1:{oapi.port} for app {APP}")


async def test_antbuddy_wrong_secret_names_the_block_and_keys(oapi: AppServer) -> None:
    wrong = "not-the-right-secret-at-all"
    _, probe = await probe_all(_config(antbuddy=[_antbuddy(oapi.url, wrong)]))
    assert probe.status == "failed"
    assert probe.detail == (f"credentials refused by 127.0.0.1:{oapi.port} (HTTP 401): "
                            "check antbuddy[acme].app_id and app_secret")
    assert wrong not in probe.detail


async def test_antbuddy_unreachable_names_the_url_key(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    _, probe = await probe_all(_config(antbuddy=[_antbuddy(url, SECRET)]), timeout=3)
    assert probe.status == "failed"
    assert probe.detail.startswith(f"no token from 127.0.0.1:{closed_port} (")
    assert probe.detail.endswith("check antbuddy[acme].oapi_url")


async def test_other_providers_against_their_fakes() -> None:
    fakes = ProviderFakes("acme")
    async with fakes.running():
        probes = await probe_all(_config(**fakes.config()))
    by_name = {p.name: p for p in probes}
    assert by_name["quickom[acme]"].status == "ok", by_name["quickom[acme]"].detail
    assert by_name["quickom[acme]"].detail.startswith("api_key accepted by 127.0.0.1:")
    assert by_name["epacific[acme]"].status == "ok", by_name["epacific[acme]"].detail
    assert by_name["kompaas[acme]"].status == "skipped"
    assert "no credential check available" in by_name["kompaas[acme]"].detail


async def test_other_providers_refuse_wrong_keys() -> None:
    fakes = ProviderFakes("acme")
    async with fakes.running():
        blocks = fakes.config()
        blocks["quickom"][0]["api_key"] = "wrong-quickom-key"
        blocks["epacific"][0]["api_secret"] = "wrong-epacific-secret"
        probes = await probe_all(_config(**blocks))
    by_name = {p.name: p for p in probes}
    assert by_name["quickom[acme]"].detail == (
        "Quickom rejected callbridge's API key (401): check quickom[acme].api_key")
    assert by_name["epacific[acme]"].detail == (
        "ext_reg/json: ePacific rejected the credentials (HTTP 401): "
        "check epacific[acme].api_key and api_secret")
    for probe in probes:
        assert "wrong-" not in probe.detail
