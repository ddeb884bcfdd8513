"""The embedded Apache Kafka starts on loopback, answers, stops by pid, and with a log directory
of its own keeps what it acknowledged across a ``kill -9``."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from streamcrm.services.apache_kafka import live_brokers, start_kafka
from streamcrm.services.kafka import make_producer, read_to_end

pytestmark = pytest.mark.integration


def test_a_killed_broker_restarted_on_its_log_directory_keeps_its_topics_and_records(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "kafka-data"
    first = start_kafka(tmp_path / "first", data_dir=data_dir)
    broker_port = int(first.address.rsplit(":", 1)[1])
    try:
        admin = KafkaAdminClient(bootstrap_servers=first.address)
        admin.create_topics([NewTopic("kept", num_partitions=2, replication_factor=1)])
        admin.close()
        producer = make_producer(first.address)
        for n in range(20):
            producer.send("kept", key=f"k{n}".encode(), value=f"v{n}".encode())
        producer.flush()  # acknowledged by the broker (acks=all on one replica)
        producer.close()
    finally:
        first.kill()  # SIGKILL: no clean shutdown
    assert first.process.returncode == -9

    second = start_kafka(tmp_path / "second", data_dir=data_dir, broker_port=broker_port)
    try:
        assert second.address == first.address
        assert live_brokers(broker_port) == 1
        values = sorted(record.value or b"" for record in read_to_end(second.address, "kept"))
        assert values == sorted(f"v{n}".encode() for n in range(20))
    finally:
        second.stop()
    assert second.process.poll() is not None
