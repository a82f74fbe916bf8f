"""A throwaway 3-node Redis Cluster on loopback, for tests.

``async with redis_cluster() as cluster:`` starts three ``redis-server`` processes in cluster
mode on free 127.0.0.1 ports (no persistence), joins them with ``redis-cli --cluster create``
(three primaries, no replicas), waits until every node reports ``cluster_state:ok``, and on exit
kills the processes and removes their directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

#: Safety net for start-up steps; scale it on a slow machine.
STARTUP = 30.0 * float(os.environ.get("CALLBRIDGE_TEST_TIMEOUT_SCALE", "1"))


def binaries_missing() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    return f"{' and '.join(missing)} not found on PATH" if missing else None


@dataclass(frozen=True)
class Cluster:
    ports: tuple[int, ...]

    @property
    def url(self) -> str:
        """The ``redis-cluster://`` URL naming every node."""
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    async def cli(self, port: int, *args: str) -> str:
        """Run ``redis-cli -p <port> <args>`` and return its output."""
        proc = await asyncio.create_subprocess_exec(
            "redis-cli", "-h", "127.0.0.1", "-p", str(port), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(STARTUP):
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {out.decode(errors='replace')}")
        return out.decode()

    async def flushall(self) -> None:
        """FLUSHALL on every node: the cluster loses all keys (history and epochs)."""
        for port in self.ports:
            await self.cli(port, "FLUSHALL")


def _free_ports(count: int) -> list[int]:
    # Cluster nodes also listen on port + 10000 (the bus): both must be free.
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


async def _wait_ok(cluster: Cluster) -> None:
    async with asyncio.timeout(STARTUP):
        for port in cluster.ports:
            while "cluster_state:ok" not in await cluster.cli(port, "CLUSTER", "INFO"):
                await asyncio.sleep(0.05)


async def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(STARTUP):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return


@contextlib.asynccontextmanager
async def redis_cluster() -> AsyncIterator[Cluster]:
    workdir = tempfile.mkdtemp(prefix="callbridge-cluster-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = _free_ports(3)
        for port in ports:
            procs.append(subprocess.Popen(
                [
                    "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", os.path.join(workdir, f"nodes-{port}.conf"),
                    "--save", "", "--appendonly", "no", "--dir", workdir,
                ],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port, proc in zip(ports, procs):
            await _wait_listening(port, proc)
        cluster = Cluster(tuple(ports))
        await cluster.cli(
            ports[0], "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas", "0", "--cluster-yes",
        )
        await _wait_ok(cluster)
        yield cluster
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
