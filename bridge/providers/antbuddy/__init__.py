"""AntBuddy's REST side (oapi): click-to-call, call history gap filling, recording URLs.

Built once per ``[[antbuddy]]`` block by :func:`create`. Documented in
docs/providers/antbuddy-rest.md.
"""

from __future__ import annotations

from typing import Any, Iterable

from bridge.providers.antbuddy import api
from bridge.providers.antbuddy.provider import AntBuddyRest
from bridge.providers.base import ProviderContext

__all__ = ["AntBuddyRest", "create", "join"]


def create(account: Any, context: ProviderContext, *, streams: Iterable[Any] = (),
           peers: list[Any] | None = None, **options: Any) -> AntBuddyRest:
    """The REST side of one account. ``streams``: the service's upstream streams; the one of
    this tenant and account is watched for outages. ``peers``: the AntBuddy providers built
    before this one in the same service; the first of a tenant serves the API routes
    (:data:`.api.ROUTES`) for every account of that tenant, so no path is declared twice.
    Keyword ``options`` the provider knows (``poll_interval``, ``margin``, ``fill_delay``,
    ``retries``, ``date_format``) are applied, others ignored."""
    stream = next((s for s in streams if s.settings.tenant == account.tenant
                   and s.settings.account_id == account.account_id), None)
    known = {"poll_interval", "margin", "fill_delay", "retries", "date_format", "clock"}
    provider = AntBuddyRest(account, context, stream=stream, routes=api.ROUTES,
                            **{k: v for k, v in options.items() if k in known})
    if stream is not None:
        _listen(stream, provider.ledger.note)
    if peers is None:
        provider.directory, provider.endpoints_owner = [provider], True
    else:
        join(provider, peers)
    return provider


def join(provider: AntBuddyRest, peers: list[Any]) -> None:
    """Make ``provider`` one of ``peers`` (built or kept before it; a reload re-links kept
    providers this way): it serves its tenant's routes when it is the tenant's first."""
    provider.endpoints_owner = not any(p.tenant == provider.tenant for p in peers)
    # The registry appends each provider to ``peers`` once built; pickers see the whole list.
    provider.directory = peers


def _listen(stream: Any, listener: Any) -> None:
    """Let ``listener(name, payload)`` see every live call event of ``stream`` too."""
    stream.add_call_listener(listener)
