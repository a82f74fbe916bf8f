"""The board reloaded in the middle of calls shows them at once, from the channel's live state
(the server's ``state`` message), against the simulator and a real bridge (``single``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.browser.conftest import EXTENSIONS, Single, playwright_api
from tests.scenarios.conftest import SCALE, eventually

#: What a tile shows after each Kazoo signal of its extension's leg (docs/client.md).
SHOWN = {"CHANNEL_CREATE": "ringing", "CHANNEL_ANSWER": "talking", "CHANNEL_BRIDGE": "talking",
         "CHANNEL_HOLD": "on hold", "CHANNEL_UNHOLD": "talking"}

#: True when the page shows exactly ``calls`` in progress and each tile in its ``tiles`` state.
SHOWS = """({calls, tiles}) => {
    const shown = [...document.querySelectorAll('#ongoing tr')].map((r) => r.dataset.callId);
    return JSON.stringify(shown.sort()) === JSON.stringify(calls)
        && Object.entries(tiles).every(([ext, state]) =>
            document.querySelector(`li.tile[data-extension="${ext}"]`)?.dataset.state === state);
}"""


def in_progress(signals: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The calls in progress after ``signals`` (their Bridge-IDs, sorted) and what each tile
    shows: a leg lives from its CHANNEL_CREATE to its CHANNEL_DESTROY."""
    legs: dict[str, tuple[str, str | None, str]] = {}  # Call-ID -> (Bridge-ID, extension, shown)
    for name, payload in signals:
        if name == "CHANNEL_DESTROY":
            legs.pop(payload["Call-ID"], None)
            continue
        extension = payload.get("Presence-ID", "").split("@")[0] or None
        legs[payload["Call-ID"]] = (payload["Custom-Channel-Vars"]["Bridge-ID"], extension,
                                    SHOWN[name])
    tiles = {extension: "idle" for extension in EXTENSIONS}
    owners = [extension for _, extension, _ in legs.values() if extension]
    assert len(owners) == len(set(owners)), "an extension in two calls at once"
    for _, extension, shown in legs.values():
        if extension:
            tiles[extension] = shown
    return {"calls": sorted({bridge for bridge, _, _ in legs.values()}), "tiles": tiles}


async def test_board_reloaded_mid_call_shows_every_ongoing_call_within_a_second(
        single: Single, browser: Any) -> None:
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(single.board.url + "/")
    await page.wait_for_selector('#connection[data-state="open"]', timeout=10_000 * SCALE)
    await page.wait_for_function(
        "() => window.board.bridge && window.board.bridge._pending.size === 0",
        timeout=10_000 * SCALE)

    # Calls under way; then no signal more: they stay in progress, mid-call, for the reload.
    single.simulator.start_traffic(3.0)
    await eventually(lambda: len(in_progress(single.signals)["calls"]) >= 2
                     and "talking" in in_progress(single.signals)["tiles"].values(),
                     30, "two calls in progress, one answered")
    await single.simulator.stop_traffic()
    expected = in_progress(single.signals)
    assert expected["calls"], "no call in progress to show"
    print(f"\n{len(expected['calls'])} calls in progress; tiles {expected['tiles']}")

    async def shown() -> bool:
        return bool(await page.evaluate(SHOWS, expected))

    # The page that saw the events shows them: what the reloaded page must show too.
    await eventually(shown, 10, "the board to show the calls in progress from their events")

    loop = asyncio.get_running_loop()
    started = loop.time()
    await page.reload(wait_until="commit")
    try:
        await page.wait_for_function(
            f"(expected) => window.board && window.board.snapshots >= 1 && ({SHOWS})(expected)",
            arg=expected, timeout=10_000 * SCALE)
    except playwright_api.TimeoutError as exc:
        pytest.fail(f"the reloaded board did not show the calls in progress "
                    f"(no `state` message?): {exc}")
    elapsed = loop.time() - started
    print(f"the reloaded board showed them {elapsed * 1000:.0f} ms after the reload")
    assert elapsed < 1.0 * SCALE
    assert await page.get_attribute("#connection", "data-state") == "open"
    assert errors == []
