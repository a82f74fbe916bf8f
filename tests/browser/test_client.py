"""callbridge.js and the board in headless Chromium against a scripted ``/ws`` (the ``fake``
fixture): live state (``state`` messages), saved positions, and loading the library from
another origin."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bridge.http.serving import AppServer
from tests.browser.conftest import TENANT, Fake, FakeConnection
from tests.scenarios.conftest import SCALE

CALLS, SYSTEM = f"calls:{TENANT}", f"system:{TENANT}"
EPOCH, NEW_EPOCH = "7c7a54c3daef", "a1b2c3d4e5f6"
T0 = 1_714_556_400_000


def offset(n: int) -> str:
    return f"{T0 + n}-0"


def event_frame(n: int, event: dict[str, Any], channel: str = CALLS,
                epoch: str = EPOCH) -> dict[str, Any]:
    body = {"v": 1, "id": f"ev-{channel}-{n}", "provider": "antbuddy", "tenant": TENANT,
            "occurred_at": "2024-05-01T10:00:00.000Z", **event}
    return {"type": "event", "channel": channel, "epoch": epoch, "offset": offset(n),
            "event": body}


async def subscribed(connection: FakeConnection, request: dict[str, Any],
                     epoch: str = EPOCH, at: int = 0) -> None:
    channels = request["channels"]
    await connection.send({"type": "subscribed", "id": request["id"], "channels": channels,
                           "epochs": {c: epoch for c in channels},
                           "offsets": {c: offset(at) for c in channels}})


async def library_page(browser: Any, server: AppServer) -> Any:
    """A page of the server's origin, with callbridge.js imported as ``window.cb``."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    await page.goto(server.url + "/board/config.json")
    await page.evaluate("async () => { window.cb = await import('/callbridge.js'); }")
    return page


async def test_the_client_resumes_from_saved_positions_and_follows_the_state(
        fake: tuple[Fake, AppServer], browser: Any) -> None:
    bridge, server = fake
    page = await library_page(browser, server)
    saved = {CALLS: {"epoch": EPOCH, "offset": offset(100)}}
    await page.evaluate("""({url, saved, channel}) => {
        window.seen = {snapshots: [], offsets: []};
        window.client = cb.connect({
            url, token: () => "token", channels: [channel], positions: saved,
            onSnapshot: (s) => seen.snapshots.push(s),
            onEvent: (event, frame) => seen.offsets.push(frame.offset),
        });
    }""", {"url": server.ws_url + "/ws", "saved": saved, "channel": CALLS})
    connection = await bridge.accept()
    request = await connection.receive()
    assert request["type"] == "subscribe" and request["channels"] == [CALLS]
    assert request["state"] is True
    assert request["resume"] == saved
    await subscribed(connection, request, at=900)  # a saved position wins over this one
    assert await page.evaluate(f"client.cursor('{CALLS}').offset") == offset(100)

    # History no longer covers the position: the state instead of a gap, then later events.
    call = {"call_id": "c1", "state": "ringing", "extensions": ["1001"],
            "legs": [{"call_id": "c1", "state": "ringing", "extension": "1001"}]}
    await connection.send({"type": "state", "id": request["id"], "channel": CALLS,
                           "epoch": EPOCH, "offset": offset(500), "calls": [call],
                           "extensions": [{"extension": "1001", "status": "ringing",
                                           "calls": ["c1"]}]})
    await connection.send(event_frame(400, {"type": "call.created", "call_id": "c0"}))
    await connection.send(event_frame(600, {"type": "call.answered", "call_id": "c1"}))
    await page.wait_for_function("() => seen.offsets.length === 1", timeout=5_000 * SCALE)
    seen = await page.evaluate("seen")
    assert seen["offsets"] == [offset(600)]  # the event the state already holds is dropped
    assert [s["calls"] for s in seen["snapshots"]] == [[call]]
    assert seen["snapshots"][0]["channel"] == CALLS
    stats = await page.evaluate("client.stats")
    assert stats["snapshots"] == 1 and stats["duplicates"] == 1 and stats["gaps"] == 0
    assert await page.evaluate("client.positions()") == {
        CALLS: {"epoch": EPOCH, "offset": offset(600)}}

    # A restart: the client resumes from where it is, asking for the state again.
    await connection.close(1012)
    connection = await bridge.accept()
    request = await connection.receive()
    assert request["state"] is True
    assert request["resume"] == {CALLS: {"epoch": EPOCH, "offset": offset(600)}}
    await subscribed(connection, request, epoch=NEW_EPOCH, at=10)
    await connection.send({"type": "state", "id": request["id"], "channel": CALLS,
                           "epoch": NEW_EPOCH, "offset": offset(20), "calls": [],
                           "extensions": []})
    await page.wait_for_function("() => seen.snapshots.length === 2", timeout=5_000 * SCALE)
    assert await page.evaluate("client.positions()") == {
        CALLS: {"epoch": NEW_EPOCH, "offset": offset(20)}}
    # a channel subscribed later resumes too, with the state asked for
    await page.evaluate("(c) => { window.added = client.subscribe([c]).catch(() => null); }",
                        SYSTEM)
    request = await connection.receive()
    assert request == {"type": "subscribe", "id": request["id"], "channels": [SYSTEM],
                       "resume": {}, "state": True}
    await page.evaluate("client.close()")
    assert page.errors == []


