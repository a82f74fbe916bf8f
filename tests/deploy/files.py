"""Reading the files under deploy/ as the tools that use them do.

Compose, kustomize, Docker and systemd each read their own format; these helpers read just
enough of each for the tests to check what those tools would be given.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
NGINX_CONF = DEPLOY / "nginx" / "callbridge.conf"
SYSTEMD_UNIT = DEPLOY / "systemd" / "callbridge.service"


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file."""
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def compose() -> dict[str, Any]:
    """compose.yaml with its anchors and merge keys resolved, as Compose reads it."""
    [doc] = yaml_documents(COMPOSE)
    return doc


class SimulatorApp(NamedTuple):
    app_id: str
    app_secret: str
    accounts: list[str]
    port: int


def simulator_app() -> SimulatorApp:
    """What compose's simulator accepts, read from its command line."""
    command = compose()["services"]["simulator"]["command"]

    def values(option: str) -> list[str]:
        start = command.index(option) + 1
        end = next((i for i in range(start, len(command)) if command[i].startswith("--")),
                   len(command))
        return command[start:end]

    app_id, app_secret = values("--app")
    [port] = values("--port")
    return SimulatorApp(app_id, app_secret, values("--accounts"), int(port))


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (compose ``env_file``, systemd ``EnvironmentFile``);
    comments and blank lines skipped, values taken literally."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def k8s_manifests() -> list[Path]:
    """Every YAML file under deploy/k8s, kustomizations included."""
    return sorted(K8S.rglob("*.yaml"))


def k8s_resources() -> list[tuple[Path, dict[str, Any]]]:
    """(file, document) for every Kubernetes object under deploy/k8s (not kustomizations)."""
    return [(path, doc) for path in k8s_manifests() for doc in yaml_documents(path)
            if doc.get("kind") != "Kustomization"]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name outside the overlays (which patch them)."""
    matches = [doc for path, doc in k8s_resources()
               if doc["kind"] == kind and doc["metadata"]["name"] == name
               and "overlays" not in path.relative_to(K8S).parts]
    assert len(matches) == 1, f"expected one {kind} {name} in the base, found {len(matches)}"
    return matches[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON argument list of the last ``instruction`` (ENTRYPOINT, HEALTHCHECK ... CMD)."""
    found = [args for word, args in dockerfile_instructions() if word == instruction]
    assert found, f"no {instruction} in {DOCKERFILE}"
    match = re.search(r"\[.*\]$", found[-1])
    assert match, f"{instruction} is not in exec (JSON) form: {found[-1]}"
    value = json.loads(match.group(0))
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` settings of a systemd unit, every value of a repeated key kept."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd or compose duration (``30``, ``30s``, ``1min 30s``, ``1m30s``) in seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts, f"not a duration: {value!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total
