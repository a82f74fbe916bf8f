"""What ``callbridge simulate`` prints once it listens: what the simulators accept, and the
configuration blocks that point callbridge at them.

Pure code: the servers' URLs and the simulators' settings in, text out. The blocks are the
account arrays of bridge/config (``[[antbuddy]]``, and with the provider fakes ``[[quickom]]``,
``[[epacific]]``, ``[[kompaas]]``); pasted next to ``[auth]`` and ``[broker]`` they make a
configuration ``callbridge serve`` runs with. They carry the simulators' own credentials: the
fakes accept nothing else, and the user needs them to connect.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from bridge.simulator.app import SimulatorSettings


def antbuddy_blocks(settings: SimulatorSettings, *, url: str, ws_url: str,
                    tenant: str) -> list[dict[str, Any]]:
    """One ``[[antbuddy]]`` block per simulated account, all with the first application."""
    app_id, app_secret = next(iter(settings.apps.items()))
    return [{"tenant": tenant, "oapi_url": url, "ws_url": ws_url, "app_id": app_id,
             "app_secret": app_secret, "account_id": account}
            for account in settings.accounts]


def accepts(settings: SimulatorSettings, *, url: str, ws_url: str) -> str:
    """The simulator's addresses and what it accepts, as aligned lines."""
    apps = ", ".join(f"{app_id} (secret {secret})" for app_id, secret in settings.apps.items())
    extensions = settings.extensions
    span = f"{extensions[0]}..{extensions[-1]}" if len(extensions) > 1 else "".join(extensions)
    return "\n".join([
        f"AntBuddy simulator on {url} (oapi) and {ws_url} (signals)",
        f"  oapi        {url}/oapi/v1/voice/auth_token",
        f"  websocket   {ws_url}  (dialects: {', '.join(settings.dialects)})",
        f"  apps        {apps}",
        f"  accounts    {', '.join(settings.accounts)}",
        f"  extensions  {span} ({len(extensions)}), {settings.calls_per_second:g} call(s)/s",
        f"  control     GET {url}/_sim/stats; POST {url}/_sim/drop drops the signal links",
    ])


def config_text(blocks: dict[str, list[dict[str, Any]]]) -> str:
    """``blocks`` (section name -> account blocks) as TOML arrays of tables."""
    return tomli_w.dumps(blocks)


def banner(summary: list[str], blocks: dict[str, list[dict[str, Any]]]) -> str:
    """The printed announcement: the summaries, then the blocks to paste."""
    return "\n".join([
        *summary,
        "",
        "Configuration for callbridge serve: paste these blocks into your file next to [auth]",
        "(jwt_secret) and [broker] (url, e.g. \"memory://\"):",
        "",
        config_text(blocks).rstrip(),
        "",
    ])
