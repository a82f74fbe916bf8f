"""``callbridge admin``: the ``/admin`` API of a running instance from the command line.

The token comes from ``--token``, else ``CALLBRIDGE_ADMIN_TOKEN``, else it is minted (admin
scope, five minutes) with ``[auth] jwt_secret`` of ``--config`` (and its environment
overrides). The URL comes from ``--url``, else ``CALLBRIDGE_ADMIN_URL``, else ``[server]`` of
``--config``, else ``http://127.0.0.1:8080``. Output is a table, or the JSON answer with
``--json``. Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import orjson

from bridge.auth.tokens import mint_api
from bridge.config.load import ConfigError, load_config

TOKEN_ENV = "CALLBRIDGE_ADMIN_TOKEN"
URL_ENV = "CALLBRIDGE_ADMIN_URL"
DEFAULT_URL = "http://127.0.0.1:8080"
#: Lifetime of a token minted from --config.
MINTED_TTL = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the instance's base URL (or {URL_ENV}; default: "
                        f"[server] of --config, else {DEFAULT_URL})")
    parser.add_argument("--token", help=f"an API token with the admin scope (or {TOKEN_ENV})")
    parser.add_argument("--config", metavar="FILE.toml",
                        help="mint a short-lived admin token with this file's [auth] jwt_secret")
    parser.add_argument("--json", action="store_true", help="print the JSON answer")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION",
                                    help="what to do; ACTION --help tells more")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help, formatter_class=parser.formatter_class)
        return sub

    action("streams", "list the upstream streams and providers")
    reconnect = action("reconnect", "force one stream to reconnect")
    reconnect.add_argument("name", help="stream name, as listed by streams, e.g. "
                           "antbuddy/acme/acct-1")
    clients = action("clients", "list the websocket clients (of this instance, or --all)")
    clients.add_argument("--channel", help="only the clients of this channel, e.g. "
                         "calls:acme:1001")
    clients.add_argument("--limit", type=int, default=1000,
                         help="list at most this many (per instance with --all)")
    clients.add_argument("--all", action="store_true",
                         help="the clients of every instance on the same Redis, not only of "
                              "the one that takes the request")
    disconnect = action("disconnect", "close one client's connection (4010)")
    disconnect.add_argument("session", help="the session id, as listed by clients")
    revoke = action("revoke", "revoke a client token on every instance")
    revoke.add_argument("jti", help="the token id (its jti claim): callbridge token prints it "
                        "on stderr (jti=...) or in --json; clients lists it in the JTI column")
    revoke.add_argument("--expires-at", type=float, metavar="UNIX_TIME",
                        help="keep it refused until then (default: chosen by the server)")
    action("reload", "re-read the configuration file's account blocks")


def main(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        base, token = _target(args)
    except _Usage as exc:
        print(f"callbridge admin: {exc}", file=err)
        return 2
    method, path, params, body = _request(args)
    try:
        with httpx.Client(base_url=base, timeout=args.timeout, trust_env=False) as http:
            response = http.request(method, path, params=params, json=body,
                                    headers={"authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        print(f"callbridge admin: {base} did not answer: {type(exc).__name__}", file=err)
        return 1
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400 or not isinstance(data, dict):
        error = data.get("error", {}) if isinstance(data, dict) else {}
        print(f"callbridge admin: {response.status_code} {error.get('code', 'error')}: "
              f"{error.get('message', response.reason_phrase)}", file=err)
        return 1
    if args.json:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(_render(args.action, data))
    return 0


class _Usage(Exception):
    pass


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """The base URL and the token, from the arguments, the environment or --config."""
    config = None
    if args.config is not None or not (args.token or os.environ.get(TOKEN_ENV)):
        if args.config is None:
            raise _Usage(f"no token: pass --token, set {TOKEN_ENV}, or pass --config to mint "
                         "one")
        try:
            config = load_config(args.config, os.environ)
        except ConfigError as exc:
            raise _Usage(f"configuration error:\n{exc}") from None
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        assert config is not None
        token = mint_api(config.auth.jwt_secret.get_secret_value(), sub="callbridge-admin-cli",
                         scopes=["admin"], ttl=MINTED_TTL)
    url = args.url or os.environ.get(URL_ENV)
    if not url and config is not None:
        host = config.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{config.server.port}"
    return (url or DEFAULT_URL).rstrip("/"), token


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any], Any]:
    action = args.action
    if action == "streams":
        return "GET", "/admin/streams", {}, None
    if action == "reconnect":
        # Slashes stay (the route takes the rest of the path); anything else is encoded.
        return "POST", f"/admin/streams/{quote(args.name, safe='/')}/reconnect", {}, None
    if action == "clients":
        params: dict[str, Any] = {"limit": args.limit}
        if args.channel:
            params["channel"] = args.channel
        if args.all:
            params["instances"] = "all"
        return "GET", "/admin/clients", params, None
    if action == "disconnect":
        return "POST", f"/admin/clients/{quote(args.session, safe='')}/disconnect", {}, None
    if action == "revoke":
        body = {"expires_at": args.expires_at} if args.expires_at is not None else None
        return "POST", f"/admin/tokens/{quote(args.jti, safe='')}/revoke", {}, body
    return "POST", "/admin/reload", {}, None


# -- output -------------------------------------------------------------------------------------

CLIENT_COLUMNS = ["SESSION", "SUB", "JTI", "REMOTE", "CONNECTED", "CHANNELS"]


def _client_row(c: dict[str, Any]) -> list[Any]:
    return [c["session"], c["sub"], c["jti"] or "-", c["remote"] or "-",
            _ago(c["connected_since"]), " ".join(c["channels"]) or "-"]


def _render(action: str, data: dict[str, Any]) -> str:
    if action == "streams":
        rows = [[s["name"], s["state"], _ago(s["since"]), s["reconnects"], s["rotations"],
                 _at(s["token_expires_at"]), s["lease"]["state"], s["lease"]["held_by"] or "-"]
                for s in data["streams"]]
        text = _table(["STREAM", "STATE", "SINCE", "RECONNECTS", "ROTATIONS", "TOKEN EXPIRES",
                       "LEASE", "HOLDER"], rows)
        providers = [[p["name"], "ok" if p.get("ok") else "failing",
                      p.get("last_error") or ""] for p in data["providers"]]
        if providers:
            text += "\n" + _table(["PROVIDER", "STATUS", "LAST ERROR"], providers)
        return f"instance {data['instance_id']}\n" + text
    if action == "clients" and "instances" in data:
        rows = [[listing["instance_id"], *_client_row(c)]
                for listing in data["instances"] for c in listing["clients"]]
        head = f"{data['total']} client(s) on {len(data['instances'])} instance(s)"
        if len(rows) < data["total"]:
            head += f", {len(rows)} shown"
        if data["answered"] < data["asked"]:
            head += f"; {data['asked'] - data['answered']} instance(s) did not answer"
        return head + "\n" + _table(["INSTANCE", *CLIENT_COLUMNS], rows)
    if action == "clients":
        rows = [_client_row(c) for c in data["clients"]]
        shown = len(rows)
        head = f"instance {data['instance_id']}: {data['total']} client(s)"
        if shown < data["total"]:
            head += f", {shown} shown"
        return head + "\n" + _table(CLIENT_COLUMNS, rows)
    if action == "reconnect":
        return f"{data['name']}: reconnecting\n"
    if action == "disconnect":
        return f"{data['session']}: closed with {data['code']}\n"
    if action == "revoke":
        return f"{data['jti']}: revoked until {_at(data['revoked_until'])} ({data['basis']})\n"
    lines = [f"instance {data['instance_id']}: reloaded"]
    for section, change in data["accounts"].items():
        for kind in ("added", "removed", "changed", "unchanged"):
            for name in change[kind]:
                lines.append(f"  {kind:<9} {name}")
    if data["restart_needed"]:
        lines.append("restart needed to apply: " +
                     " ".join(f"[{s}]" for s in data["restart_needed"]))
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n"
                   for row in cells)


def _at(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, int(time.time() - ts))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"
