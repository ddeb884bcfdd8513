"""After an erasure, Apache Kafka's log compaction removes the customer's scores from
``crm.scores``: a fresh reader of the topic finds none (docs/privacy.md).

The worker publishes a tombstone (the customer's key, no value) on the compacted scores
topic when it applies an erasure. Compaction then keeps only the newest record per key, so
the customer's scores go; it never touches a partition's active segment, so the tombstone
must first be in a closed one. Production's segments roll after 7 days and the cleaner
waits for a dirty ratio of 0.5; here the scores topic rolls a segment each second and is
cleaned at 1 % dirty, on a broker whose cleaner looks for work every 200 ms, and a later
score on the same partition closes the tombstone's segment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from streamcrm.core.events import ErasureRequested
from streamcrm.services.apache_kafka import start_kafka
from streamcrm.services.embedded import EmbeddedServices, RunningService
from streamcrm.services.kafka import Record, read_to_end, topic_specs
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings
from tests.integration.exactness import wait_until
from tests.integration.worker_harness import (
    TopicReader,
    one_purchase,
    running_worker,
    scores,
    send,
    send_raw,
)

pytestmark = pytest.mark.integration

QUICK_COMPACTION = {
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000",
}
"""Scores-topic settings that make compaction happen within seconds (production keeps
Kafka's defaults: 7-day segments, dirty ratio 0.5, tombstones kept a day)."""


@pytest.fixture
def quick_cleaner_kafka(tmp_path: Path) -> Iterator[RunningService]:
    """A Kafka node of the test's own whose log cleaner looks for work every 200 ms
    (Kafka's default: 15 s)."""
    broker = start_kafka(tmp_path / "kafka", properties={"log.cleaner.backoff.ms": "200"})
    yield broker
    broker.stop()


def create_scores_topic(settings: Settings) -> None:
    """The scores topic as streamcrm creates it (compacted), with :data:`QUICK_COMPACTION`."""
    assert settings.kafka_bootstrap is not None
    spec = next(s for s in topic_specs(settings) if s.name == settings.topics.scores)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    spec.num_partitions,
                    spec.replication_factor,
                    topic_configs={**spec.topic_configs, **QUICK_COMPACTION},
                )
            ]
        )
    finally:
        admin.close()


def scores_of(settings: Settings, customer_id: str) -> list[Record]:
    """What a fresh reader of the scores topic finds under ``customer_id``: scores and the
    tombstone, if any."""
    assert settings.kafka_bootstrap is not None
    records = read_to_end(settings.kafka_bootstrap, settings.topics.scores)
    return [record for record in records if record.key == customer_id.encode()]


def test_after_an_erasure_compaction_leaves_no_score_of_the_customer_on_the_scores_topic(
    services: EmbeddedServices,
    quick_cleaner_kafka: RunningService,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    own = EmbeddedServices(quick_cleaner_kafka.address, services.redis_url, "kafka")
    # One partition: the later score that closes the tombstone's segment lands beside it.
    settings = isolated_settings(own, "compaction", tmp_path_factory).model_copy(
        update={"partitions": 1}
    )
    assert settings.kafka_bootstrap is not None
    create_scores_topic(settings)
    history = list(simulate(customers=6, days=90, seed=37).events)
    erased = sorted({event.customer_id for event in history})[0]
    kept = {event.customer_id for event in history} - {erased}

    with running_worker(settings, tmp_path / "worker.log"):
        reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
        send(settings, history)
        wanted = {event.event_id for event in history}
        reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})
        erasure = ErasureRequested(
            event_id="erase-compaction", customer_id=erased, occurred_at=datetime.now(UTC)
        )
        send_raw(
            settings, settings.topics.privacy, erased.encode(), erasure.model_dump_json().encode()
        )
        reader.wait_for(
            lambda records: any(r.key == erased.encode() and r.value is None for r in records)
        )
        tombstoned_at = time.monotonic()
        reader.close()
        # The control: the customer's scores were on the topic (a fresh reader may already
        # find fewer: the worker's sweeps append too, and so may close the segment sooner).
        published = [r for r in reader.records if r.key == erased.encode() and r.value]
        assert len(published) >= 2, published
        # A later score on the partition, once the tombstone's segment is a second old, rolls
        # a new segment: the tombstone's is closed and can be compacted.
        time.sleep(1.5)
        send(settings, [one_purchase("after-the-erasure")])
        wait_until(
            lambda: all(r.value is None for r in scores_of(settings, erased)),
            60,
            f"compaction to remove {erased}'s scores",
        )
        compacted_after_s = time.monotonic() - tombstoned_at
        remaining = scores_of(settings, erased)
        assert all(record.value is None for record in remaining)
        # Compaction kept the newest score of every other customer.
        assert settings.kafka_bootstrap is not None
        latest = {r.key for r in read_to_end(settings.kafka_bootstrap, settings.topics.scores)}
        assert {c.encode() for c in kept} <= latest
    print(
        f"{len(published)} scores of {erased} published, {len(remaining)} record left"
        f" ({'the tombstone' if remaining else 'not even the tombstone'}),"
        f" {compacted_after_s:.1f} s after the tombstone"
    )
