"""The /admin API over real HTTP: authorization, streams, clients, disconnects, revocations."""

from __future__ import annotations

import time

from bridge.auth.tokens import mint, mint_api
from tests.admin.clients import Client
from tests.admin.conftest import antbuddy, config_data
from tests.scenarios.conftest import ACCOUNT, APP_SECRET, JWT_SECRET, TENANT, eventually

STREAM = f"antbuddy/{TENANT}/{ACCOUNT}"
ENDPOINTS = [("GET", "/admin/streams"), ("GET", "/admin/clients"),
             ("POST", f"/admin/streams/{STREAM}/reconnect"),
             ("POST", "/admin/clients/0123456789abcdef/disconnect"),
             ("POST", "/admin/tokens/some-jti/revoke"), ("POST", "/admin/reload")]


async def test_every_admin_endpoint_needs_a_token_with_the_admin_scope(
        start_simulator, start_bridge_file):
    _, sim = await start_simulator()
    bridge = await start_bridge_file(config_data([antbuddy(sim, TENANT, ACCOUNT)]))
    reader = mint_api(JWT_SECRET, sub="crm", scopes=["calls:read", "calls:dial"])
    forged = mint_api("another-secret-of-at-least-32-bytes!!", sub="x", scopes=["admin"])
    ws_token = mint(JWT_SECRET, sub="x", channels=["calls:*"])
    for method, path in ENDPOINTS:
        missing = await bridge.call(method, path, token=None)
        assert (missing.status_code, missing.json()["error"]["code"]) == \
            (401, "unauthenticated"), path
        for token in (forged, ws_token):
            bad = await bridge.call(method, path, token=token)
            assert (bad.status_code, bad.json()["error"]["code"]) == (401, "invalid_token"), path
        lacking = await bridge.call(method, path, token=reader)
        assert (lacking.status_code, lacking.json()["error"]["code"]) == (403, "forbidden"), path
        assert "admin" in lacking.json()["error"]["message"]


async def test_openapi_describes_the_admin_endpoints(start_simulator, start_bridge_file):
    _, sim = await start_simulator()
    bridge = await start_bridge_file(config_data([antbuddy(sim, TENANT, ACCOUNT)]))
    paths = (await bridge.call("GET", "/openapi.json", token=None)).json()["paths"]
    assert set(paths["/admin/streams"]) == {"get"}
    reconnect = paths["/admin/streams/{name}/reconnect"]["post"]
    assert [p["name"] for p in reconnect["parameters"]] == ["name"]
    for path in ("/admin/clients", "/admin/clients/{session}/disconnect",
                 "/admin/tokens/{jti}/revoke", "/admin/reload"):
        operation = next(iter(paths[path].values()))
        assert operation["security"] == [{"apiToken": []}], path
        assert "Requires scope `admin`" in operation["description"], path
        assert {"401", "403"} <= set(operation["responses"]), path


async def test_streams_are_listed_and_one_is_forced_to_reconnect(
        start_simulator, start_bridge_file):
    simulator, sim = await start_simulator()
    bridge = await start_bridge_file(config_data([antbuddy(sim, TENANT, ACCOUNT)]))
    stream = bridge.stream(STREAM)
    await eventually(lambda: stream.status.state.value == "subscribed", 10, "the stream")

    body = (await bridge.call("GET", "/admin/streams")).json()
    assert body["instance_id"] == bridge.service.leases.instance_id
    [listed] = body["streams"]
    assert listed["name"] == STREAM and listed["provider"] == "antbuddy"
    assert listed["tenant"] == TENANT and listed["state"] == "subscribed"
    assert listed["reconnects"] == 0 and listed["rotations"] == 0
    assert listed["token_expires_at"] > time.time()
    assert listed["lease"] == {"state": "held", "held_by": body["instance_id"]}
    assert [p["name"] for p in body["providers"]] == [f"antbuddy-rest/{TENANT}/{ACCOUNT}"]
    assert APP_SECRET not in str(body)

    subscribes = simulator.hub.stats()["subscribes_ok"]
    # The name's slashes are part of the path (a {name:path} route).
    answer = await bridge.call("POST", f"/admin/streams/{STREAM}/reconnect")
    assert answer.status_code == 202, answer.text
    assert answer.json()["name"] == STREAM
    await eventually(lambda: stream.status.reconnects == 1 and
                     stream.status.state.value == "subscribed", 10, "the forced reconnect")
    assert simulator.hub.stats()["subscribes_ok"] > subscribes

    # Percent-encoded slashes name the same stream.
    encoded = await bridge.call("POST", f"/admin/streams/{STREAM.replace('/', '%2F')}/reconnect")
    assert encoded.status_code == 202, encoded.text
    await eventually(lambda: stream.status.reconnects == 2 and
                     stream.status.state.value == "subscribed", 10, "the second reconnect")

    unknown = await bridge.call("POST", f"/admin/streams/antbuddy/{TENANT}/nope/reconnect")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


