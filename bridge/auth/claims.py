"""What a token of the identity provider grants, read from its claims: pure code.

Tokens minted by ``callbridge token`` name their channels, scopes and tenants in fixed claims.
An identity provider's tokens name them in claims of its own choosing (``channels_claim``,
``scopes_claim``, ``tenants_claim``), or grant them through roles: each role listed in the
``roles_claim`` grants what ``[auth.roles]`` configures for it. A claim may be a list of strings
or one space-separated string (as OAuth's ``scope`` is); roles nobody configured grant nothing,
and scopes callbridge does not know (``openid``, ``profile``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from bridge.config.model import API_SCOPES, AuthConfig, RoleConfig
from bridge.events.channels import is_valid_pattern


class ClaimError(ValueError):
    """A claim callbridge reads is neither a list of strings nor a string."""


@dataclass(frozen=True)
class ClaimMap:
    channels_claim: str = "channels"
    scopes_claim: str = "scopes"
    tenants_claim: str = "tenants"
    roles_claim: str = ""
    roles: Mapping[str, RoleConfig] | None = None

    @classmethod
    def from_config(cls, auth: AuthConfig) -> ClaimMap:
        return cls(auth.channels_claim, auth.scopes_claim, auth.tenants_claim,
                   auth.roles_claim, dict(auth.roles))

    def channels(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """The channel patterns granted (valid ones only; the caller refuses none at all)."""
        found = _strings(claims, self.channels_claim)
        found += [c for role in self._roles(claims) for c in role.channels]
        return _unique(p for p in found if is_valid_pattern(p))

    def scopes(self, claims: Mapping[str, Any]) -> frozenset[str]:
        found = _strings(claims, self.scopes_claim)
        found += [s for role in self._roles(claims) for s in role.scopes]
        return frozenset(found) & frozenset(API_SCOPES)

    def tenants(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        """The tenant patterns granted; none when neither the claim nor a role names one."""
        found = _strings(claims, self.tenants_claim)
        found += [t for role in self._roles(claims) for t in role.tenants]
        return _unique(t for t in found if is_valid_pattern(t))

    def _roles(self, claims: Mapping[str, Any]) -> list[RoleConfig]:
        if not self.roles_claim or not self.roles:
            return []
        return [self.roles[r] for r in _strings(claims, self.roles_claim) if r in self.roles]


def _strings(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ClaimError(f"claim {name!r} must be a list of strings or a string")


def _unique(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
