"""deploy/k8s: schema-valid manifests, a ConfigMap callbridge loads, probes and a grace period
that fit callbridge's shutdown."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import all_versions

from bridge.config.load import load_config
from bridge.config.model import Config
from tests.deploy.files import K8S, k8s_manifests, k8s_object, k8s_resources, yaml_documents

#: The oldest and the newest Kubernetes release whose schemas kubernetes-validate bundles.
VERSIONS = sorted({all_versions()[0], all_versions()[-1]})
POD_NAME = "callbridge-7d4b9c6f5-x2x9q"


def kustomizations() -> list[Path]:
    return [p for p in k8s_manifests() if p.name == "kustomization.yaml"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_matches_the_kubernetes_schema(version):
    resources = k8s_resources()
    assert {doc["kind"] for _, doc in resources} >= {
        "Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"}
    for path, doc in resources:
        # strict: an unknown or misspelt field is an error, not silently dropped
        validate(doc, version, strict=True)


def test_kustomizations_name_files_that_exist():
    assert len(kustomizations()) >= 3
    for path in kustomizations():
        [doc] = yaml_documents(path)
        assert doc["kind"] == "Kustomization"
        names = list(doc.get("resources", [])) + [p["path"] for p in doc.get("patches", [])]
        assert names, f"{path} names nothing"
        for name in names:
            target = path.parent / name
            assert target.exists(), f"{path}: {name} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), \
                    f"{path}: {name} has no kustomization.yaml"


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("directory", [".", "overlays/external-redis"])
def test_kustomize_builds_valid_objects(directory):
    built = subprocess.run(["kubectl", "kustomize", str(K8S / directory)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    kinds = sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in objects)
    redis = {"Deployment/callbridge-redis", "Service/callbridge-redis"}
    if directory == ".":
        assert redis <= set(kinds)
    else:
        assert not redis & set(kinds), "the external-redis overlay must not deploy a Redis"
        secret = next(d for d in objects if d["kind"] == "Secret")
        assert "CALLBRIDGE__BROKER__URL" in secret["stringData"]
        # the patch adds the URL and keeps the base's secrets
        assert "CALLBRIDGE__AUTH__JWT_SECRET" in secret["stringData"]
    for doc in objects:
        validate(doc, VERSIONS[-1], strict=True)


# -- configuration ---------------------------------------------------------------------------

def deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "callbridge")


def container() -> dict[str, Any]:
    [only] = deployment()["spec"]["template"]["spec"]["containers"]
    return only


def config_text() -> str:
    return k8s_object("ConfigMap", "callbridge-config")["data"]["callbridge.toml"]


def pod_environ(secret: dict[str, Any]) -> dict[str, str]:
    """The CALLBRIDGE__ variables a pod gets: the Secret (envFrom) and the container's env."""
    env = dict(secret["stringData"])
    for var in container()["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = POD_NAME
    return env


def load_pod_config(tmp_path: Path, secret: dict[str, Any]) -> Config:
    mount = container()["volumeMounts"]
    config_mount = next(m for m in mount if m["name"] == "config")
    assert config_mount["mountPath"] == "/etc/callbridge", \
        "the image's entrypoint reads /etc/callbridge/callbridge.toml"
    path = tmp_path / "callbridge.toml"
    path.write_text(config_text())
    return load_config(str(path), pod_environ(secret))


def test_the_configmap_loads_with_the_secret_as_the_pod_gets_it(tmp_path):
    secret = k8s_object("Secret", "callbridge-secrets")
    config = load_pod_config(tmp_path, secret)
    assert config.lease.instance_id == POD_NAME
    assert config.auth.jwt_secret.get_secret_value() == \
        secret["stringData"]["CALLBRIDGE__AUTH__JWT_SECRET"]
    assert [a.tenant for a in config.antbuddy] == ["acme"]
    # the broker is the Redis Service of redis.yaml
    redis = k8s_object("Service", "callbridge-redis")
    url = urlsplit(config.broker.url)
    assert (url.hostname, url.port) == ("callbridge-redis", redis["spec"]["ports"][0]["port"])
    # the listening port is the container's
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert config.server.port == ports["http"]
    assert config.server.host == "0.0.0.0"


def test_no_secret_is_written_in_the_configmap():
    data = tomllib.loads(config_text())
    assert "jwt_secret" not in data.get("auth", {})
    for account in data["antbuddy"]:
        assert "app_secret" not in account and "sip_password" not in account
    assert "@" not in data["broker"]["url"], "a broker password belongs in the Secret"


def test_the_secret_holds_placeholders_only():
    secret = k8s_object("Secret", "callbridge-secrets")
    patch = yaml_documents(K8S / "overlays" / "external-redis" / "broker-url.yaml")[0]
    for values in (secret["stringData"], patch["stringData"]):
        for name, value in values.items():
            assert name.startswith("CALLBRIDGE__")
            assert "REPLACE-ME" in value, f"{name} does not look like a placeholder"


@pytest.mark.parametrize("url", [
    None,  # the overlay's own placeholder
    "redis-cluster://:REPLACE-ME@node-1:6379,node-2:6379",
    "rediss://:REPLACE-ME@redis.example.internal:6380/0",
])
def test_the_external_redis_overlay_sets_the_broker(tmp_path, url):
    secret = k8s_object("Secret", "callbridge-secrets")
    patch = yaml_documents(K8S / "overlays" / "external-redis" / "broker-url.yaml")[0]
    assert patch["metadata"]["name"] == secret["metadata"]["name"]
    merged = {"stringData": {**secret["stringData"], **patch["stringData"]}}
    if url is not None:
        merged["stringData"]["CALLBRIDGE__BROKER__URL"] = url
    config = load_pod_config(tmp_path, merged)
    assert config.broker.url == merged["stringData"]["CALLBRIDGE__BROKER__URL"]
    assert "REPLACE-ME" not in repr(config), "the broker password must be masked"


# -- the Deployment ----------------------------------------------------------------------------

def test_probes_ask_readyz_for_readiness_and_healthz_for_liveness():
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    names = {p["name"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in names


def test_the_grace_period_covers_prestop_and_the_whole_shutdown(tmp_path):
    spec = deployment()["spec"]["template"]["spec"]
    config = load_pod_config(tmp_path, k8s_object("Secret", "callbridge-secrets"))
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop > 0, "endpoints must be drained before SIGTERM stops the listener"
    # connections get shutdown_timeout to close, then queued events as long to be published
    assert spec["terminationGracePeriodSeconds"] > pre_stop + 2 * config.server.shutdown_timeout


def test_pods_run_unprivileged_with_a_read_only_root():
    pod = deployment()["spec"]["template"]["spec"]
    c = container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = c["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # a writable /tmp despite the read-only root
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_service_and_disruption_budget_select_the_callbridge_pods():
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = k8s_object("Service", "callbridge")
    assert service["spec"]["selector"].items() <= labels.items()
    budget = k8s_object("PodDisruptionBudget", "callbridge")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment()["spec"]["replicas"] >= 2, "one instance left during a disruption"
    redis_labels = k8s_object("Deployment", "callbridge-redis")["spec"]["template"]["metadata"][
        "labels"]
    assert not service["spec"]["selector"].items() <= redis_labels.items()
