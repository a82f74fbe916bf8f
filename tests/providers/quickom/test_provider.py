"""Quickom provider against its fake, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any, AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from bridge.api.routes import api_routes
from bridge.auth.tokens import mint_api
from bridge.cluster.cursors import MemoryCursors
from bridge.config.providers import QuickomAccount
from bridge.events.event import Event
from bridge.http.serving import AppServer
from bridge.providers.base import ProviderContext
from bridge.providers.quickom import create
from bridge.providers.quickom.client import QuickomError
from bridge.simulator.quickom import QuickomSimulator

API_KEY = "qk-" + secrets.token_hex(8)
SIGNING = "qs-" + secrets.token_hex(8)
JWT = secrets.token_urlsafe(32)
TENANT = "acme"


class Harness:
    def __init__(self, sim: QuickomSimulator, fake: AppServer, http: httpx.AsyncClient) -> None:
        self.sim, self.fake, self.http = sim, fake, http
        self.events: list[Event] = []
        self.cursors = MemoryCursors()
        self.servers: list[AppServer] = []

    def submit(self, event: Event) -> bool:
        self.events.append(event)
        return True

    def account(self, **over: Any) -> QuickomAccount:
        data = {"tenant": TENANT, "api_url": self.fake.url, "api_key": API_KEY,
                "signing_secret": SIGNING, "backfill_interval": 0.0}
        data.update(over)
        return QuickomAccount.model_validate(data)

    def provider(self, **over: Any):
        context = ProviderContext(submit=self.submit, http=self.http, cursors=self.cursors)
        return create(self.account(**over), context, streams=[])

    async def serve(self, provider) -> AppServer:
        app = Starlette(routes=api_routes(provider.endpoints(), jwt_secret=JWT, leeway=5))
        server = AppServer(app)
        await server.start()
        self.servers.append(server)
        return server


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    sim = QuickomSimulator(api_key=API_KEY, signing_secret=SIGNING)
    async with AppServer(sim.build_app()) as fake, \
            httpx.AsyncClient(trust_env=False, timeout=10) as http:
        harness = Harness(sim, fake, http)
        yield harness
        for server in harness.servers:
            await server.close()


def token(scopes=("calls:read",), tenants=(TENANT,)) -> dict[str, str]:
    return {"authorization": "Bearer " + mint_api(JWT, sub="t", scopes=scopes, tenants=tenants)}


# -- webhooks ------------------------------------------------------------------------------------

async def test_webhook_accepts_signed_and_drops_replay(h: Harness) -> None:
    server = await h.serve(h.provider())
    url = f"{server.url}/webhooks/quickom/{TENANT}"
    call = h.sim.add_call(records=2)
    first = await h.sim.deliver(url, call, request_id="rq-1")
    assert first.status_code == 200 and first.json() == {"status": "accepted"}
    again = await h.sim.deliver(url, call, request_id="rq-1")
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert [e.call_id for e in h.events] == [call["call_id"]]
    event = h.events[0]
    assert event.type == "call.completed"
    assert event.durations is not None and event.durations.duration == 42
    assert [r["record_id"] for r in event.detail["recordings"]] == \
        [f["record_id"] for f in call["record_files"]]


async def test_webhook_rejections(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.providers.quickom")
    server = await h.serve(h.provider(max_body_bytes=2048))
    url = f"{server.url}/webhooks/quickom/{TENANT}"
    call = h.sim.add_call()
    tampered = await h.sim.deliver(url, call, tamper=True)
    assert tampered.status_code == 401 and tampered.json()["error"]["code"] == "invalid_signature"
    missing = await h.sim.deliver(url, call, unsigned=True)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_signature"
    wrong_key = await h.sim.deliver(url, call, signature=h.sim.signature(
        h.sim.webhook_body(call), secret="not-the-secret"))
    assert wrong_key.status_code == 401
    assert SIGNING not in tampered.text + missing.text + wrong_key.text
    # The first refusal is logged for the operator (a wrong signing_secret refuses every
    # delivery); the next ones within the interval are only counted.
    refused = [r.getMessage() for r in caplog.records if "webhook from" in r.getMessage()]
    assert len(refused) == 1 and "does not match" in refused[0], refused
    assert SIGNING not in caplog.text

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        big = await client.post(url, content=b"{" + b" " * 4096 + b"}",
                                headers={"Signature": "00" * 32})
        assert big.status_code == 413

        async def chunked():  # no Content-Length: the reader must stop at the limit
            for _ in range(100):
                yield b" " * 1024

        streamed = await client.post(url, content=chunked(), headers={"Signature": "00" * 32})
        assert streamed.status_code == 413
        malformed = await client.post(url, content=b"{not json", headers={"Signature": "00"})
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "malformed_json"
        unknown = await client.post(f"{server.url}/webhooks/quickom/nobody", json={},
                                    headers={"Signature": "00"})
        assert unknown.status_code == 404
    assert h.events == []


# -- backfill ------------------------------------------------------------------------------------

async def test_backfill_dedups_with_webhooks_and_survives_restart(h: Harness) -> None:
    provider = h.provider()
    server = await h.serve(provider)
    url = f"{server.url}/webhooks/quickom/{TENANT}"
    live = h.sim.add_call()
    missed = [h.sim.add_call() for _ in range(3)]
    assert (await h.sim.deliver(url, live)).status_code == 200
    h.sim.delivered.clear()  # Quickom lists the delivered call as "new" anyway
    assert await provider.backfill.poll() == 3
    ids = [e.call_id for e in h.events]
    assert sorted(ids) == sorted([live["call_id"], *(c["call_id"] for c in missed)])
    assert len(set(e.id for e in h.events)) == len(h.events)
    assert await provider.backfill.poll() == 0

    # A new provider with the same cursor store: nothing repeated, the new call not lost.
    later = h.sim.add_call()
    restarted = h.provider(tenant=TENANT)
    assert await restarted.backfill.poll() == 1
    assert [e.call_id for e in h.events] == [*ids, later["call_id"]]


async def test_backfill_runs_at_start_and_in_intervals(h: Harness) -> None:
    h.sim.add_call()
    provider = h.provider(backfill_interval=0.05, backfill_limit=1)
    task = asyncio.create_task(provider.run())
    try:
        async with asyncio.timeout(10):
            while len(h.events) < 1:
                await asyncio.sleep(0.01)
            h.sim.add_call()
            while len(h.events) < 2:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert all(query == {"limit": "1"} for path, query in h.sim.requests
               if path.endswith("/new"))
    assert provider.snapshot()["ok"] is True


async def test_backfill_errors_are_reported_and_retried(h: Harness) -> None:
    h.sim.add_call()
    h.sim.faults.append(503)
    provider = h.provider(api_key="wrong-api-key")
    with pytest.raises(QuickomError) as failure:
        await provider.backfill.poll()
    assert failure.value.code == "upstream_error"
    with pytest.raises(QuickomError) as unauthorized:
        await provider.backfill.poll()
    assert unauthorized.value.code == "upstream_unauthorized"
    assert "wrong-api-key" not in unauthorized.value.message
    assert h.events == []


@pytest.mark.parametrize(("limit", "status"), [("0", 400), ("51", 400), ("x", 400),
                                               ("1", 200), ("50", 200)])
async def test_fake_enforces_limit_bounds_and_key(h: Harness, limit: str, status: int) -> None:
    for _ in range(3):
        h.sim.add_call()
    url = f"{h.fake.url}/api/enterprise/call/new"
    answer = await h.http.get(url, params={"limit": limit}, headers={"authorization": API_KEY})
    assert answer.status_code == status
    if status == 200:
        assert len(answer.json()) == min(int(limit), 3)
    denied = await h.http.get(url, headers={"authorization": "nope"})
    assert denied.status_code == 401


async def test_limit_validated_before_request(h: Harness) -> None:
    provider = h.provider()
    for bad in (0, 51):
        with pytest.raises(ValueError):
            await provider.client.new_calls(bad)


# -- API -----------------------------------------------------------------------------------------

async def test_call_detail_and_errors(h: Harness) -> None:
    server = await h.serve(h.provider())
    call = h.sim.add_call()
    base = f"{server.url}/api/v1/quickom/{TENANT}/calls"
    ok = await h.http.get(f"{base}/{call['call_id']}", headers=token())
    assert ok.status_code == 200 and ok.json() == call
    unknown = await h.http.get(f"{base}/c-missing", headers=token())
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert (await h.http.get(f"{base}/{call['call_id']}")).status_code == 401
    other = await h.http.get(f"{base}/{call['call_id']}", headers=token(tenants=("other",)))
    assert other.status_code == 403
    h.sim.faults.append(500)
    failed = await h.http.get(f"{base}/{call['call_id']}", headers=token())
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "upstream_error"

    bad_key = await h.serve(h.provider(tenant="acme2", api_key="bad-key-123"))
    denied = await h.http.get(f"{bad_key.url}/api/v1/quickom/acme2/calls/{call['call_id']}",
                              headers=token(tenants=("acme2",)))
    assert denied.status_code == 502
    assert denied.json()["error"]["code"] == "upstream_unauthorized"
    assert "bad-key-123" not in denied.text


async def test_recording_selection_and_missing(h: Harness) -> None:
    h.sim.recording_size = 100_000
    server = await h.serve(h.provider())
    call = h.sim.add_call(records=2)
    plain = h.sim.add_call(records=0)
    cid, files = call["call_id"], call["record_files"]
    base = f"{server.url}/api/v1/quickom/{TENANT}/calls"

    async def sha(**params: Any) -> str:
        answer = await h.http.get(f"{base}/{cid}/recording", params=params, headers=token())
        assert answer.status_code == 200, answer.text
        return hashlib.sha256(answer.content).hexdigest()

    first, second = (h.sim.recording_sha256(cid, f["record_id"]) for f in files)
    assert first != second
    assert await sha() == first
    assert await sha(record_index="1") == second
    # record_id wins over record_index
    assert await sha(record_id=files[0]["record_id"], record_index="1") == first
    none = await h.http.get(f"{base}/{plain['call_id']}/recording", headers=token())
    assert none.status_code == 404 and none.json()["error"]["code"] == "no_recording"
    out = await h.http.get(f"{base}/{cid}/recording", params={"record_index": "2"},
                           headers=token())
    assert out.status_code == 404
    bad = await h.http.get(f"{base}/{cid}/recording", params={"record_index": "-1"},
                           headers=token())
    assert bad.status_code == 400


async def test_recording_is_streamed(h: Harness) -> None:
    h.sim.recording_size = 6 * 1024 * 1024
    h.sim.download_gate = asyncio.Event()
    h.sim.pause_after = 1024 * 1024
    server = await h.serve(h.provider())
    call = h.sim.add_call()
    record_id = call["record_files"][0]["record_id"]
    url = f"{server.url}/api/v1/quickom/{TENANT}/calls/{call['call_id']}/recording"
    digest, received, largest = hashlib.sha256(), 0, 0
    async with asyncio.timeout(30), h.http.stream("GET", url, headers=token()) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(h.sim.recording_size)
        async for chunk in answer.aiter_raw():
            digest.update(chunk)
            received += len(chunk)
            largest = max(largest, len(chunk))
            # The fake holds the rest back: bytes arriving now prove pass-through streaming.
            if received >= h.sim.pause_after and not h.sim.download_gate.is_set():
                assert received < h.sim.recording_size
                h.sim.download_gate.set()
    assert h.sim.download_gate.is_set()
    assert received == h.sim.recording_size
    assert largest < h.sim.recording_size
    assert digest.hexdigest() == h.sim.recording_sha256(call["call_id"], record_id)
