"""deploy/Dockerfile: what it copies exists and reaches the build context, its entrypoint and
default configuration start callbridge, and its HEALTHCHECK tells a live instance from a dead one.

No Docker daemon is needed: the image's own pieces are run here as the image would run them.
"""

from __future__ import annotations

import asyncio
import fnmatch
import secrets
import sys
from pathlib import Path

from bridge.config.load import load_config
from tests.deploy.files import (
    DEPLOY,
    ROOT,
    dockerfile_exec_form,
    dockerfile_instructions,
)
from tests.deploy.processes import SCALE, Serve, clean_environ, serving
from tests.support.redis_server import free_port

IMAGE_CONFIG = "/etc/callbridge/callbridge.toml"


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the repository) out of the context."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = Path(path).parts
    for pattern in patterns:
        pattern = pattern.removeprefix("**/")
        for n in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:n]), pattern) or fnmatch.fnmatch(parts[n - 1],
                                                                                 pattern):
                return True
    return False


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not from a stage)."""
    result = []
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from" not in args:
            *sources, destination = args.split()
            result.append((sources, destination))
    return result


def test_everything_copied_exists_and_is_in_the_build_context():
    sources = [s for group, _ in copies() for s in group]
    assert {"pyproject.toml", "README.md", "bridge"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    # and what the image does not need stays out
    for path in (".venv", ".git", "tests", "deploy/k8s", "bridge/__pycache__"):
        assert ignored(path), f"{path} would be sent to the Docker daemon"


def test_entrypoint_serves_the_configuration_the_image_carries():
    assert dockerfile_exec_form("ENTRYPOINT") == ["callbridge", "serve", "--config", IMAGE_CONFIG]
    [(source, destination)] = [(s, d) for s, d in copies() if d == IMAGE_CONFIG]
    assert source == ["deploy/docker/callbridge.toml"]
    # the image's default needs nothing but the JWT key from the environment
    config = load_config(str(ROOT / source[0]),
                         {"CALLBRIDGE__AUTH__JWT_SECRET": secrets.token_urlsafe(32)})
    assert config.server.host == "0.0.0.0"
    [exposed] = [args for word, args in dockerfile_instructions() if word == "EXPOSE"]
    assert exposed == str(config.server.port)


def test_the_image_runs_as_a_numeric_non_root_user():
    users = [args for word, args in dockerfile_instructions() if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    stages = [args for word, args in dockerfile_instructions() if word == "FROM"]
    assert len(stages) == 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    assert any(args == "PYTHON_IMAGE=python:3.11-slim" for word, args in dockerfile_instructions()
               if word == "ARG")


async def healthcheck(port: int) -> int:
    """The image's HEALTHCHECK command, run with this interpreter; its exit status."""
    form = dockerfile_exec_form("HEALTHCHECK")
    assert form[0] == "python"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *form[1:], env={**clean_environ(), "CALLBRIDGE__SERVER__PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(15 * SCALE):
        return await proc.wait()


async def test_healthcheck_passes_on_a_live_instance_and_fails_on_a_stopped_one(tmp_path):
    port = free_port()
    instance = Serve(DEPLOY / "docker" / "callbridge.toml", {
        "CALLBRIDGE__AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "CALLBRIDGE__SERVER__HOST": "127.0.0.1",
        "CALLBRIDGE__SERVER__PORT": str(port),
    }, tmp_path / "serve.log")
    async with serving(instance):
        assert await healthcheck(port) == 0, instance.log()
        assert await instance.stop() == 0
        assert await healthcheck(port) != 0
