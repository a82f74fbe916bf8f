"""The API's routes inside the app's router, replaced as one set when the endpoints change.

The providers' endpoints exist once the service has started, and a reload may add, rebuild or
drop providers: :meth:`ApiMount.mount` swaps the old routes for new ones in a single list
assignment (nothing awaits in between, so a request is routed either before or after it), and
keeps :attr:`ApiMount.endpoints` (what ``/openapi.json`` describes) in step.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute

from bridge.api.endpoints import Endpoint
from bridge.api.routes import api_routes


class ApiMount:
    def __init__(self, routes: list[BaseRoute], endpoints: list[Endpoint], *, jwt_secret: str,
                 leeway: float) -> None:
        """``routes``: the router's list (mounted routes go at its end); ``endpoints``: the
        list kept equal to what is mounted."""
        self._routes = routes
        self.endpoints = endpoints
        self._secret = jwt_secret
        self._leeway = leeway
        self._mounted: Sequence[BaseRoute] = ()

    def mount(self, endpoints: Sequence[Endpoint]) -> None:
        """Serve exactly ``endpoints``. Raises ValueError (nothing changed) when two of them
        claim one method and path for one tenant."""
        routes = api_routes(endpoints, jwt_secret=self._secret, leeway=self._leeway)
        old = {id(r) for r in self._mounted}
        self._routes[:] = [*(r for r in self._routes if id(r) not in old), *routes]
        self._mounted = routes
        self.endpoints[:] = endpoints
