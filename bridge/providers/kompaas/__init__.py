"""Kompaas: verification (flash) calls and their outcome webhook (docs/providers/kompaas.md)."""

from __future__ import annotations

from typing import Any

from bridge.config.providers import KompaasAccount
from bridge.providers.base import ProviderContext
from bridge.providers.kompaas.provider import KompaasProvider

__all__ = ["KompaasProvider", "create"]

def create(account: KompaasAccount, context: ProviderContext, **extra: Any) -> KompaasProvider:
    """The provider of one ``[[kompaas]]`` block; unknown ``extra`` is ignored."""
    return KompaasProvider(account, context)
