"""TokenManager against the simulator's oapi, served by real uvicorn, over a real httpx client."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import statistics
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.http.serving import AppServer
from bridge.simulator.oapi import oapi_routes
from bridge.simulator.tokens import TokenStore
from bridge.upstream.tokens import TokenAuthError, TokenManager, TokenUnavailable

APP_ID = "app-7f3a"
APP_SECRET = "s3cr3t-app-value-91c2"
FAST = {"retry_initial": 0.01, "retry_max": 0.05}


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    server = AppServer(app, log_level="warning")
    await server.start()
    try:
        yield server.url
    finally:
        await server.close(timeout=5.0)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def oapi() -> AsyncIterator[tuple[TokenStore, str]]:
    store = TokenStore({APP_ID: APP_SECRET}, lifetime=600.0)
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        yield store, url


def manager(url: str, http: httpx.AsyncClient, **kw: Any) -> TokenManager:
    options: dict[str, Any] = {"app_id": APP_ID, "app_secret": APP_SECRET, **FAST, **kw}
    return TokenManager(oapi_url=url, http=http, **options)


async def test_fetches_a_token_the_simulator_accepts(oapi, http) -> None:
    store, url = oapi
    tokens = manager(url, http)
    assert tokens.state == "idle" and tokens.current is None
    token = await tokens.get()
    assert store.check(token.value)
    assert token.expires_at == pytest.approx(store.expires_at(token.value), abs=1.0)
    assert token.fetched_at < token.refresh_at < token.expires_at
    assert tokens.state == "ok" and tokens.current == token
    assert token.value not in repr(token)
    assert store.last_body == {}


async def test_get_reuses_the_token_until_its_refresh_point(oapi, http) -> None:
    store, url = oapi
    offset = [0.0]
    tokens = manager(url, http, clock=lambda: time.time() + offset[0])
    first = await tokens.get()
    assert await tokens.get() is first
    assert store.requests == 1
    offset[0] = first.refresh_at - time.time() + 0.001  # jump just past the refresh point
    second = await tokens.get()
    assert second.value != first.value
    assert store.requests == 2


async def test_wrong_secret_is_refused_once_without_retries(oapi, http, caplog) -> None:
    store, url = oapi
    wrong = "wrong-secret-value-77"
    tokens = manager(url, http, app_secret=wrong)
    caplog.set_level(logging.DEBUG, logger="bridge.upstream.tokens")
    with pytest.raises(TokenAuthError) as info:
        await tokens.get()
    assert store.requests == 1
    assert tokens.state == "auth_failed"
    with pytest.raises(TokenAuthError):
        await tokens.get()
    assert store.requests == 2  # one request per call: the caller paces the attempts
    for text in (str(info.value), tokens.last_error or "", caplog.text):
        assert wrong not in text and APP_SECRET not in text


async def test_unknown_app_id_is_refused(oapi, http) -> None:
    _, url = oapi
    with pytest.raises(TokenAuthError):
        await manager(url, http, app_id="nobody").get()


async def test_hash_is_sha256_of_app_id_then_secret(oapi, http) -> None:
    store, url = oapi
    # The simulator accepts a hand-made request with the documented hash...
    good = hashlib.sha256((APP_ID + APP_SECRET).encode()).hexdigest()
    answer = await http.post(url + "/oapi/v1/voice/auth_token", json={},
                             headers={"x-auth-app-id": APP_ID, "x-auth-app-hash": good})
    assert answer.status_code == 200 and store.check(answer.json()["value"])
    # ...and refuses the reversed concatenation.
    bad = hashlib.sha256((APP_SECRET + APP_ID).encode()).hexdigest()
    answer = await http.post(url + "/oapi/v1/voice/auth_token", json={},
                             headers={"x-auth-app-id": APP_ID, "x-auth-app-hash": bad})
    assert answer.status_code == 401


@pytest.mark.parametrize("fmt", ["ttl", "unix", "unix_ms", "iso"])
async def test_each_expire_format(fmt: str, http) -> None:
    store = TokenStore({APP_ID: APP_SECRET}, lifetime=900.0, expire_format=fmt)
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        token = await manager(url, http).get()
    assert token.rule == fmt
    assert token.expires_at == pytest.approx(store.expires_at(token.value), abs=1.0)


async def test_503s_then_success_are_retried(oapi, http) -> None:
    store, url = oapi
    store.fail_next(3, 503)
    tokens = manager(url, http)
    token = await tokens.get()
    assert store.check(token.value)
    assert store.requests == 4


async def test_a_stalled_request_times_out_and_is_retried(oapi, http) -> None:
    store, url = oapi
    store.stall_next(1, 1.0)
    token = await manager(url, http, request_timeout=0.2).get()
    assert store.check(token.value)
    assert store.requests == 2


async def test_connection_refused_without_a_token_becomes_unavailable(http) -> None:
    store = TokenStore({APP_ID: APP_SECRET})
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        pass  # the port is closed again: nothing listens there now
    tokens = manager(url, http, unavailable_after=0.3)
    with pytest.raises(TokenUnavailable):
        await tokens.get()
    assert tokens.state == "unavailable" and tokens.last_error


async def test_persistent_5xx_without_a_token_gives_up(oapi, http) -> None:
    store, url = oapi
    store.fail_next(10_000, 502)
    tokens = manager(url, http, unavailable_after=0.3)
    with pytest.raises(TokenUnavailable):
        await tokens.get()
    assert 2 <= store.requests < 10_000


async def test_failures_are_retried_while_the_current_token_is_valid(oapi, http) -> None:
    store, url = oapi
    tokens = manager(url, http, unavailable_after=0.0)
    first = await tokens.get()
    store.fail_next(5, 503)
    # With no grace after expiry, the only reason to keep retrying is the still-valid token.
    second = await tokens.refresh()
    assert second.value != first.value
    assert store.requests == 7


async def test_concurrent_callers_share_one_request(oapi, http) -> None:
    store, url = oapi
    store.stall_next(1, 0.2)  # keep the first request open while the others arrive
    tokens = manager(url, http)
    results = await asyncio.gather(*(tokens.get() for _ in range(25)))
    assert len({t.value for t in results}) == 1
    assert store.requests == 1


async def test_concurrent_callers_share_one_refusal(oapi, http) -> None:
    store, url = oapi
    store.stall_next(1, 0.2)
    tokens = manager(url, http, app_secret="another-wrong-secret")
    results = await asyncio.gather(*(tokens.get() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, TokenAuthError) for r in results)
    assert store.requests == 1


async def test_sip_credentials_are_sent_when_configured(oapi, http) -> None:
    store, url = oapi
    await manager(url, http, sip_user="1001", sip_password="sip-pass-553").get()
    assert store.last_body == {"sipUser": "1001", "sipPassword": "sip-pass-553"}
    await manager(url, http, sip_user="1001").get()  # half a pair is not sent
    assert store.last_body == {}


async def test_refresh_points_are_spread_by_jitter(http) -> None:
    lifetime, margin, jitter = 3600.0, 60.0, 0.1
    store = TokenStore({APP_ID: APP_SECRET}, lifetime=lifetime, expire_format="unix")
    firsts, tokens = [], []
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        for seed in range(200):
            tm = manager(url, http, margin=margin, jitter=jitter, rng=random.Random(seed))
            firsts.append(await tm.get())
            tokens.append(await tm.refresh())
    # First tokens (managers started together) refresh anywhere in the second half of life.
    first_leads = [t.expires_at - t.refresh_at for t in firsts]
    assert all(margin - 1.0 <= lead <= lifetime / 2 + 1.0 for lead in first_leads)
    assert max(first_leads) - min(first_leads) > 0.8 * (lifetime / 2 - margin)
    leads = [t.expires_at - t.refresh_at for t in tokens]
    # Each lead lies in [margin, margin + jitter * lifetime] (lifetime/4 exceeds the margin).
    assert all(margin - 1.0 <= lead <= margin + jitter * lifetime + 1.0 for lead in leads)
    # Uniform over a 360 s window: the spread covers most of it, and no second is crowded.
    assert max(leads) - min(leads) > 0.8 * jitter * lifetime
    assert statistics.pstdev(leads) > 0.2 * jitter * lifetime
    per_second: dict[int, int] = {}
    for t in tokens:
        per_second[int(t.refresh_at)] = per_second.get(int(t.refresh_at), 0) + 1
    assert max(per_second.values()) <= 10


async def test_short_token_refreshes_half_a_second_before_expiry(http) -> None:
    store = TokenStore({APP_ID: APP_SECRET}, lifetime=2.0)
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        tm = manager(url, http, margin=60.0, jitter=0.1)
        first = await tm.get()
        token = await tm.refresh()
    assert 0.5 - 0.01 <= first.expires_at - first.refresh_at <= 1.0 + 0.01  # up to half life
    lead = token.expires_at - token.refresh_at
    assert 0.5 - 0.01 <= lead <= 0.5 + 0.1 * 2.0 + 0.01


async def test_a_token_that_arrives_expired_is_visible(http) -> None:
    store = TokenStore({APP_ID: APP_SECRET}, lifetime=-30.0, expire_format="unix")
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        token = await manager(url, http).get()
    assert token.expires_at < token.fetched_at
    assert token.refresh_at == token.fetched_at


def _fixed_answer(status: int, body: Any) -> Starlette:
    async def handler(request: Request) -> Response:
        if isinstance(body, str):
            return Response(body, status_code=status, media_type="text/plain")
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[Route("/oapi/v1/voice/auth_token", handler, methods=["POST"])])


async def test_data_wrapped_answer_is_accepted(http) -> None:
    app = _fixed_answer(200, {"data": {"value": "wrapped-token-0001", "expire": 120}})
    async with serve(app) as url:
        token = await manager(url, http).get()
    assert token.value == "wrapped-token-0001" and token.rule == "ttl"


@pytest.mark.parametrize("body", ["not json", {"expire": 60}, {"value": 5}, [1, 2], {"data": 1}])
async def test_bad_200_body_is_a_clear_error(body: Any, http) -> None:
    async with serve(_fixed_answer(200, body)) as url:
        tokens = manager(url, http)
        with pytest.raises(TokenUnavailable, match="auth_token answer"):
            await tokens.get()
    assert tokens.state == "unavailable"


async def test_4xx_naming_authentication_is_an_auth_error(http) -> None:
    async with serve(_fixed_answer(400, {"error": "invalid app hash"})) as url:
        with pytest.raises(TokenAuthError):
            await manager(url, http).get()


async def test_token_echoed_in_an_error_is_redacted(http) -> None:
    store = TokenStore({APP_ID: APP_SECRET})
    async with serve(Starlette(routes=oapi_routes(store))) as url:
        token = await manager(url, http).get()
    echo = _fixed_answer(404, {"error": f"no route; your token {token.value} secret {APP_SECRET}"})
    async with serve(echo) as url:
        with pytest.raises(TokenUnavailable) as info:
            await manager(url, http).get()
    assert token.value not in str(info.value) and APP_SECRET not in str(info.value)
