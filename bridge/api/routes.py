"""Turn declared :class:`~bridge.api.endpoints.Endpoint` s into Starlette routes and OpenAPI.

Each route checks the API token and scope before its handler runs, answers a refused token
with 401 (:func:`refusal`), turns :class:`ApiError` into a JSON error body
(``{"error": {"code", "message"}}``), and never lets an unexpected exception's text (which may
echo an upstream token) reach the caller.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge import __version__
from bridge.api.endpoints import ApiError, Endpoint
from bridge.auth.tokens import AuthError
from bridge.auth.verifier import from_scope
from bridge.common.redact import redact

log = logging.getLogger("bridge.api")

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}},
}


#: The 401 answer to each :attr:`AuthError.reason`; any other reason gets :data:`_INVALID`.
_REFUSALS = {
    "missing": ("unauthenticated", "an Authorization: Bearer <api token> is required"),
    "expired": ("token_expired", "the API token has expired"),
    "malformed_claims": ("invalid_token", "the API token's claims are malformed"),
}
_INVALID = ("invalid_token", "the API token is not valid")


def refusal(exc: AuthError) -> ApiError:
    """The 401 answer to an API token refused by :func:`~bridge.auth.tokens.verify_api`, or
    503 ``retry_later`` when the identity provider's keys cannot be fetched."""
    if exc.reason == "unavailable":
        return ApiError(503, "retry_later", "the keys to check the API token cannot be fetched "
                        "now; retry shortly")
    code, message = _REFUSALS.get(exc.reason, _INVALID)
    return ApiError(401, code, message)


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"retry-after": "1"} if exc.code == "retry_later" else None
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}},
                        status_code=exc.status, headers=headers)


def api_routes(endpoints: Sequence[Endpoint], *, jwt_secret: str, leeway: float) -> list[Route]:
    """One route per (method, path); endpoints of several tenants on one path share it."""
    groups: dict[tuple[str, str], list[Endpoint]] = {}
    for endpoint in endpoints:
        groups.setdefault((endpoint.method, endpoint.path), []).append(endpoint)
    routes = []
    for (method, path), group in groups.items():
        by_tenant = {e.tenant: e for e in group}
        if len(by_tenant) != len(group) or (len(group) > 1 and None in by_tenant):
            raise ValueError(f"{method} {path} is declared twice for one tenant")
        routes.append(Route(path, _wrap(by_tenant, jwt_secret, leeway), methods=[method]))
    return routes


def _select(by_tenant: dict[str | None, Endpoint], request: Request) -> Endpoint:
    if None in by_tenant:
        return by_tenant[None]
    endpoint = by_tenant.get(request.path_params.get("tenant"))
    if endpoint is None:
        raise ApiError(404, "unknown_tenant", "no such tenant for this provider")
    return endpoint


def _wrap(by_tenant: dict[str | None, Endpoint], secret: str,
          leeway: float) -> Callable[[Request], Awaitable[Response]]:
    first = next(iter(by_tenant.values()))

    async def route(request: Request) -> Response:
        endpoint = first
        try:
            principal = None
            if first.scope is not None:
                try:
                    verifier = from_scope(request.scope, secret, leeway)
                    principal = await verifier.api_async(request.headers.get("authorization"))
                except AuthError as exc:
                    raise refusal(exc) from None
                if first.scope not in principal.scopes and "admin" not in principal.scopes:
                    raise ApiError(403, "forbidden",
                                   f"the API token lacks the {first.scope!r} scope")
                tenant = request.path_params.get("tenant")
                if tenant is not None and not principal.may_act_for(tenant):
                    raise ApiError(403, "forbidden", "the API token does not cover this tenant")
            endpoint = _select(by_tenant, request)
            return await endpoint.handler(request, principal)
        except ApiError as exc:
            return error_response(exc)
        except Exception as exc:  # the caller gets a clean 500; the log gets the (redacted) why
            log.error("%s %s failed: %s", endpoint.method, endpoint.path,
                      redact(f"{type(exc).__name__}: {exc}"), exc_info=True)
            return error_response(ApiError(500, "internal_error", "internal error"))

    route.__name__ = f"{first.method.lower()} {first.path}"
    return route


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints`` (plus the health endpoints)."""
    paths: dict[str, dict[str, Any]] = {
        "/healthz": {"get": {"summary": "The process is alive", "tags": ["health"],
                             "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Broker reachable and every upstream link up",
                            "tags": ["health"],
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready; body says why"}}}},
    }
    for e in endpoints:
        path = _openapi_path(e.path)
        if e.method.lower() in paths.get(path, {}):
            continue  # the same operation for another tenant
        operation: dict[str, Any] = {"summary": e.summary, "tags": list(e.tags), **e.operation}
        responses = operation.setdefault("responses", {"200": {"description": "OK"}})
        error = {"description": "error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        if e.scope is not None:
            operation["security"] = [{"apiToken": []}]
            operation["description"] = (operation.get("description", "") +
                                        f"\n\nRequires scope `{e.scope}`.").strip()
            responses.setdefault("401", error)
            responses.setdefault("403", error)
        params = [p for p in _path_params(e.path)
                  if all(q.get("name") != p for q in operation.get("parameters", []))]
        operation["parameters"] = [
            *({"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
              for p in params),
            *operation.get("parameters", []),
        ]
        paths.setdefault(path, {})[e.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "callbridge", "version": __version__,
                 "description": "Provider calls, webhooks and admin operations of "
                                "callbridge."},
        "paths": paths,
        "components": {
            "securitySchemes": {"apiToken": {"type": "http", "scheme": "bearer",
                                             "bearerFormat": "JWT"}},
            "schemas": {"Error": _ERROR_SCHEMA},
        },
    }


def _openapi_path(path: str) -> str:
    """A Starlette path as an OpenAPI path template: ``{name:path}`` becomes ``{name}``."""
    return "/".join(f"{{{part[1:-1].split(':')[0]}}}" if part.startswith("{")
                    and part.endswith("}") else part for part in path.split("/"))


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/")
            if part.startswith("{") and part.endswith("}")]