async def test_state_is_asked_for_only_when_wanted(fake: tuple[Fake, AppServer],
                                                   browser: Any) -> None:
    bridge, server = fake
    page = await library_page(browser, server)
    clients = {
        # the API before live state: unchanged, no state asked for, gaps as before
        "events only": "cb.connect({url, token: () => 't', channels, onEvent: () => {}})",
        "onSnapshot": "cb.connect({url, token: () => 't', channels, onSnapshot: () => {}})",
        "onSnapshot, state false":
            "cb.connect({url, token: () => 't', channels, onSnapshot: () => {}, state: false})",
        "class, state true":
            "new cb.CallBridge({url, token: () => 't', channels, state: true}).start()",
        "class": "new cb.CallBridge({url, token: () => 't', channels}).start()",
    }
    asked = {}
    for name, expression in clients.items():
        await page.evaluate(f"({{url, channels}}) => {{ window.last = {expression}; }}",
                            {"url": server.ws_url + "/ws", "channels": [CALLS]})
        connection = await bridge.accept()
        request = await connection.receive()
        assert request["resume"] == {}
        asked[name] = request.get("state", False)
        await page.evaluate("last.close()")
    assert asked == {"events only": False, "onSnapshot": True, "onSnapshot, state false": False,
                     "class, state true": True, "class": False}
    assert page.errors == []


def leg(call_id: str, state: str, extension: str | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"call_id": call_id, "state": state, **fields}
    if extension:
        out["extension"] = extension
    return out


def party(number: str) -> dict[str, Any]:
    return {"number": number, "name": None}


#: A board's worth of live state: an internal call talking, a call from outside ringing at
#: 1003, a call to outside that 1004 holds; 1005 is known only by its presence.
STATE_CALLS = [
    {"call_id": "c-internal", "state": "bridged", "direction": "internal",
     "caller": party("1001"), "callee": party("1002"), "started_at": "2024-05-01T09:59:00Z",
     "answered_at": "2024-05-01T09:59:05Z", "extensions": ["1001", "1002"],
     "legs": [leg("c-internal", "bridged", "1001", direction="outgoing",
                  leg_direction="inbound", caller=party("1001"), callee=party("1002")),
              leg("c-internal-b", "answered", "1002", direction="incoming",
                  leg_direction="outbound", caller=party("1001"), callee=party("1002"))]},
    {"call_id": "c-in", "state": "ringing", "direction": "inbound",
     "caller": party("+84901111111"), "callee": party("1003"),
     "started_at": "2024-05-01T09:59:30Z", "extensions": ["1003"],
     "legs": [leg("c-in", "ringing", leg_direction="inbound"),
              leg("c-in-b", "ringing", "1003", direction="incoming", leg_direction="outbound",
                  caller=party("+84901111111"), callee=party("1003"))]},
    {"call_id": "c-out", "state": "held", "direction": "outbound",
     "caller": party("1004"), "callee": party("+84902222222"),
     "started_at": "2024-05-01T09:59:40Z", "extensions": ["1004"],
     "legs": [leg("c-out", "held", "1004", direction="outgoing", leg_direction="inbound",
                  caller=party("1004"), callee=party("+84902222222")),
              leg("c-out-b", "answered", leg_direction="outbound")]},
]
STATE_EXTENSIONS = [
    {"extension": "1001", "status": "talking", "calls": ["c-internal"]},
    {"extension": "1002", "status": "talking", "calls": ["c-internal"]},
    {"extension": "1003", "status": "ringing", "calls": ["c-in"]},
    {"extension": "1004", "status": "held", "calls": ["c-out"]},
    {"extension": "1005", "status": "idle", "calls": [], "online": False},
]


async def board_view(page: Any) -> dict[str, Any]:
    return await page.evaluate("""() => ({
        tiles: Object.fromEntries([...document.querySelectorAll('li.tile')].map(
            (t) => [t.dataset.extension, [t.dataset.state, t.querySelector('.peer').textContent]])),
        calls: [...document.querySelectorAll('#ongoing tr')].map(
            (r) => [r.dataset.callId, r.dataset.state]),
        completed: document.querySelectorAll('#completed tr').length,
    })""")


