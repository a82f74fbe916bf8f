"""The board and callbridge.js in headless Chromium, against a running demo-like setup."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS, EXTENSIONS, SIP_USER, Setup
from tests.scenarios.conftest import SCALE, eventually


async def open_board(browser: Any, setup: Setup) -> Any:
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    assert setup.board is not None
    await page.goto(setup.board.url + "/")
    await page.wait_for_selector('#connection[data-state="open"]', timeout=10_000 * SCALE)
    # subscribed: the tenant channel has an epoch on the client once the reply came back
    await page.wait_for_function(
        "() => window.board.bridge && window.board.bridge._pending.size === 0",
        timeout=10_000 * SCALE)
    return page


async def page_value(page: Any, expression: str) -> Any:
    return await page.evaluate(expression)


async def test_tile_rings_after_the_simulator_event(setup: Setup, browser: Any) -> None:
    page = await open_board(browser, setup)
    for ext in EXTENSIONS:
        assert await page.text_content(f'li.tile[data-extension="{ext}"] .state') == "idle"
    await page.evaluate("""() => {
        window.firstRinging = null;
        new MutationObserver(() => {
            const t = document.querySelector('li.tile[data-state="ringing"]');
            if (t && !window.firstRinging) window.firstRinging = {at: Date.now(), ext: t.dataset.extension};
        }).observe(document.getElementById('tiles'), {attributes: true, subtree: true});
    }""")
    setup.simulator.start_traffic(1.0)
    ringing = await page.wait_for_selector('li.tile[data-state="ringing"]',
                                           timeout=15_000 * SCALE)
    assert ringing is not None
    # The tile may already have moved on (calls are short here): the observer saw the change.
    first = await page_value(page, "window.firstRinging")
    created = [t for t, name, _, _ in setup.emitted if name == "CHANNEL_CREATE"]
    assert created and first is not None
    assert first["ext"] in EXTENSIONS
    latency = first["at"] / 1000 - created[0]
    print(f"\ntile {first['ext']} showed 'ringing' {latency * 1000:.0f} ms after the "
          f"simulator's CHANNEL_CREATE")
    assert latency >= 0  # caused by the signal, not before it
    await setup.simulator.stop_traffic()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
    assert (ARTIFACTS / "board.png").stat().st_size > 0
    assert page.errors == []


async def test_page_resumes_after_a_server_restart_without_missing_events(
        setup: Setup, browser: Any) -> None:
    page = await open_board(browser, setup)
    setup.simulator.start_traffic(4.0)
    await eventually(lambda: page_value(page, "window.board.events.length >= 10"), 20,
                     "events before the restart")
    await setup.stop_board()  # closes the page's socket with 1012
    down_since = time.time()
    await eventually(lambda: page_value(
        page, "window.board.bridge.state === 'reconnecting'"), 10, "the page to notice")
    await asyncio.sleep(1.0)  # events keep flowing into Redis while the board is down
    await setup.start_board()
    assert any(down_since < t < time.time() for t, *_ in setup.emitted), \
        "no signal while the board was down: nothing for the resume to recover"
    await eventually(lambda: page_value(page, "window.board.bridge.stats.connects === 2"), 30,
                     "the page to reconnect")
    await asyncio.sleep(0.5)
    await setup.simulator.stop_traffic()
    sent = Counter((name, call_id, msg_id) for _, name, call_id, msg_id in setup.emitted)

    async def received() -> Counter[tuple[str, str, str]]:
        events = await page_value(page, "window.board.events.filter(e => e.channel.startsWith('calls:'))")
        return Counter((e["upstream"], e["call_id"], e["msg_id"]) for e in events)

    async def complete() -> bool:
        return await received() == sent

    await eventually(complete, 20, "every simulator signal on the page")
    events = await page_value(page, "window.board.events")
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was shown twice"
    stats = await page_value(page, "window.board.bridge.stats")
    print(f"\n{sum(sent.values())} signals sent, {len(ids)} events on the page, "
          f"{stats['connects']} connections, {stats['gaps']} gaps")
    assert stats["gaps"] == 0
    assert await page.get_attribute("#connection", "data-state") == "open"
    assert page.errors == []


@pytest.mark.parametrize("setup", [4.0], indirect=True)
async def test_token_renewed_in_band_without_reconnecting(setup: Setup, browser: Any) -> None:
    page = await open_board(browser, setup)
    welcome = await page_value(page, "window.board.bridge.session")
    first_expiry = welcome["expires_at"]
    await eventually(lambda: page_value(page, "window.board.bridge.stats.renewals >= 2"), 30,
                     "two in-band renewals")
    # past the first token's expiry and grace: still the first connection
    await eventually(lambda: time.time() > first_expiry + welcome["expiry_grace"] + 1, 30,
                     "the first token to lapse")
    stats = await page_value(page, "window.board.bridge.stats")
    assert stats["connects"] == 1
    assert await page.get_attribute("#connection", "data-state") == "open"
    assert "renewed" in (await page.text_content("#renewals") or "")
    # the live link still delivers after the renewals
    setup.simulator.start_traffic(2.0)
    await page.wait_for_selector('li.tile[data-state="ringing"]', timeout=15_000 * SCALE)
    assert (await page_value(page, "window.board.bridge.stats"))["connects"] == 1
    assert page.errors == []


async def test_static_files_and_demo_token(setup: Setup) -> None:
    assert setup.board is not None
    async with httpx.AsyncClient(base_url=setup.board.url, trust_env=False) as http:
        js = await http.get("/callbridge.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert "export function connect" in js.text
        dts = await http.get("/callbridge.d.ts")
        assert dts.status_code == 200 and "export declare class CallBridge" in dts.text
        index = await http.get("/")
        assert index.status_code == 200 and "Content-Security-Policy" in index.headers
        token = (await http.post("/demo/token")).json()
        assert token["expires_at"] > time.time()
        assert (await http.get("/demo/token")).status_code == 405


async def test_click_to_call_from_the_keyboard(setup: Setup, browser: Any) -> None:
    page = await browser.new_page()
    await page.goto(setup.ingest.url + "/")  # the instance with the AntBuddy account
    await page.wait_for_selector('#connection[data-state="open"]', timeout=10_000 * SCALE)
    await page.focus("#dial-number")
    await page.keyboard.type("+84901234567")
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        "() => document.getElementById('dial-result').textContent.includes('rings')",
        timeout=10_000 * SCALE)
    assert [(n, u) for _, n, u in setup.simulator.rest.dials] == [("+84901234567", SIP_USER)]
