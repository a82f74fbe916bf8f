"""AntBuddy's REST side (oapi): click-to-call, call history gap filling, recording URLs.

Built once per ``[[antbuddy]]`` block by :func:`create`. Documented in
docs/providers/antbuddy-rest.md.
"""

from __future__ import annotations

from typing import Any, Iterable

from bridge.providers.antbuddy.provider import AntBuddyRest
from bridge.providers.base import ProviderContext

__all__ = ["AntBuddyRest", "create"]

def create(account: Any, context: ProviderContext, *, streams: Iterable[Any] = (),
           peers: list[Any] | None = None, **options: Any) -> AntBuddyRest:
    """The REST side of one account. ``streams``: the service's upstream streams; the one of
    this tenant and account is watched for outages. ``peers``: the AntBuddy providers built
    before this one in the same service; the first of a tenant serves the API routes for every
    account of that tenant, so no path is declared twice. Keyword ``options`` the provider knows
    (``poll_interval``, ``margin``, ``fill_delay``, ``retries``, ``date_format``) are applied,
    others ignored."""
    stream = next((s for s in streams if s.settings.tenant == account.tenant
                   and s.settings.account_id == account.account_id), None)
    known = {"poll_interval", "margin", "fill_delay", "retries", "date_format", "clock"}
    provider = AntBuddyRest(account, context, stream=stream,
                            **{k: v for k, v in options.items() if k in known})
    if stream is not None:
        _listen(stream, provider.ledger.note)
    directory = peers if peers is not None else []
    provider.endpoints_owner = not any(p.tenant == account.tenant for p in directory)
    # The registry appends each provider to ``peers`` once built; pickers see the whole list.
    provider.directory = directory if peers is not None else [provider]
    return provider


def _listen(stream: Any, listener: Any) -> None:
    """Let ``listener(name, payload)`` see every live call event of ``stream`` too."""
    stream.add_call_listener(listener)
