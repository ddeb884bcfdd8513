"""An embedded Apache Kafka: one KRaft node, broker and controller in one JVM, on loopback.

The broker production runs (``docker-compose.yml``'s ``apache/kafka`` image), at the same
version, for local runs (``STREAMCRM_EMBEDDED_BROKER=kafka``) and the integration suite.
Its jars come from Maven Central through the pinned ``services/kafka/pom.xml``: ``./dev
setup`` resolves them into :func:`kafka_lib_dir`, and also installs a Java runtime when
there is none. Starting it is three steps:

1. write ``server.properties`` (free loopback ports for the broker and the controller, one
   replica for everything, no waiting before a group's first rebalance);
2. format the log directory once (``kafka.tools.StorageTool format``, a fresh cluster id);
3. run ``java -cp 'lib/*' kafka.Kafka server.properties`` and wait until a Metadata request
   lists the broker (it answers only once it has joined its own controller, unfenced).

It stops by pid (SIGTERM: a clean shutdown; SIGKILL if it lingers). With a ``data_dir`` of
the caller's the log directory survives a stop or a ``kill -9`` and a restart on the same
ports finds every topic and committed offset again.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamcrm.errors import ServiceError
from streamcrm.services.processes import (
    RunningService,
    free_port,
    start_process,
    wait_for_port,
)

KAFKA_VERSION = "3.9.1"
"""The Apache Kafka of ``services/kafka/pom.xml`` and of ``docker-compose.yml``."""

KAFKA_STARTUP_TIMEOUT_S = 60.0
"""From ``java`` to a broker that answers: about 3 s on a 2-core machine, more when loaded."""

JVM_OPTIONS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")
"""A small heap (Kafka's scripts default to 1 GiB too): the JVM's own default, a quarter of
the machine's memory, is far more than a test broker needs."""

TEST_BROKER_PROPERTIES: Mapping[str, str] = {
    # One node: every internal topic has one replica and needs one in sync.
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "min.insync.replicas": "1",
    "default.replication.factor": "1",
    # A group's first rebalance would wait 3 s for more members: nobody else is coming.
    "group.initial.rebalance.delay.ms": "0",
    # As in docker-compose.yml: streamcrm creates its topics; a typo must fail loudly.
    "auto.create.topics.enable": "false",
    # Two cores: fewer threads than Kafka's defaults (3 network, 8 I/O).
    "num.network.threads": "2",
    "num.io.threads": "4",
    "log.cleaner.threads": "1",
}
"""Broker settings for a single test node, beside the listeners and log directory."""

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""
"""Kafka's log on standard output (the process's log file), at INFO as its distribution."""


def kafka_lib_dir() -> Path:
    """The directory of the broker's jars, as ``./dev setup`` fills it
    (``$XDG_CACHE_HOME/streamcrm/kafka-<version>/lib``, ``~/.cache`` when unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "streamcrm" / f"kafka-{KAFKA_VERSION}" / "lib"


def java_binary() -> Path:
    """Path of the ``java`` that runs the broker (``./dev setup`` installs one when missing)."""
    found = shutil.which("java")
    if found is None:
        raise ServiceError("java is not installed; run ./dev setup (it installs a Java runtime)")
    return Path(found)


def kafka_classpath() -> str:
    """The broker's classpath: every jar of :func:`kafka_lib_dir`."""
    lib = kafka_lib_dir()
    if not (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise ServiceError(
            f"Apache Kafka {KAFKA_VERSION} is not in {lib}; run ./dev setup"
            " (it fetches the jars of services/kafka/pom.xml)"
        )
    return str(lib / "*")


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding (22 characters),
    as ``kafka-storage random-uuid`` prints it. Like Kafka's ``Uuid.randomUuid``, it never
    starts with ``-``: ``kafka-storage format --cluster-id -x...`` would read the id as an
    option and refuse (1 draw in 64 would).

    >>> len(new_cluster_id())
    22
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class Listener:
    """A client listener beside the node's PLAINTEXT one: its name (which the
    ``listener.name.<name>.*`` properties use, in lower case), security protocol and port."""

    name: str
    protocol: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class KafkaNode:
    """Where one embedded KRaft node listens and keeps its data.

    The PLAINTEXT listener on ``broker_port`` is always there: brokers talk to each other
    on it and :func:`start_kafka` asks it whether the node is up. ``listeners`` add client
    listeners with security (``SASL_PLAINTEXT``, ``SSL``, ``SASL_SSL``); a client that
    bootstraps on one of them is sent that listener's address in every Metadata answer.
    """

    data_dir: Path
    broker_port: int
    controller_port: int
    listeners: tuple[Listener, ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def server_properties(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``server.properties`` of a combined broker and controller (node 1, its own single
        voter), with :data:`TEST_BROKER_PROPERTIES` and then ``extra`` over them."""
        clients = [f"PLAINTEXT://{self.bootstrap}"] + [
            f"{listener.name}://{listener.address}" for listener in self.listeners
        ]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"] + [
            f"{listener.name}:{listener.protocol}" for listener in self.listeners
        ]
        return {
            "node.id": "1",
            "process.roles": "broker,controller",
            "listeners": ",".join([*clients, f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners": ",".join(clients),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir / "logs"),
            **TEST_BROKER_PROPERTIES,
            **(extra or {}),
        }


def _write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))


def _java(config_dir: Path, main_class: str, *args: str) -> list[str]:
    log4j = config_dir / "log4j.properties"
    if not log4j.exists():
        log4j.write_text(LOG4J_PROPERTIES)
    return [
        str(java_binary()),
        *JVM_OPTIONS,
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        kafka_classpath(),
        main_class,
        *args,
    ]


def format_log_dir(node: KafkaNode, properties_path: Path) -> bool:
    """Format ``node``'s log directory for a new single-node cluster, unless it already holds
    one (``meta.properties``); ``True`` when it formatted."""
    if (node.data_dir / "logs" / "meta.properties").exists():
        return False
    command = _java(
        properties_path.parent,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        new_cluster_id(),
        "--config",
        str(properties_path),
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ServiceError(f"formatting Kafka's log directory failed:\n{done.stdout}{done.stderr}")
    return True


def start_kafka(
    log_dir: Path,
    data_dir: Path | None = None,
    broker_port: int | None = None,
    controller_port: int | None = None,
    properties: Mapping[str, str] | None = None,
    listeners: tuple[Listener, ...] = (),
) -> RunningService:
    """Start an Apache Kafka node on loopback; its address is the bootstrap ``host:port``.

    ``log_dir`` receives ``kafka.log`` and the configuration. The data live in ``data_dir``
    (default: ``log_dir / "kafka-data"``), formatted on first use and reused afterwards: to
    restart a node after a stop or a ``kill -9``, pass the same ``data_dir`` and ports.
    ``properties`` are added to (or override) the broker's ``server.properties``;
    ``listeners`` are client listeners beside the PLAINTEXT one (:class:`KafkaNode`), which
    ``properties`` configure (``listener.name.<name>.*``).
    """
    node = KafkaNode(
        data_dir=data_dir or log_dir / "kafka-data",
        broker_port=broker_port or free_port(),
        controller_port=controller_port or free_port(),
        listeners=listeners,
    )
    node.data_dir.mkdir(parents=True, exist_ok=True)
    config_dir = log_dir / "kafka-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    properties_path = config_dir / "server.properties"
    _write_properties(properties_path, node.server_properties(properties))
    format_log_dir(node, properties_path)
    log_path = log_dir / "kafka.log"
    command = _java(config_dir, "kafka.Kafka", str(properties_path))
    process = start_process(command, log_path)
    service = RunningService("Apache Kafka", node.bootstrap, process, log_path)
    wait_for_port(service, node.broker_port, KAFKA_STARTUP_TIMEOUT_S)
    wait_until_broker_answers(service, node.broker_port)
    return service


_METADATA_CORRELATION_ID = 0x5C2


def _metadata_request() -> bytes:
    """A Kafka Metadata request, version 1, for no topic: the answer lists the live brokers."""
    client_id = b"streamcrm-start"
    header = struct.pack(">hhih", 3, 1, _METADATA_CORRELATION_ID, len(client_id)) + client_id
    body = struct.pack(">i", 0)  # an empty topic array: no topics (-1 would be all of them)
    return struct.pack(">i", len(header) + len(body)) + header + body


def live_brokers(port: int, timeout_s: float = 2.0) -> int:
    """How many live (registered, unfenced) brokers the broker on loopback ``port`` knows of,
    by a Metadata request; 0 while it has not joined its cluster. Raises :class:`OSError`
    when it does not answer."""
    with socket.create_connection(("127.0.0.1", port), timeout_s) as sock:
        sock.sendall(_metadata_request())
        answer = b""
        while len(answer) < 12 and (chunk := sock.recv(12 - len(answer))):
            answer += chunk
    if len(answer) < 12:
        raise ConnectionError("closed without answering")
    _size, correlation_id, brokers = struct.unpack(">iii", answer)
    if correlation_id != _METADATA_CORRELATION_ID:
        raise ConnectionError("answered, but not as a Kafka broker does")
    return int(brokers)


def wait_until_broker_answers(
    service: RunningService, port: int, timeout_s: float = KAFKA_STARTUP_TIMEOUT_S
) -> None:
    """Return once the broker lists itself in a Metadata answer: it accepts requests and can
    lead partitions. Stop it and raise :class:`ServiceError` when it exits or runs late."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            log = service.log_path.read_text(errors="replace")[-3000:]
            raise ServiceError(f"{service.name} exited with {service.process.returncode}:\n{log}")
        try:
            if live_brokers(port) > 0:
                return
        except OSError:
            pass
        time.sleep(0.1)
    service.stop()
    raise ServiceError(f"{service.name} did not answer on port {port} within {timeout_s}s")
