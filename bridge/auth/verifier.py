"""Which key checks a token, and what the token grants.

A token whose header says HS256 is one of callbridge's own: it is checked with ``jwt_secret``
alone, exactly as :func:`~bridge.auth.tokens.verify` and :func:`~bridge.auth.tokens.verify_api`
always did. A token whose header says RS256, ES256 or EdDSA is the identity provider's: it is
checked with the JWKS key of its ``kid``, or else with the configured keys (which have no
``kid``) of its algorithm, and only with a key pinned to that algorithm; its ``iss`` and ``aud``
are checked when configured, and its grants are read by :class:`~bridge.auth.claims.ClaimMap`.
Any other algorithm, ``none`` included, is refused.

The checks read the local copy of the keys and do no I/O. The ``*_async`` forms add one thing:
a ``kid`` the copy lacks makes the JWKS be fetched again (rate-limited, bounded in time) before
the token is refused: ``unavailable`` (retry later) while the JWKS cannot be fetched,
``unknown_key`` when it was fetched and the key is not in it.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import jwt

from bridge.auth.claims import ClaimError, ClaimMap
from bridge.auth.jwks import Jwks
from bridge.auth.keys import PublicKey, configured
from bridge.auth.tokens import (
    ALGORITHM,
    AUDIENCE,
    AuthError,
    Grant,
    Principal,
    Verified,
    decode,
    verify,
    verify_api,
)
from bridge.config.model import PUBLIC_KEY_ALGORITHMS, AuthConfig

#: The name of the :class:`Verifier` in the app's lifespan state (``scope["state"]``).
STATE_KEY = "verifier"


class Verifier:
    def __init__(self, *, secret: str = "", keys: Sequence[PublicKey] = (),
                 jwks: Jwks | None = None, claims: ClaimMap | None = None, issuer: str = "",
                 audience: str = "", api_audience: str = AUDIENCE, leeway: float = 5.0) -> None:
        """``secret``: callbridge's HS256 key (empty: HS256 tokens are refused); ``keys`` and
        ``jwks``: the identity provider's; ``issuer`` and ``audience`` (of ``/ws`` tokens):
        empty, not checked, resp. no ``aud`` allowed; ``api_audience``: of its API tokens."""
        self.secret = secret
        self.keys = tuple(keys)
        self.jwks = jwks
        self.claims = claims or ClaimMap()
        self.issuer = issuer or None
        self.audience = audience or None
        self.api_audience = api_audience
        self.leeway = leeway

    @classmethod
    def from_config(cls, auth: AuthConfig, jwks: Jwks | None = None) -> Verifier:
        return cls(secret=auth.jwt_secret.get_secret_value(), keys=configured(auth.public_keys),
                   jwks=jwks, claims=ClaimMap.from_config(auth), issuer=auth.issuer,
                   audience=auth.audience, api_audience=auth.api_audience, leeway=auth.leeway)

    # -- client tokens (/ws) -------------------------------------------------------------------

    def client(self, token: str, *, now: float | None = None) -> Grant:
        """The :class:`Grant` of a ``/ws`` token, or :class:`AuthError`."""
        alg = _algorithm(token)
        if alg == ALGORITHM:
            return verify(self._hs256(), token, leeway=self.leeway, now=now)
        verified = self._public(token, alg, self.audience, now)
        try:
            channels = self.claims.channels(verified.claims)
        except ClaimError as exc:
            raise AuthError("invalid_claims", str(exc)) from None
        if not channels:
            raise AuthError("invalid_claims", "the token grants no channel")
        return Grant(sub=verified.sub, channels=channels, expires_at=verified.exp,
                     token_id=verified.jti)

    async def client_async(self, token: str) -> Grant:
        """:meth:`client`, fetching the JWKS again first when the token's ``kid`` is unknown."""
        try:
            return self.client(token)
        except AuthError as exc:
            if not await self._refreshed(exc):
                raise
        return self.client(token)

    # -- API tokens ----------------------------------------------------------------------------

    def api(self, authorization: str | None, *, now: float | None = None) -> Principal:
        """The :class:`Principal` of an ``Authorization: Bearer <token>`` value, or
        :class:`AuthError` (``missing`` when there is no bearer token at all)."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing", "no bearer token")
        alg = _algorithm(token)
        if alg == ALGORITHM:
            return verify_api(self._hs256(), authorization, leeway=self.leeway, now=now)
        verified = self._public(token, alg, self.api_audience, now)
        try:
            scopes, tenants = self.claims.scopes(verified.claims), \
                self.claims.tenants(verified.claims)
        except ClaimError as exc:
            raise AuthError("malformed_claims", str(exc)) from None
        return Principal(sub=verified.sub, scopes=scopes, tenants=tenants)

    async def api_async(self, authorization: str | None) -> Principal:
        """:meth:`api`, fetching the JWKS again first when the token's ``kid`` is unknown."""
        try:
            return self.api(authorization)
        except AuthError as exc:
            if not await self._refreshed(exc):
                raise
        return self.api(authorization)

    # -- keys ----------------------------------------------------------------------------------

    def _hs256(self) -> str:
        if not self.secret:
            raise AuthError("bad_signature", "HS256 tokens are not accepted (no jwt_secret)")
        return self.secret

    def _public(self, token: str, alg: str, audience: str | None,
                now: float | None) -> Verified:
        if alg not in PUBLIC_KEY_ALGORITHMS:
            raise AuthError("bad_signature", "token algorithm is not accepted")
        kid = jwt.get_unverified_header(token).get("kid")
        known = [*self.keys, *(self.jwks.keys if self.jwks is not None else ())]
        named = [k for k in known if kid is not None and k.kid == kid]
        if named and all(k.alg != alg for k in named):
            raise AuthError("bad_signature", "token algorithm is not the algorithm of its key")
        # The keys of its kid; else those without one (a configured PEM), by algorithm.
        candidates = [k for k in (named or [k for k in known if not k.kid]) if k.alg == alg]
        refused: AuthError | None = None
        for key in candidates:
            try:
                verified = decode(token, key.key, key.alg, audience=audience,
                                  issuer=self.issuer)
            except AuthError as exc:
                if exc.reason != "bad_signature":
                    raise
                refused = exc
                continue
            verified.check_times(time.time() if now is None else now, self.leeway)
            return verified
        if refused is not None and (named or kid is None):
            raise refused
        raise self._missing()

    def _missing(self) -> AuthError:
        jwks = self.jwks
        if jwks is not None and (jwks.failing or not jwks.fetched):
            return AuthError("unavailable", "the identity provider's keys cannot be fetched; "
                             "retry later")
        return AuthError("unknown_key", "no key for this token")

    async def _refreshed(self, exc: AuthError) -> bool:
        """Whether ``exc`` was a missing key and the JWKS was asked again (the caller retries)."""
        if self.jwks is None or exc.reason not in ("unknown_key", "unavailable"):
            return False
        await self.jwks.refresh_unknown()
        return True


def from_scope(scope: Mapping[str, Any], secret: str, leeway: float) -> Verifier:
    """The app's :class:`Verifier` from a request's or connection's lifespan state; without
    one (a route served outside :func:`bridge.http.app.build_app`), one for callbridge's own
    HS256 tokens only."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return found if isinstance(found, Verifier) else Verifier(secret=secret, leeway=leeway)


def _algorithm(token: str) -> str:
    if not isinstance(token, str) or token.count(".") != 2:
        raise AuthError("malformed", "token is not a compact JWT")
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise AuthError("malformed", "token header is not decodable") from None
    if not isinstance(alg, str):
        raise AuthError("malformed", "token header names no algorithm")
    return alg
