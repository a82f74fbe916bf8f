"""``callbridge token`` and ``callbridge api-token``: mint tokens with the configured secret.

The token alone goes to stdout, so ``$(callbridge token ...)`` captures it; what it holds (its
jti, which ``callbridge admin revoke`` takes, subject, grants and expiry) goes to stderr as one
line, or with the token as one JSON object on stdout with ``--json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from bridge.cli import common

_NO_SECRET = ("callbridge {command}: auth.jwt_secret is not set: this configuration checks only "
              "the identity provider's tokens (public_keys, jwks_url), and callbridge signs its "
              "own with jwt_secret; set it in [auth] or in CALLBRIDGE__AUTH__JWT_SECRET")
_SECRET_HELP = "read auth.jwt_secret from here (or from CALLBRIDGE__AUTH__JWT_SECRET)"
_JSON_HELP = "print one JSON object (the token, its jti, subject, grants, expires_at) on stdout"
_TTL_HELP = "seconds until it expires"


def register(commands: common.Commands) -> None:
    token = common.add_command(
        commands, "token", "mint a client token for /ws (its jti, for admin revoke, on stderr)")
    token.add_argument("--sub", required=True, help="who the token is for, e.g. crm-1")
    token.add_argument("--channels", nargs="+", required=True, metavar="PATTERN",
                       help="channel patterns the token grants: calls:acme (the tenant's "
                       "calls), calls:acme:1001 (one extension), calls:acme:* (every "
                       "extension), system:acme, presence:acme, verifications:acme")
    token.add_argument("--ttl", type=float, default=3600.0, help=_TTL_HELP)
    token.add_argument("--config", metavar="FILE.toml", help=_SECRET_HELP)
    token.add_argument("--json", action="store_true", help=_JSON_HELP)
    token.set_defaults(run=run_token)

    api = common.add_command(
        commands, "api-token", "mint a token for the HTTP API (its jti on stderr)")
    api.add_argument("--sub", required=True, help="who the token is for, e.g. crm-backend")
    api.add_argument("--scopes", nargs="+", required=True, metavar="SCOPE",
                     help="what it may do: calls:read, calls:dial, verifications:write, admin")
    api.add_argument("--tenants", nargs="+", default=["*"], metavar="PATTERN",
                     help="tenants it may act for (patterns; *: all)")
    api.add_argument("--ttl", type=float, default=3600.0, help=_TTL_HELP)
    api.add_argument("--config", metavar="FILE.toml", help=_SECRET_HELP)
    api.add_argument("--json", action="store_true", help=_JSON_HELP)
    api.set_defaults(run=run_api_token)


def _signing_secret(command: str, args: argparse.Namespace) -> str | None:
    """``[auth] jwt_secret``, once ``--ttl`` and the configuration are found right; None (the
    problem printed) otherwise."""
    if not args.ttl > 0:
        print(f"callbridge {command}: --ttl must be a positive number of seconds, not "
              f"{args.ttl:g}", file=sys.stderr)
        return None
    secret = common.load(args.config).auth.jwt_secret.get_secret_value()
    if not secret:
        print(_NO_SECRET.format(command=command), file=sys.stderr)
        return None
    return secret


def run_token(args: argparse.Namespace) -> int:
    from bridge.auth.tokens import mint
    from bridge.events.channels import pattern_problem, pattern_warnings

    for pattern in args.channels:
        problem = pattern_problem(pattern)
        if problem is not None:
            print(f"callbridge token: channel pattern {pattern!r} refused: {problem}",
                  file=sys.stderr)
            return common.EXIT_CONFIG
    for pattern in args.channels:
        for warning in pattern_warnings(pattern):
            print(f"callbridge token: warning: channel pattern {pattern!r}: {warning}",
                  file=sys.stderr)
    secret = _signing_secret("token", args)
    if secret is None:
        return common.EXIT_CONFIG
    try:
        token = mint(secret, sub=args.sub, channels=args.channels, ttl=args.ttl)
    except ValueError as exc:
        print(f"callbridge token: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    claims = _claims(token)
    _report(token, args.json, {
        "token": token, "jti": claims["jti"], "sub": claims["sub"],
        "channels": claims["channels"], "expires_at": _iso(claims["exp"])},
        hint=f" (to revoke it: callbridge admin revoke {claims['jti']})")
    return common.EXIT_OK


def run_api_token(args: argparse.Namespace) -> int:
    from bridge.auth.tokens import SCOPES, mint_api

    unknown = sorted(set(args.scopes) - SCOPES)
    if unknown:
        print(f"callbridge api-token: unknown scope(s) {', '.join(unknown)}: scopes are "
              f"{', '.join(sorted(SCOPES))}", file=sys.stderr)
        return common.EXIT_CONFIG
    secret = _signing_secret("api-token", args)
    if secret is None:
        return common.EXIT_CONFIG
    try:
        token = mint_api(secret, sub=args.sub, scopes=args.scopes, tenants=args.tenants,
                         ttl=args.ttl)
    except ValueError as exc:
        print(f"callbridge api-token: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    claims = _claims(token)
    _report(token, args.json, {
        "token": token, "jti": claims["jti"], "sub": claims["sub"],
        "scopes": claims["scopes"], "tenants": claims["tenants"],
        "expires_at": _iso(claims["exp"])})
    return common.EXIT_OK


def _claims(token: str) -> dict[str, Any]:
    """The claims of a token just minted here (its signature is ours)."""
    import jwt

    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _iso(exp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))


def _report(token: str, as_json: bool, fields: dict[str, Any], hint: str = "") -> None:
    """The token on stdout and a summary line on stderr, or all of it as JSON on stdout."""
    if as_json:
        print(orjson.dumps(fields).decode(), flush=True)
        return
    print(token, flush=True)
    summary = " ".join(f"{name}={','.join(value) if isinstance(value, list) else value}"
                       for name, value in fields.items() if name != "token")
    print(summary + hint, file=sys.stderr)
