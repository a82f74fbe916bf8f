"""Quickom: signed call webhooks, ``call/new`` backfill, call detail and recordings.

The service calls :func:`create` once per ``[[quickom]]`` block.
"""

from __future__ import annotations

from typing import Any

from bridge.config.providers import QuickomAccount
from bridge.providers.base import ProviderContext
from bridge.providers.quickom import api
from bridge.providers.quickom.provider import QuickomProvider

__all__ = ["QuickomProvider", "create"]


def create(account: QuickomAccount, context: ProviderContext, **extra: Any) -> QuickomProvider:
    """The provider of one ``[[quickom]]`` block, serving its webhook and API routes; unknown
    ``extra`` is ignored."""
    return QuickomProvider(account, context, routes=api.ROUTES)
