"""ePacific (ccall.vn): CDR and registered-extension polling, CDR lookup by call id.

See docs/providers/epacific.md.
"""

from __future__ import annotations

from typing import Any

from bridge.config.providers import EPacificAccount
from bridge.providers.base import ProviderContext
from bridge.providers.epacific.provider import EPacificProvider

__all__ = ["EPacificProvider", "create"]


def create(account: EPacificAccount, context: ProviderContext, **extra: Any) -> EPacificProvider:
    """The provider of one ``[[epacific]]`` block; unknown ``extra`` is ignored."""
    return EPacificProvider(account, context, settle=account.settle_window)
