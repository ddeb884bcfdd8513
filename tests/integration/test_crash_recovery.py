"""A worker killed with SIGKILL mid-stream loses nothing and counts nothing twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from streamcrm.embedded import EmbeddedServices
from streamcrm.events import PurchaseEvent
from streamcrm.kafka_io import ensure_topics
from streamcrm.simulator import simulate
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import (
    applied_events,
    comparable,
    expected_states,
    lost_and_doubled,
    stored_states,
    wait_until,
    worker_report,
)
from tests.integration.worker_harness import TopicReader, running_worker, send

pytestmark = pytest.mark.integration

EVENTS_AT_LEAST = 20_000


def test_a_worker_killed_mid_stream_and_restarted_loses_and_double_counts_nothing(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "crash-recovery", tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    history = list(simulate(customers=620, days=365, seed=23).events)
    assert len(history) >= EVENTS_AT_LEAST
    customers = sorted({e.customer_id for e in history})
    ensure_topics(settings, settings.kafka_bootstrap)
    metrics = TopicReader(settings.kafka_bootstrap, settings.topics.model_metrics)

    with running_worker(settings, tmp_path / "first.log") as first:
        send(settings, history)
        wait_until(
            lambda: applied_events(settings, customers) >= len(history) // 3,
            120,
            "a third of the events to be applied",
        )
        first.kill()  # SIGKILL: no shutdown, no final commit
        first.wait()
    applied_at_kill = applied_events(settings, customers)
    assert applied_at_kill < len(history), "the kill came too late to interrupt the stream"

    with running_worker(settings, tmp_path / "second.log") as second:
        wait_until(
            lambda: applied_events(settings, customers) >= len(history),
            240,
            "every event to be applied",
        )
        time.sleep(2 * settings.metrics_interval_s + 1)  # anything still being redelivered
        metrics.wait_for(lambda records: worker_report(records, second.pid) is not None)
        report = worker_report(metrics.drain(1.5), second.pid)
    metrics.close()

    stored = stored_states(settings, customers)
    expected = expected_states(history)
    assert set(stored) == set(expected)
    lost, doubled = lost_and_doubled(expected, stored)
    assert (lost, doubled) == (0, 0)
    purchases = Counter(e.customer_id for e in history if isinstance(e, PurchaseEvent))
    assert all(stored[c].order_count == purchases[c] for c in customers)
    mismatched = [c for c in customers if comparable(stored[c]) != comparable(expected[c])]
    assert mismatched == []
    # The crash really caused redelivery: the restarted worker met events already applied.
    assert report is not None and report.events.get("duplicate", 0) > 0
    record_fault(
        "worker kill -9 mid-stream, restart",
        events_in=len(history),
        reflected=len(history) - lost,
        lost=lost,
        duplicated=doubled,
        note=f"killed after {applied_at_kill} applied; {report.events.get('duplicate', 0)}"
        " redelivered and recognised as already applied",
    )
