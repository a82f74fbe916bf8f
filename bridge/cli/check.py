"""``callbridge check``: read a configuration as ``serve`` would and say what would run.

With ``--online`` it also reaches what the configuration depends on (Redis, each provider
block's credentials; :mod:`bridge.core.preflight`). Nothing secret is shown: a secret is only
said to be set, the broker URL's password is masked, and which keys came from the
environment is told by variable name.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any
from urllib.parse import urlsplit

import orjson

from bridge.cli import common
from bridge.common import logs
from bridge.config.load import ConfigError, load_config_with_origins
from bridge.config.model import Config, safe_url
from bridge.core import preflight

_PLACEHOLDER = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def register(commands: common.Commands) -> None:
    check = common.add_command(
        commands, "check", "read a configuration as serve would, show what would run (no "
        "secret shown) and, with --online, reach Redis and try each provider's credentials")
    check.add_argument("--config", metavar="FILE.toml",
                       help="configuration file; CALLBRIDGE__SECTION__KEY environment "
                            "variables override it, as for serve")
    check.add_argument("--online", action="store_true",
                       help="also reach Redis and each provider block's API (exit status 4 "
                            "when one fails)")
    check.add_argument("--timeout", type=float, default=preflight.TIMEOUT, metavar="SECONDS",
                       help="time each online probe may take")
    check.add_argument("--json", action="store_true",
                       help="print one JSON object (summary and probe results) instead of text")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> Any:
    if args.timeout <= 0:
        print(f"callbridge: --timeout must be more than 0 seconds, got {args.timeout:g}",
              file=sys.stderr)
        return common.EXIT_CONFIG
    return check(args.config, online=args.online, as_json=args.json, timeout=args.timeout,
                 debug=args.debug)


async def check(path: str | None, *, online: bool = False, as_json: bool = False,
                timeout: float = preflight.TIMEOUT, debug: bool = False) -> int:
    """The whole command: load, summarise, probe when ``online``; the exit status."""
    logs.setup("DEBUG" if debug else "CRITICAL", json=False)
    try:
        config, from_env = load_config_with_origins(path, os.environ)
    except ConfigError as exc:
        if as_json:
            print(orjson.dumps({"config": path, "valid": False, "ok": False,
                                "errors": exc.problems}).decode())
        print(f"callbridge: configuration error:\n{exc}", file=sys.stderr)
        return common.EXIT_CONFIG
    report: dict[str, Any] = {"config": path, "valid": True, **summary(config),
                              "from_environment": [{"key": key, "variable": var}
                                                   for key, var in sorted(from_env.items())]}
    probes = await preflight.probe_all(config, timeout=timeout) if online else []
    failed = [p for p in probes if p.failed]
    if online:
        report["probes"] = [p.as_dict() for p in probes]
    report["ok"] = not failed
    if as_json:
        print(orjson.dumps(report).decode(), flush=True)
    else:
        print(render(report, path, probes, online=online), flush=True)
    return common.EXIT_UNAVAILABLE if failed else common.EXIT_OK


def summary(config: Config) -> dict[str, Any]:
    """What would run, as a JSON-ready dict with no secret in it."""
    server, broker = config.server, config.broker
    scheme = broker.url.partition("://")[0]
    providers = [{"name": label, **_block(section, block)}
                 for section, label, block in preflight.labels(config)]
    webhooks = [{"name": f"webhook[{t.name}]", "host": urlsplit(t.url).hostname,
                 "channels": len(t.channels), "secrets": len(t.secrets)}
                for t in config.webhook]
    return {
        "server": {"listen": f"{server.host}:{server.port}", "workers": server.workers,
                   "board": server.board, "admin": True},
        "broker": {"kind": scheme, "url": broker.safe_url, "prefix": broker.prefix},
        "auth": {"jwt_secret": "set"},
        "providers": providers,
        "webhooks": webhooks,
    }


def _block(section: str, block: Any) -> dict[str, Any]:
    if section == "antbuddy":
        return {"account": block.account_id, "app_id": block.app_id,
                "oapi_url": safe_url(block.oapi_url), "ws_url": safe_url(block.ws_url),
                "dialect": block.dialect, "bindings": len(block.bindings),
                "sip_user": block.sip_user, "raw_payload": block.raw_payload}
    out: dict[str, Any] = {"api_url": safe_url(block.api_url)}
    if section == "quickom":
        out["backfill_interval"] = block.backfill_interval
        out["webhook"] = f"/webhooks/quickom/{block.tenant}"
    elif section == "epacific":
        out["poll_interval"] = block.poll_interval
        out["presence_interval"] = block.presence_interval
        out["timezone"] = block.timezone
    elif section == "kompaas":
        out["webhook"] = f"/webhooks/kompaas/{block.tenant}"
    return out


def render(report: dict[str, Any], path: str | None, probes: list[preflight.Probe], *,
           online: bool) -> str:
    """The report as text, one line per item."""
    server, broker = report["server"], report["broker"]
    lines = [f"{path or '(no file)'}: configuration valid; serve would run:",
             f"  listen    {server['listen']}   board {'on' if server['board'] else 'off'}   "
             f"workers {server['workers']}   "
             "admin API on (/admin, API tokens with the admin scope)",
             f"  broker    {broker['url']}   prefix {broker['prefix']!r}",
             "  auth      jwt_secret set"]
    for block in report["providers"]:
        details = ", ".join(f"{k} {v}" for k, v in block.items() if k != "name" and v is not None)
        lines.append(f"  {block['name']}  {details}")
    if not report["providers"]:
        lines.append("  no provider blocks: uncomment or add [[antbuddy]], [[quickom]], "
                     "[[epacific]] or [[kompaas]] (docs/configuration.md)")
    for hook in report["webhooks"]:
        lines.append(f"  {hook['name']}  to {hook['host']}, {hook['channels']} channel(s), "
                     f"{hook['secrets']} secret(s)")
    if report["from_environment"]:
        lines.append("  from the environment: " + ", ".join(
            f"{o['key']} ({o['variable']})" for o in report["from_environment"]))
    config = f" --config {path}" if path else ""
    if not online:
        lines.append(f"next: callbridge check{config} --online (reaches Redis and tries the "
                     f"provider credentials), then callbridge serve{config}")
        return "\n".join(lines)
    lines.append("online checks:")
    width = max((len(p.name) for p in probes), default=0)
    for probe in probes:
        status = "FAILED" if probe.failed else probe.status
        lines.append(f"  {status:<7} {probe.name:<{width}}  {probe.detail}")
    failed = sum(p.failed for p in probes)
    lines.append(f"{failed} online check(s) failed" if failed
                 else f"all reachable; next: callbridge serve{config}")
    return "\n".join(lines)
