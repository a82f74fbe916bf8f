"""Build the configured providers. Each provider package exposes ``create(account, context)``."""

from __future__ import annotations

import importlib
from typing import Any

from bridge.providers.base import Provider, ProviderContext

#: config section -> package; AntBuddy's REST side is built per [[antbuddy]] block.
PACKAGES = {
    "quickom": "bridge.providers.quickom",
    "epacific": "bridge.providers.epacific",
    "kompaas": "bridge.providers.kompaas",
    "antbuddy": "bridge.providers.antbuddy",
}


def build_providers(config: Any, context: ProviderContext, **extra: Any) -> list[Provider]:
    """One provider per configured account block, in configuration order.

    ``extra`` is passed to packages whose ``create`` accepts it (AntBuddy's gets the upstream
    streams, to fill outage gaps from call history).
    """
    providers: list[Provider] = []
    for section, package in PACKAGES.items():
        accounts = getattr(config, section, [])
        if not accounts:
            continue
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError as exc:
            if exc.name == package:
                continue  # not built yet in this release
            raise
        for account in accounts:
            providers.append(module.create(account, context, **extra))
    return providers