async def test_clients_are_listed_per_channel_and_one_is_disconnected(
        start_simulator, start_bridge_file):
    _, sim = await start_simulator()
    bridge = await start_bridge_file(config_data([antbuddy(sim, TENANT, ACCOUNT)]))
    ws = bridge.server.ws_url
    first = await Client.open(ws, mint(JWT_SECRET, sub="crm-1", channels=["calls:acme:*"],
                                       token_id="jti-first"), ["calls:acme:1001"])
    second = await Client.open(ws, mint(JWT_SECRET, sub="crm-2", channels=["calls:acme:*"],
                                        token_id="jti-second"),
                               ["calls:acme:1001", "calls:acme:1002"])
    try:
        everyone = (await bridge.call("GET", "/admin/clients")).json()
        assert everyone["total"] == 2
        by_session = {c["session"]: c for c in everyone["clients"]}
        assert set(by_session) == {first.session, second.session}
        mine = by_session[second.session]
        assert mine["sub"] == "crm-2" and mine["jti"] == "jti-second"
        assert mine["remote"] == "127.0.0.1"
        assert mine["channels"] == ["calls:acme:1001", "calls:acme:1002"]
        assert time.time() - 60 < mine["connected_since"] <= time.time()

        only = (await bridge.call("GET", "/admin/clients",
                                  params={"channel": "calls:acme:1002"})).json()
        assert [c["session"] for c in only["clients"]] == [second.session]
        assert only["total"] == 1
        limited = (await bridge.call("GET", "/admin/clients", params={"limit": 1})).json()
        assert limited["total"] == 2 and len(limited["clients"]) == 1
        bad = await bridge.call("GET", "/admin/clients", params={"limit": "many"})
        assert bad.status_code == 400

        answer = await bridge.call("POST", f"/admin/clients/{second.session}/disconnect")
        assert answer.json() == {"session": second.session, "closed": True, "code": 4010,
                                 "instance_id": bridge.service.leases.instance_id}
        assert await second.wait_closed() == 4010
        await eventually(lambda: bridge.service.hub.stats()["clients"] == 1, 5,
                         "the client to leave")
        left = (await bridge.call("GET", "/admin/clients")).json()
        assert [c["session"] for c in left["clients"]] == [first.session]
        again = await bridge.call("POST", f"/admin/clients/{second.session}/disconnect")
        assert (again.status_code, again.json()["error"]["code"]) == (404, "not_found")
        assert not first.closed.is_set()
    finally:
        await first.close()
        await second.close()


