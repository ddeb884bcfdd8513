"""A worker killed with SIGKILL mid-stream loses nothing and counts nothing twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from streamcrm.embedded import EmbeddedServices
from streamcrm.events import Event, ModelMetrics, PurchaseEvent
from streamcrm.kafka_io import ensure_topics
from streamcrm.settings import Settings
from streamcrm.simulator import simulate
from streamcrm.state import CustomerState, apply
from streamcrm.store import customer_key
from tests.conftest import isolated_settings
from tests.integration.worker_harness import TopicReader, running_worker, send

pytestmark = pytest.mark.integration

EVENTS_AT_LEAST = 20_000
ARRIVAL_ORDER_FIELDS = {"pending_snapshots", "last_snapshot_at", "recent_event_ids"}
"""State fields that depend on when the worker's label sweeps ran or on the interleaving of
topics, not on the events themselves: everything else must match exactly."""


def expected_states(events: list[Event]) -> dict[str, CustomerState]:
    """Every customer's state computed straight from the events, in one process, no broker."""
    states: dict[str, CustomerState | None] = {}
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        states[event.customer_id] = apply(states.get(event.customer_id), event).state
    return {cid: state for cid, state in states.items() if state is not None}


def stored_states(settings: Settings, customer_ids: list[str]) -> dict[str, CustomerState]:
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline()
        for cid in customer_ids:
            pipe.hget(customer_key(settings.redis_namespace, cid), "state")
        raws = pipe.execute()
    finally:
        client.close()
    return {
        cid: CustomerState.model_validate_json(raw)
        for cid, raw in zip(customer_ids, raws, strict=True)
        if raw is not None
    }


def applied_events(settings: Settings, customer_ids: list[str]) -> int:
    return sum(s.events_applied for s in stored_states(settings, customer_ids).values())


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.2)


def comparable(state: CustomerState) -> dict[str, object]:
    return state.model_dump(mode="json", exclude=ARRIVAL_ORDER_FIELDS)


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
        metrics.wait_for(lambda records: _second_worker_report(records, second.pid) is not None)
        report = _second_worker_report(metrics.drain(1.5), second.pid)
    metrics.close()

    stored = stored_states(settings, customers)
    expected = expected_states(history)
    assert set(stored) == set(expected)
    lost = sum(max(expected[c].events_applied - stored[c].events_applied, 0) for c in customers)
    doubled = sum(max(stored[c].events_applied - expected[c].events_applied, 0) for c in customers)
    assert (lost, doubled) == (0, 0)
    purchases = Counter(e.customer_id for e in history if isinstance(e, PurchaseEvent))
    assert all(stored[c].order_count == purchases[c] for c in customers)
    mismatched = [c for c in customers if comparable(stored[c]) != comparable(expected[c])]
    assert mismatched == []
    # The crash really caused redelivery: the restarted worker met events already applied.
    assert report is not None and report.events.get("duplicate", 0) > 0
    print(
        f"\nN={len(history)} events, {len(customers)} customers; killed after {applied_at_kill}"
        f" applied; redelivered and recognised as already applied:"
        f" {report.events.get('duplicate', 0)}; lost 0, double-counted 0"
    )


def _second_worker_report(records: list, pid: int) -> ModelMetrics | None:
    reports = [
        ModelMetrics.model_validate_json(r.value)
        for r in records
        if r.value is not None and f":{pid}".encode() in (r.key or b"")
    ]
    return reports[-1] if reports else None
