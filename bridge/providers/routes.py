"""A provider's HTTP routes: a module-level table of handlers, bound to one provider on mount.

A provider module declares its routes once, Starlette style, as :class:`Route` rows whose
handler takes the provider first (``async def detail(provider, request, principal)``, or an
unbound method of the provider class); :func:`bind` turns the table into the
:class:`~bridge.api.endpoints.Endpoint` list of one provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from bridge.api.endpoints import Endpoint
from bridge.auth.tokens import Principal

P = TypeVar("P")


@dataclass(frozen=True)
class Route(Generic[P]):
    """One row of a route table: :class:`~bridge.api.endpoints.Endpoint` less its tenant,
    with a handler that takes the provider serving the request first."""

    method: str
    path: str
    handler: Callable[[P, Request, Principal | None], Awaitable[Response]]
    scope: str | None
    summary: str
    operation: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


def bind(routes: Iterable[Route[P]], provider: P, tenant: str) -> list[Endpoint]:
    """The endpoints of ``routes``, each handled by ``provider`` for ``tenant``."""
    return [Endpoint(r.method, r.path, partial(r.handler, provider), r.scope, r.summary,
                     r.operation, r.tags, tenant=tenant) for r in routes]
