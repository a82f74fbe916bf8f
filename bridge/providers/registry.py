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
    return rebuild_providers(config, context, [], **extra)


def rebuild_providers(config: Any, context: ProviderContext, current: list[Provider],
                      **extra: Any) -> list[Provider]:
    """The providers of ``config``, in configuration order, for a reload.

    A provider of ``current`` whose configuration block is unchanged (equal, secrets included)
    is kept: the same object, still running, re-linked to its new peers through its package's
    ``join(provider, peers)`` when the package has one. Every other block gets a new provider
    (not started). Providers of ``current`` left out of the result are the caller's to stop.
    """
    providers: list[Provider] = []
    pool = list(current)
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
            index = next((i for i, p in enumerate(pool)
                          if getattr(p, "account", None) == account), None)
            if index is None:
                provider = module.create(account, context, peers=peers, **extra)
            else:
                provider = pool.pop(index)
                join = getattr(module, "join", None)
                if join is not None:
                    join(provider, peers)
            peers.append(provider)
            providers.append(provider)
    return providers
