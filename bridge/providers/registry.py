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

    ``extra`` is passed to every ``create`` (AntBuddy's uses the upstream streams, to fill
    outage gaps from call history), with ``peers``: the list of providers already built from the
    same section, which a provider may keep (one tenant with several AntBuddy accounts serves them
    all from one set of routes).
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
        peers: list[Provider] = []
        for account in accounts:
            provider = module.create(account, context, peers=peers, **extra)
            peers.append(provider)
            providers.append(provider)
    return providers