async def test_clients_are_listed_and_disconnected_on_every_instance(
        start_bridge_file, prefix):
    one = await start_bridge_file(config_data([], prefix=prefix), name="one")
    two = await start_bridge_file(config_data([], prefix=prefix), name="two")
    on_two = await Client.open(two.server.ws_url, mint(JWT_SECRET, sub="crm-6",
                                                       channels=["calls:acme"]), ["calls:acme"])
    on_one = await Client.open(one.server.ws_url, mint(JWT_SECRET, sub="crm-7",
                                                       channels=["calls:acme"]), ["calls:acme"])
    try:
        listed = (await one.call("GET", "/admin/clients")).json()
        assert [c["session"] for c in listed["clients"]] == [on_one.session]  # its own only
        everywhere = (await one.call("GET", "/admin/clients",
                                     params={"instances": "all"})).json()
        assert (everywhere["total"], everywhere["asked"], everywhere["answered"]) == (2, 1, 1)
        assert [(listing["instance_id"], [c["session"] for c in listing["clients"]])
                for listing in everywhere["instances"]] == [
            (one.service.leases.instance_id, [on_one.session]),
            (two.service.leases.instance_id, [on_two.session])]
        assert everywhere["instances"][1]["clients"][0]["sub"] == "crm-6"
        for bad in ({"instances": "some"}, {"instances": "all", "limit": 1001}):
            answer = await one.call("GET", "/admin/clients", params=bad)
            assert (answer.status_code, answer.json()["error"]["code"]) == (400, "bad_request")
        answer = await one.call("POST", f"/admin/clients/{on_two.session}/disconnect")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"session": on_two.session, "closed": True, "code": 4010,
                                 "instance_id": two.service.leases.instance_id}
        assert await on_two.wait_closed() == 4010
        again = await one.call("POST", f"/admin/clients/{on_two.session}/disconnect")
        assert (again.status_code, again.json()["error"]["code"]) == (404, "not_found")
        assert "nor on any other" in again.json()["error"]["message"]
        assert not on_one.closed.is_set()
    finally:
        await on_two.close()
        await on_one.close()


async def test_a_revocation_reaches_every_instance_and_lasts_as_long_as_the_token(
        start_bridge_file, prefix):
    one = await start_bridge_file(config_data([], prefix=prefix), name="one")
    two = await start_bridge_file(config_data([], prefix=prefix), name="two")
    exp_in = 600
    token = mint(JWT_SECRET, sub="crm-9", channels=["calls:acme"], ttl=exp_in, token_id="jti-9")
    other = mint(JWT_SECRET, sub="crm-8", channels=["calls:acme"], ttl=exp_in, token_id="jti-8")
    on_two = await Client.open(two.server.ws_url, token, ["calls:acme"])
    bystander = await Client.open(two.server.ws_url, other, ["calls:acme"])
    try:
        # Instance one has no connection with this token: the configured default applies.
        answer = (await one.call("POST", "/admin/tokens/jti-9/revoke")).json()
        assert answer["jti"] == "jti-9" and answer["basis"] == "default"
        assert answer["closed_here"] == 0
        ttl = one.service.config.auth.revocation_ttl
        assert time.time() + ttl - 60 < answer["revoked_until"] <= time.time() + ttl
        assert await on_two.wait_closed() == 4004
        refused = await Client.open(one.server.ws_url, token, ["calls:acme"])
        assert await refused.wait_closed() == 4004
        await refused.close()

        # Instance two holds a connection with the token: its expiry (plus leeway) is used.
        answer = (await two.call("POST", "/admin/tokens/jti-8/revoke")).json()
        assert answer["basis"] == "token_expiry" and answer["closed_here"] == 1
        leeway = two.service.config.auth.leeway
        assert answer["revoked_until"] <= time.time() + exp_in + leeway + 1
        assert answer["revoked_until"] >= time.time() + exp_in + leeway - 60
        assert await bystander.wait_closed() == 4004

        chosen = time.time() + 120
        answer = (await one.call("POST", "/admin/tokens/jti-7/revoke",
                                 json={"expires_at": chosen})).json()
        assert answer["basis"] == "request" and abs(answer["revoked_until"] - chosen) < 0.01
        for body in ({"expires_at": time.time() - 1}, {"expires_at": "soon"}, [1]):
            bad = await one.call("POST", "/admin/tokens/jti-7/revoke", json=body)
            assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_body")
    finally:
        await on_two.close()
        await bystander.close()
