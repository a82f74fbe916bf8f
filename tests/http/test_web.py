"""/callbridge.js and its types over real HTTP: any origin may import them, nothing else is
opened to other origins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.config.model import Config
from bridge.http.app import build_app
from bridge.http.serving import AppServer
from bridge.http.web import DemoBoard

OTHER_ORIGIN = "https://crm.example"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The whole app with the board on (demo), served by uvicorn on a loopback port."""
    config = Config.model_validate({"auth": {"jwt_secret": "x" * 32},
                                    "broker": {"url": "memory://"}})
    app = build_app(config, demo=DemoBoard(jwt_secret="x" * 32, tenant="acme"))
    async with AppServer(app) as server, httpx.AsyncClient(base_url=server.url,
                                                           trust_env=False) as client:
        yield client


@pytest.mark.parametrize("path, media", [("/callbridge.js", "text/javascript"),
                                         ("/callbridge.d.ts", "application/typescript")])
async def test_the_library_is_served_to_every_origin(http: httpx.AsyncClient, path: str,
                                                     media: str) -> None:
    # What a browser sends for <script type="module" src=...> or import() from another page.
    for method in ("GET", "HEAD"):
        response = await http.request(method, path, headers={"Origin": OTHER_ORIGIN,
                                                              "Sec-Fetch-Mode": "cors"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        # no credentials: "*" is only honoured for requests without them, as module loads are
        assert "access-control-allow-credentials" not in response.headers
        assert response.headers["content-type"].startswith(media)
        assert response.headers["x-content-type-options"] == "nosniff"
    # the same without an Origin header (a same-origin or non-browser request)
    assert (await http.get(path)).headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", ["/", "/board.js", "/board.css", "/board/config.json"])
async def test_the_board_stays_same_origin(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path, headers={"Origin": OTHER_ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_the_demo_token_is_not_opened_to_other_origins(http: httpx.AsyncClient) -> None:
    response = await http.post("/demo/token", headers={"Origin": OTHER_ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
