"""build_app: what the config hands the ``/ws`` endpoint, without serving anything."""

from __future__ import annotations

import secrets

import pytest

from bridge.config.model import Config
from bridge.http.app import build_app


@pytest.mark.parametrize(("max_age", "expected"), [(0.0, None), (60.0, 60.0)])
def test_history_max_age_zero_means_no_limit(max_age: float, expected: float | None) -> None:
    # docs/configuration.md: "0: no limit"; the app once crashed building the route for it.
    config = Config.model_validate({"auth": {"jwt_secret": secrets.token_urlsafe(32)},
                                    "broker": {"history_max_age": max_age}})
    app = build_app(config)
    assert app.ws is not None
    assert app.ws.route.cfg.history_max_age == expected
