"""A real Redis Cluster on loopback ports, for the tests that run streamcrm on one.

Three masters and one replica each (``redis-server --cluster-enabled yes``, an AOF per node,
joined by ``redis-cli --cluster create``), started in a temporary directory and stopped by pid.
A short node timeout lets a replica take over a killed master within seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from streamcrm.errors import ServiceError
from streamcrm.services.embedded import (
    REDIS_MEMORY_OPTIONS,
    RunningService,
    _wait_for_port,
    free_port,
    redis_server_binary,
)
from streamcrm.services.processes import start_process

NODE_TIMEOUT_MS = 2000
"""How long a master may be unreachable before its replica is promoted (production: 15 s)."""
READY_TIMEOUT_S = 60.0


@dataclass
class LocalRedisCluster:
    """A running cluster: every node (masters first) and the URL clients start from."""

    nodes: list[RunningService]
    directory: Path

    @property
    def url(self) -> str:
        return self.nodes[0].address

    def ports(self) -> list[int]:
        return [int(node.address.rsplit(":", 1)[1].split("/")[0]) for node in self.nodes]

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url)

    def node_of(self, key: str) -> RunningService:
        """The node serving ``key``'s slot now (a master: failover moves it)."""
        client = self.client()
        try:
            node = client.get_node_from_key(key)
        finally:
            client.close()
        return next(n for n in self.nodes if n.address.endswith(f":{node.port}/0"))

    def wait_until_ok(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every live node says ``cluster_state:ok`` and every slot has a live master."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(_cluster_ok(port) for port, node in zip(self.ports(), self.nodes, strict=True)
                   if node.process.poll() is None):  # fmt: skip
                return
            time.sleep(0.2)
        raise ServiceError(f"the Redis Cluster in {self.directory} is not ok in {timeout_s}s")


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        info = client.execute_command("CLUSTER INFO")
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()
    # redis-py parses CLUSTER INFO into a dict of strings.
    return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384


def start_cluster_node(directory: Path, port: int | None = None) -> RunningService:
    """One cluster-enabled redis-server with its AOF and node file in ``directory``."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "redis.log"
    process = start_process(
        [
            str(redis_server_binary()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"),
            # The bus port's own free port (the default, port + 10000, may be taken or > 65535).
            "--cluster-port", str(free_port()),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--dir", str(directory),
            "--daemonize", "no",
            *REDIS_MEMORY_OPTIONS,
        ],
        log_path,
    )  # fmt: skip
    service = RunningService("redis-cluster-node", f"redis://127.0.0.1:{port}/0", process, log_path)
    _wait_for_port(service, port)
    return service


@contextlib.contextmanager
def local_redis_cluster(masters: int = 3, replicas: int = 1) -> Iterator[LocalRedisCluster]:
    """Start a cluster of ``masters`` masters with ``replicas`` replicas each; stop it after."""
    directory = Path(tempfile.mkdtemp(prefix="streamcrm-redis-cluster-"))
    nodes: list[RunningService] = []
    try:
        for index in range(masters * (1 + replicas)):
            nodes.append(start_cluster_node(directory / f"node-{index}"))
        cluster = LocalRedisCluster(nodes, directory)
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in cluster.ports()),
                "--cluster-replicas", str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise ServiceError(
                f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}"
            )
        cluster.wait_until_ok()
        yield cluster
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(directory, ignore_errors=True)
