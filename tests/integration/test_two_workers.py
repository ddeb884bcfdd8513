"""Two workers in one consumer group score with one shared model, not one model each."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcrm.core.records import ModelMetrics
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import Record
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings
from tests.integration.worker_harness import (
    TopicReader,
    running_worker,
    scores,
    send,
    settled_model_version,
)

pytestmark = pytest.mark.integration


def test_two_workers_score_every_partition_with_the_same_model_version(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "two-workers", tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    history = list(simulate(customers=40, days=200, seed=41).events)
    first = settings.model_copy(update={"data_dir": tmp_path / "w1"})
    second = settings.model_copy(update={"data_dir": tmp_path / "w2"})

    with (
        running_worker(first, tmp_path / "w1.log"),
        running_worker(second, tmp_path / "w2.log"),
    ):
        reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
        send(settings, history)
        wanted = {event.event_id for event in history}
        reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})

        # Let the shared learner take in everything and both workers load its checkpoint.
        settled = settled_model_version(settings)

        probes = [
            event.model_copy(update={"event_id": f"probe-{event.customer_id}"})
            for event in {e.customer_id: e for e in history}.values()
        ]
        send(settings, probes)
        probe_ids = {probe.event_id for probe in probes}
        reader.wait_for(lambda records: probe_ids <= {s.event_id for s in scores(records)})
        probe_scores = [s for s in scores(reader.records) if s.event_id in probe_ids]
        probe_partitions = {
            r.partition
            for r in reader.records
            if r.value is not None and b'"event_id":"probe-' in r.value
        }
        reader.close()
        reports = TopicReader(settings.kafka_bootstrap, settings.topics.model_metrics)
        reports.wait_for(lambda records: len(scoring_workers(records)) == 2)
        reports.close()

    # Both workers scored, probes landed on every partition, and every probe carries one
    # version: the checkpoint of the one shared learner.
    assert probe_partitions == set(range(settings.partitions))
    assert {s.model_version for s in probe_scores} == {settled}


def scoring_workers(records: list[Record]) -> set[str]:
    """Workers whose latest metrics report says they scored events."""
    latest = {}
    for record in records:
        report = ModelMetrics.model_validate_json(record.value or b"")
        latest[report.worker] = report
    return {worker for worker, report in latest.items() if report.events.get("scored", 0) > 0}
