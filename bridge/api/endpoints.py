"""How a module declares an HTTP API endpoint: handler, required scope, OpenAPI description."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from bridge.auth.tokens import Principal


class ApiError(Exception):
    """An answer other than success: ``status``, a machine ``code`` and a human ``message``.

    The message is shown to the caller: never put a secret or an upstream token in it.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


Handler = Callable[[Request, Principal | None], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    #: Starlette path, e.g. ``/api/v1/quickom/{tenant}/calls/{call_id}``.
    path: str
    handler: Handler
    #: Scope an API token needs; None: no token (webhooks, which check their own signature).
    scope: str | None
    summary: str
    #: The OpenAPI operation object, without ``summary`` and ``security`` (added for you).
    operation: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    #: The tenant this endpoint serves, for paths with a ``{tenant}`` parameter: several
    #: providers of one kind declare the same path, and requests go to the one of their tenant.
    tenant: str | None = None
