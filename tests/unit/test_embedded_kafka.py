"""The embedded Apache Kafka is the broker production runs, configured as one test node."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from streamcrm.services import apache_kafka
from streamcrm.services.apache_kafka import (
    KAFKA_VERSION,
    KafkaNode,
    Listener,
    kafka_lib_dir,
    new_cluster_id,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_embedded_kafka_is_the_version_of_the_pom_and_of_docker_compose() -> None:
    pom = (REPO / "services" / "kafka" / "pom.xml").read_text()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())

    assert re.findall(r"<kafka.version>(.*)</kafka.version>", pom) == [KAFKA_VERSION]
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_the_jars_are_looked_for_where_dev_setup_puts_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    dev = (REPO / "dev").read_text()

    assert kafka_lib_dir() == tmp_path / "streamcrm" / f"kafka-{KAFKA_VERSION}" / "lib"
    assert "${XDG_CACHE_HOME:-$HOME/.cache}/streamcrm/kafka-$version/lib" in dev


def test_a_node_is_its_own_single_voter_on_loopback_with_one_replica_of_everything() -> None:
    node = KafkaNode(Path("/data"), broker_port=9001, controller_port=9002)

    properties = node.server_properties()

    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:9002"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9001"
    assert properties["log.dirs"] == "/data/logs"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert properties["auto.create.topics.enable"] == "false"
    assert node.bootstrap == "127.0.0.1:9001"


def test_extra_properties_override_the_test_node_defaults() -> None:
    node = KafkaNode(Path("/data"), broker_port=9001, controller_port=9002)

    properties = node.server_properties({"log.cleaner.backoff.ms": "500", "num.io.threads": "2"})

    assert properties["log.cleaner.backoff.ms"] == "500"
    assert properties["num.io.threads"] == "2"


def test_a_secure_client_listener_is_added_beside_the_plaintext_one() -> None:
    sasl = Listener("SASL", "SASL_PLAINTEXT", 9003)
    node = KafkaNode(Path("/data"), broker_port=9001, controller_port=9002, listeners=(sasl,))

    properties = node.server_properties()

    assert properties["listeners"] == (
        "PLAINTEXT://127.0.0.1:9001,SASL://127.0.0.1:9003,CONTROLLER://127.0.0.1:9002"
    )
    assert properties["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:9001,SASL://127.0.0.1:9003"
    )
    assert properties["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT"
    )
    assert properties["inter.broker.listener.name"] == "PLAINTEXT"


def test_a_cluster_id_never_starts_with_a_dash_which_kafka_storage_reads_as_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
    monkeypatch.setattr(apache_kafka.uuid, "uuid4", lambda: next(draws))

    cluster_id = new_cluster_id()

    assert cluster_id == "A" * 22
