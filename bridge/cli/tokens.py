"""``callbridge token`` and ``callbridge api-token``: mint tokens with the configured secret."""

from __future__ import annotations

import argparse
import sys

from bridge.cli import common

_SECRET_HELP = "read auth.jwt_secret from here (or from CALLBRIDGE__AUTH__JWT_SECRET)"


def register(commands: common.Commands) -> None:
    token = common.add_command(commands, "token", "mint a client token for /ws")
    token.add_argument("--sub", required=True, help="who the token is for")
    token.add_argument("--channels", nargs="+", required=True, metavar="PATTERN",
                       help="channel patterns the token grants, e.g. 'calls:acme:*'")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    token.add_argument("--config", metavar="FILE.toml", help=_SECRET_HELP)
    token.set_defaults(run=run_token)

    api = common.add_command(commands, "api-token", "mint a token for the HTTP API")
    api.add_argument("--sub", required=True, help="who the token is for")
    api.add_argument("--scopes", nargs="+", required=True,
                     help="calls:read, calls:dial, verifications:write, admin")
    api.add_argument("--tenants", nargs="+", default=["*"], metavar="PATTERN",
                     help="tenants it may act for (patterns; *: all)")
    api.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    api.add_argument("--config", metavar="FILE.toml", help=_SECRET_HELP)
    api.set_defaults(run=run_api_token)


def run_token(args: argparse.Namespace) -> int:
    from bridge.auth.tokens import mint
    from bridge.events.channels import is_valid_pattern

    bad = [p for p in args.channels if not is_valid_pattern(p)]
    if bad:
        print(f"callbridge token: invalid channel pattern(s): {', '.join(bad)}", file=sys.stderr)
        return common.EXIT_CONFIG
    config = common.load(args.config)
    print(mint(config.auth.jwt_secret.get_secret_value(), sub=args.sub,
               channels=args.channels, ttl=args.ttl))
    return common.EXIT_OK


def run_api_token(args: argparse.Namespace) -> int:
    from bridge.auth.tokens import mint_api

    config = common.load(args.config)
    try:
        token = mint_api(config.auth.jwt_secret.get_secret_value(), sub=args.sub,
                         scopes=args.scopes, tenants=args.tenants, ttl=args.ttl)
    except ValueError as exc:
        print(f"callbridge api-token: {exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    print(token)
    return common.EXIT_OK
