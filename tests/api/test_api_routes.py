"""The HTTP API wrapper: tokens, scopes, tenants, clean errors, and the OpenAPI document."""

from __future__ import annotations

import secrets
import time

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.api.endpoints import ApiError, Endpoint
from bridge.api.routes import api_routes, openapi_document
from bridge.auth.tokens import AUDIENCE, Principal, mint, mint_api
from bridge.http.serving import AppServer

SECRET = secrets.token_urlsafe(32)


async def whoami(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    return JSONResponse({"sub": principal.sub, "tenant": request.path_params["tenant"]})


async def fails(request: Request, principal: Principal | None) -> Response:
    raise RuntimeError("upstream said: bad token abcdefgh12345678 " + SECRET)


async def refuses(request: Request, principal: Principal | None) -> Response:
    raise ApiError(409, "device_offline", "the SIP device is offline")


async def hook(request: Request, principal: Principal | None) -> Response:
    return JSONResponse({"principal": principal is None})


ENDPOINTS = [
    Endpoint("GET", "/api/v1/x/{tenant}/me", whoami, "calls:read", "Who am I",
             {"responses": {"200": {"description": "you"}}}, ("x",)),
    Endpoint("POST", "/api/v1/x/{tenant}/fail", fails, "calls:dial", "Fails"),
    Endpoint("POST", "/api/v1/x/{tenant}/refuse", refuses, "calls:dial", "Refuses"),
    Endpoint("POST", "/webhooks/x/{tenant}", hook, None, "A webhook"),
]


@pytest.fixture
async def api():
    app = Starlette(routes=api_routes(ENDPOINTS, jwt_secret=SECRET, leeway=0))
    async with AppServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            yield http


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_scoped_token_for_the_tenant_is_served(api):
    token = mint_api(SECRET, sub="crm", scopes=["calls:read"], tenants=["acme"])
    response = await api.get("/api/v1/x/acme/me", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"sub": "crm", "tenant": "acme"}


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "unauthenticated"),
    ({"authorization": "Basic abc"}, 401, "unauthenticated"),
    ({"authorization": "Bearer not-a-jwt"}, 401, "invalid_token"),
])
async def test_missing_or_malformed_tokens_are_401(api, headers, status, code):
    response = await api.get("/api/v1/x/acme/me", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_refused_tokens_get_fixed_401_answers(api):
    """Each refusal of :func:`verify_api` has its own code and message, never the token's."""
    now = time.time()
    bad_scopes = jwt.encode({"sub": "c", "aud": AUDIENCE, "scopes": "admin",
                             "exp": int(now) + 60}, SECRET, algorithm="HS256")
    cases = [
        ({}, "unauthenticated", "an Authorization: Bearer <api token> is required"),
        (bearer(mint_api(SECRET, sub="c", scopes=["calls:read"], ttl=-10)), "token_expired",
         "the API token has expired"),
        (bearer("not-a-jwt"), "invalid_token", "the API token is not valid"),
        (bearer(bad_scopes), "invalid_token", "the API token's claims are malformed"),
    ]
    for headers, code, message in cases:
        response = await api.get("/api/v1/x/acme/me", headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": {"code": code, "message": message}}


async def test_a_websocket_token_is_not_an_api_token(api):
    ws_token = mint(SECRET, sub="crm", channels=["calls:acme"])
    response = await api.get("/api/v1/x/acme/me", headers=bearer(ws_token))
    assert response.status_code == 401


async def test_expired_forged_wrong_scope_and_wrong_tenant(api):
    expired = mint_api(SECRET, sub="c", scopes=["calls:read"], ttl=-10)
    forged = mint_api(secrets.token_urlsafe(32), sub="c", scopes=["calls:read"])
    other_scope = mint_api(SECRET, sub="c", scopes=["calls:dial"])
    other_tenant = mint_api(SECRET, sub="c", scopes=["calls:read"], tenants=["acme2", "ac?e"])
    assert (await api.get("/api/v1/x/acme/me", headers=bearer(expired))).json()["error"][
        "code"] == "token_expired"
    assert (await api.get("/api/v1/x/acme/me", headers=bearer(forged))).status_code == 401
    response = await api.get("/api/v1/x/acme/me", headers=bearer(other_scope))
    assert response.status_code == 403 and "calls:read" in response.json()["error"]["message"]
    assert (await api.get("/api/v1/x/acme/me", headers=bearer(other_tenant))).status_code == 200
    assert (await api.get("/api/v1/x/acmeX/me", headers=bearer(other_tenant))).status_code == 403


async def test_errors_are_clean_json_and_never_echo_secrets(api, caplog):
    token = mint_api(SECRET, sub="c", scopes=["calls:dial"])
    refused = await api.post("/api/v1/x/acme/refuse", headers=bearer(token))
    assert refused.status_code == 409
    assert refused.json() == {"error": {"code": "device_offline",
                                        "message": "the SIP device is offline"}}
    failed = await api.post("/api/v1/x/acme/fail", headers=bearer(token))
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert SECRET not in failed.text and "abcdefgh12345678" not in failed.text


async def test_webhooks_need_no_api_token(api):
    response = await api.post("/webhooks/x/acme")
    assert response.status_code == 200 and response.json() == {"principal": True}


def test_openapi_document_describes_every_endpoint():
    doc = openapi_document(ENDPOINTS)
    assert doc["openapi"].startswith("3.")
    me = doc["paths"]["/api/v1/x/{tenant}/me"]["get"]
    assert me["security"] == [{"apiToken": []}]
    assert {"name": "tenant", "in": "path", "required": True,
            "schema": {"type": "string"}} in me["parameters"]
    assert {"200", "401", "403"} <= set(me["responses"])
    assert "security" not in doc["paths"]["/webhooks/x/{tenant}"]["post"]
    assert doc["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"


async def test_one_path_serves_each_tenant_from_its_own_endpoint():
    def answer(name: str):
        async def handler(request: Request, principal: Principal | None) -> Response:
            return JSONResponse({"served_by": name})
        return handler

    endpoints = [Endpoint("POST", "/webhooks/y/{tenant}", answer(t), None, "hook", tenant=t)
                 for t in ("acme", "globex")]
    app = Starlette(routes=api_routes(endpoints, jwt_secret=SECRET, leeway=0))
    async with AppServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            assert (await http.post("/webhooks/y/acme")).json() == {"served_by": "acme"}
            assert (await http.post("/webhooks/y/globex")).json() == {"served_by": "globex"}
            unknown = await http.post("/webhooks/y/initech")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_tenant"
    assert list(openapi_document(endpoints)["paths"]["/webhooks/y/{tenant}"]) == ["post"]
    with pytest.raises(ValueError):
        api_routes([*endpoints, endpoints[0]], jwt_secret=SECRET, leeway=0)
