"""A real Redis Cluster on loopback ports, for the tests that run streamcrm on one.

Three masters and one replica each (``redis-server --cluster-enabled yes``, an AOF per node,
joined by ``redis-cli --cluster create``), started in a temporary directory and stopped by pid.
A short node timeout lets a replica take over a killed master within seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from streamcrm.errors import ServiceError
from streamcrm.services.embedded import REDIS_MEMORY_OPTIONS, redis_server_binary
from streamcrm.services.processes import RunningService, free_port, start_process, wait_for_port

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
        """A cluster client started from a live node."""
        live = next(node for node in self.nodes if node.process.poll() is None)
        return redis.RedisCluster.from_url(live.address)

    def node_of(self, key: str) -> RunningService:
        """The node serving ``key``'s slot now (a master: failover moves it)."""
        client = self.client()
        try:
            node = client.get_node_from_key(key)
        finally:
            client.close()
        return next(n for n in self.nodes if n.address.endswith(f":{node.port}/0"))

    def wait_for_failover(self, key: str, dead: RunningService) -> float:
        """Until ``key``'s slot is served by a node other than the ``dead`` master and the
        cluster is ok again; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_S:
            with contextlib.suppress(
                redis.exceptions.RedisError, redis.exceptions.RedisClusterException
            ):
                if self.node_of(key) is not dead:
                    self.wait_until_ok()
                    return time.monotonic() - started
            time.sleep(0.2)
        raise ServiceError(f"no replica took over {key}'s slot in {READY_TIMEOUT_S}s")

    def replica_of(self, master: RunningService) -> RunningService:
        """The node replicating ``master`` (redis-py parses CLUSTER NODES into a dict by
        address)."""
        client = redis.Redis.from_url(master.address, socket_timeout=2)
        try:
            master_id = client.execute_command("CLUSTER MYID")
            nodes = client.execute_command("CLUSTER NODES")
        finally:
            client.close()
        master_id = master_id.decode() if isinstance(master_id, bytes) else master_id
        address = next(a for a, node in nodes.items() if node["master_id"] == master_id)
        return next(n for n in self.nodes if n.address == f"redis://{address}/0")

    def cut_replication(self, master: RunningService) -> None:
        """Close ``master``'s replication links: writes after this reach no replica until
        one reconnects (a frozen replica cannot)."""
        client = redis.Redis.from_url(master.address, socket_timeout=2)
        try:
            client.client_kill_filter(_type="replica")
        finally:
            client.close()

    def kill(self, node: RunningService) -> int:
        """``kill -9`` one node; its index, to :meth:`restart` it."""
        node.kill()
        return self.nodes.index(node)

    def restart(self, index: int) -> RunningService:
        """Start a stopped node again on its port, bus port and files: it rejoins the cluster
        (a killed master whose replica took over comes back as that replica's replica)."""
        old = self.nodes[index]
        port = int(old.address.rsplit(":", 1)[1].split("/")[0])
        self.nodes[index] = start_cluster_node(old.log_path.parent, port)
        return self.nodes[index]

    def wait_until_ok(self, replicas: int = 0, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every live node says ``cluster_state:ok``, every slot has a live master and
        every live node sees ``replicas`` live replicas."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(_cluster_ok(port, replicas)
                   for port, node in zip(self.ports(), self.nodes, strict=True)
                   if node.process.poll() is None):  # fmt: skip
                return
            time.sleep(0.2)
        raise ServiceError(f"the Redis Cluster in {self.directory} is not ok in {timeout_s}s")


def client_info(port: int) -> dict[str, object]:
    """``INFO replication`` of the node on ``port``."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def _cluster_ok(port: int, replicas: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        info = client.execute_command("CLUSTER INFO")
        nodes = client.execute_command("CLUSTER NODES")
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()
    flags = [set(node["flags"].split(",")) for node in nodes.values()]
    if sum("slave" in f and "fail" not in f for f in flags) < replicas:
        return False
    mine = next(f for f in flags if "myself" in f)
    if "slave" in mine and client_info(port).get("master_link_status") != "up":
        return False  # a replica still syncing could not take over yet
    # redis-py parses CLUSTER INFO into a dict of strings.
    return info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384


def start_cluster_node(directory: Path, port: int | None = None) -> RunningService:
    """One cluster-enabled redis-server with its AOF and node file in ``directory`` (and its
    bus port, in ``bus-port``, kept for a restart)."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    bus_file = directory / "bus-port"
    if not bus_file.exists():
        # Its own free port: the default, port + 10000, may be taken or above 65535.
        bus_file.write_text(str(free_port()))
    log_path = directory / "redis.log"
    process = start_process(
        [
            str(redis_server_binary()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-port", bus_file.read_text(),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # A replica cut off from its master (as the fault test cuts one) may still be
            # promoted: what it lacks is what the fault test is about.
            "--cluster-replica-validity-factor", "0",
            # A replica's first full sync at once (Redis waits 5 s by default for others to
            # share it): until it is done, the replica holds nothing to take over with.
            "--repl-diskless-sync-delay", "0",
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
    wait_for_port(service, port)
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
        cluster.wait_until_ok(replicas=masters * replicas)
        yield cluster
    finally:
        for node in nodes:
            node.stop()
        if not os.environ.get("STREAMCRM_KEEP_TEST_CLUSTER"):  # kept to read the nodes' logs
            shutil.rmtree(directory, ignore_errors=True)