async def test_the_board_shows_the_state_then_applies_events(fake: tuple[Fake, AppServer],
                                                              browser: Any) -> None:
    bridge, server = fake
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(server.url + "/")
    connection = await bridge.accept()
    request = await connection.receive()
    assert request["state"] is True and request["resume"] == {}  # a loaded page knows nothing
    assert sorted(request["channels"]) == [CALLS, SYSTEM]
    await subscribed(connection, request)
    await connection.send({"type": "state", "id": request["id"], "channel": CALLS,
                           "epoch": EPOCH, "offset": offset(50), "calls": STATE_CALLS,
                           "extensions": STATE_EXTENSIONS})
    await connection.send({"type": "state", "id": request["id"], "channel": SYSTEM,
                           "epoch": EPOCH, "offset": offset(50), "calls": [],
                           "extensions": []})
    await page.wait_for_function("() => window.board.snapshots === 1", timeout=5_000 * SCALE)
    assert await board_view(page) == {
        "tiles": {"1001": ["talking", "with 1002"], "1002": ["talking", "with 1001"],
                  "1003": ["ringing", "with +84901111111"],
                  "1004": ["on hold", "with +84902222222"], "1005": ["idle", ""]},
        "calls": [["c-internal", "talking"], ["c-in", "ringing"], ["c-out", "on hold"]],
        "completed": 0,
    }
    assert await page.get_attribute('li.tile[data-extension="1005"]', "data-online") == "false"
    # the talking tiles count from the answer the state gives, not from the page load
    assert await page.get_attribute('li.tile[data-extension="1001"]', "data-since") == str(
        1714557545000)

    # Events after the state's offset apply to it; one at or before it is already in it.
    ext = {"caller": party("+84901111111"), "callee": party("1003"), "bridge_id": "c-in"}
    for n, event in [
        (40, {"type": "call.created", "call_id": "stale", "extension": "1002"}),
        (60, {"type": "call.answered", "call_id": "c-in-b", "extension": "1003",
              "direction": "incoming", **ext}),
        (61, {"type": "call.ended", "call_id": "c-internal", "extension": "1001",
              "caller": party("1001"), "callee": party("1002"),
              "hangup": {"cause": "NORMAL_CLEARING"}}),
        (62, {"type": "call.ended", "call_id": "c-internal-b", "extension": "1002",
              "caller": party("1001"), "callee": party("1002"),
              "detail": {"closed_by": "max_age"}}),
    ]:
        await connection.send(event_frame(n, event))
    await page.wait_for_function("() => document.querySelectorAll('#completed tr').length === 2",
                                 timeout=5_000 * SCALE)
    view = await board_view(page)
    assert view["tiles"]["1001"] == ["idle", ""] and view["tiles"]["1002"] == ["idle", ""]
    assert view["tiles"]["1003"] == ["talking", "with +84901111111"]
    assert view["calls"] == [["c-in", "talking"], ["c-out", "on hold"]]
    assert "closed by callbridge (max_age)" in (await page.text_content("#completed") or "")

    # Back after a restart, past what history holds: the new state replaces the board's.
    await connection.close(1012)
    connection = await bridge.accept()
    request = await connection.receive()
    assert request["state"] is True and request["resume"][CALLS] == {"epoch": EPOCH,
                                                                      "offset": offset(62)}
    await subscribed(connection, request, epoch=NEW_EPOCH)
    await connection.send({"type": "state", "id": request["id"], "channel": CALLS,
                           "epoch": NEW_EPOCH, "offset": offset(90), "calls": STATE_CALLS[2:],
                           "extensions": STATE_EXTENSIONS[3:4]})
    await page.wait_for_function("() => window.board.snapshots === 2", timeout=5_000 * SCALE)
    view = await board_view(page)
    assert view["calls"] == [["c-out", "on hold"]]
    assert {e: s for e, (s, _) in view["tiles"].items()} == {
        "1001": "idle", "1002": "idle", "1003": "idle", "1004": "on hold", "1005": "idle"}
    assert errors == []


async def test_the_library_loads_from_another_origin(fake: tuple[Fake, AppServer],
                                                     browser: Any) -> None:
    """docs/client.md's example: a page of another origin imports /callbridge.js (a module
    script and a dynamic import) and connects."""
    bridge, server = fake
    library = server.url + "/callbridge.js"
    html = f"""<!doctype html><meta charset="utf-8"><title>crm</title>
<script type="module">
  import {{ connect }} from "{library}";
  window.bridge = connect({{ url: "{server.ws_url}/ws", token: async () => "t",
                             channels: ["{CALLS}"], onSnapshot: () => {{}} }});
</script>"""
    other = Starlette(routes=[Route("/", lambda request: HTMLResponse(html))])
    async with AppServer(other) as crm:
        assert crm.port != server.port  # another origin: same host, another port
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(crm.url + "/")
        connection = await bridge.accept()  # the module ran, and connected
        request = await connection.receive()
        assert request["channels"] == [CALLS] and request["state"] is True
        outcome = await page.evaluate("""async ({library, board}) => {
            const imported = await import(library);
            let refused = null;
            try { await import(board); } catch (e) { refused = e.name; }
            return {connect: typeof imported.connect, refused};
        }""", {"library": library, "board": server.url + "/board.js"})
        # the board's own script has no CORS header: a browser refuses it, as it should
        assert outcome == {"connect": "function", "refused": "TypeError"}
        await page.evaluate("bridge.close()")
        assert errors == []
