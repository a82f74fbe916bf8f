"""deploy/compose.yaml: a valid Compose file whose pieces fit together.

The schema is the compose-spec JSON schema that check-jsonschema ships (``vendor.compose-spec``),
so the check runs offline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

from bridge.config.load import load_config
from bridge.config.model import Config
from tests.deploy.files import (
    COMPOSE,
    DEPLOY,
    NGINX_CONF,
    compose,
    env_file,
    seconds,
    simulator_app,
)

CALLBRIDGE = ("callbridge-1", "callbridge-2")


def test_compose_file_matches_the_compose_spec():
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_file_compose_refers_to_exists():
    services = compose()["services"]
    referenced = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                referenced.append((name, DEPLOY / source))
        files = service.get("env_file", [])
        for item in [files] if isinstance(files, str) else files:
            referenced.append((name, DEPLOY / (item if isinstance(item, str) else item["path"])))
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            referenced.append((name, context / service["build"]["dockerfile"]))
    for section in ("configs", "secrets"):
        for name, item in compose().get(section, {}).items():
            if "file" in item:
                referenced.append((name, DEPLOY / item["file"]))
    assert len(referenced) >= 5
    for name, path in referenced:
        assert path.exists(), f"{name}: {path} does not exist"


def instance_config(name: str) -> tuple[Config, dict[str, str]]:
    """An instance's configuration as its container loads it: the mounted file, the env_file,
    and the service's own environment."""
    service = compose()["services"][name]
    [mount] = [v for v in service["volumes"]
               if v.split(":")[1] == "/etc/callbridge/callbridge.toml"]
    environ: dict[str, str] = {}
    for item in service["env_file"]:
        environ.update(env_file(DEPLOY / item))
    environ.update(service.get("environment", {}))
    return load_config(str(DEPLOY / mount.split(":")[0]), environ), environ


def test_both_instances_load_their_configuration_and_share_the_upstream():
    configs = [instance_config(name)[0] for name in CALLBRIDGE]
    assert [c.lease.instance_id for c in configs] == list(CALLBRIDGE)
    services = compose()["services"]
    app = simulator_app()
    for config in configs:
        url = urlsplit(config.broker.url)
        assert url.hostname in services and services[url.hostname]["image"].startswith("redis")
        [account] = config.antbuddy
        assert account.app_id == app.app_id
        assert account.app_secret.get_secret_value() == app.app_secret, \
            "compose/secrets.env and the simulator's --app must hold the same placeholder"
        assert account.account_id in app.accounts
        for upstream in (account.oapi_url, account.ws_url):
            assert (urlsplit(upstream).hostname, urlsplit(upstream).port) == ("simulator", app.port)
    assert configs[0].broker.url == configs[1].broker.url
    assert configs[0].broker.prefix == configs[1].broker.prefix


def test_secrets_are_placeholders_and_stay_out_of_the_config_file():
    _, environ = instance_config(CALLBRIDGE[0])
    secrets = env_file(DEPLOY / "compose" / "secrets.env")
    assert secrets and all("placeholder" in value for value in secrets.values())
    config_text = (DEPLOY / "compose" / "callbridge.toml").read_text()
    for value in secrets.values():
        assert value not in config_text
    assert not re.search(r"^\s*(jwt_secret|app_secret)\s*=", config_text, flags=re.M)


def test_stop_grace_period_covers_the_shutdown():
    services = compose()["services"]
    for name in CALLBRIDGE:
        config, _ = instance_config(name)
        assert seconds(services[name]["stop_grace_period"]) > 2 * config.server.shutdown_timeout


def upstream_servers() -> list[str]:
    return re.findall(r"^\s*server\s+(\S+:\d+)", NGINX_CONF.read_text(), flags=re.M)


def test_nginx_proxies_to_both_instances():
    services: dict[str, Any] = compose()["services"]
    expected = sorted(f"{name}:{instance_config(name)[0].server.port}" for name in CALLBRIDGE)
    assert sorted(upstream_servers()) == expected
    nginx = services["nginx"]
    assert "./nginx/callbridge.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(CALLBRIDGE)
    for name in CALLBRIDGE:
        assert "ports" not in services[name], "instances are reached through nginx only"


def test_nginx_websocket_settings_outlast_the_heartbeat():
    conf = NGINX_CONF.read_text()
    ws = re.search(r"location = /ws \{(.*?)\}", conf, flags=re.S)
    assert ws, "no location = /ws"
    body = ws.group(1)
    config, _ = instance_config(CALLBRIDGE[0])
    # JSON heartbeats and websocket pings both go out every ping_interval
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        match = re.search(rf"{directive}\s+(\S+);", body)
        assert match, f"{directive} missing in /ws"
        assert seconds(match.group(1)) > config.server.ping_interval
    assert re.search(r"proxy_buffering\s+off;", body)
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_set_header X-Real-IP $remote_addr;"):
        assert line in conf
    assert "proxy_set_header" not in body, \
        "a proxy_set_header in /ws would drop the server-level headers there"
    assert re.search(r"proxy_next_upstream\s+error timeout", conf)
