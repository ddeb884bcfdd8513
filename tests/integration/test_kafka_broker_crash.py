"""Apache Kafka killed with SIGKILL mid-stream and restarted on its log directory, while a
worker keeps running: the worker reconnects and loses and double-counts nothing in its state;
its outputs go out at least once.

The broker is the test's own (a persistent log directory in ``tmp_path``), restarted on the
same ports so the running worker's bootstrap and advertised addresses stay right. Every
event is sent (and acknowledged, ``acks=all``) before the kill; the kill lands while the
worker is applying them, saving states, producing scores and committing offsets.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from streamcrm.core.events import CampaignTouch, PurchaseEvent
from streamcrm.services.apache_kafka import start_kafka
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.processes import free_port
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import (
    applied_events,
    comparable,
    expected_states,
    lost_and_doubled,
    outputs_on_topics,
    scored_events,
    stored_states,
    touches_applied,
    wait_until,
    with_campaign,
)
from tests.integration.worker_harness import running_worker, send

pytestmark = pytest.mark.integration


def test_a_broker_killed_mid_stream_and_restarted_loses_and_double_counts_nothing(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path / "kafka-data"
    ports = {"broker_port": free_port(), "controller_port": free_port()}
    broker = start_kafka(tmp_path / "first", data_dir=data_dir, **ports)
    own = EmbeddedServices(broker.address, services.redis_url, "kafka")
    settings = isolated_settings(own, "broker-crash", tmp_path_factory)
    history = with_campaign(list(simulate(customers=200, days=365, seed=31).events), seed=31)
    customers = sorted({e.customer_id for e in history})
    scored = len(scored_events(history))
    touches = sum(isinstance(e, CampaignTouch) for e in history)
    restarted = None
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            send(settings, history)
            wait_until(
                lambda: applied_events(settings, customers) >= len(history) // 3,
                120,
                "a third of the events to be applied",
            )
            broker.kill()  # SIGKILL: no clean shutdown
            applied_at_kill = applied_events(settings, customers)
            assert applied_at_kill < scored, "the kill came too late to interrupt the stream"
            down_at = time.monotonic()
            restarted = start_kafka(tmp_path / "second", data_dir=data_dir, **ports)
            back_after_s = time.monotonic() - down_at
            wait_until(
                lambda: (
                    applied_events(settings, customers) >= scored
                    and touches_applied(settings) >= touches
                ),
                240,
                "every event to be applied and every touch counted after the restart",
            )
            caught_up_after_s = time.monotonic() - down_at
            time.sleep(3)  # anything still being redelivered
            assert worker.poll() is None, "the worker died while the broker was down"
        stored = stored_states(settings, customers)
        expected = expected_states(history, settings.scoring)
        assert set(stored) == set(expected)
        lost, doubled = lost_and_doubled(expected, stored)
        assert (lost, doubled) == (0, 0)
        purchases = Counter(e.customer_id for e in history if isinstance(e, PurchaseEvent))
        assert all(stored[c].order_count == purchases[c] for c in customers)
        assert [c for c in customers if comparable(stored[c]) != comparable(expected[c])] == []
        outputs = outputs_on_topics(settings, history)
        # Outputs at least once: a send whose acknowledgement died with the broker is sent
        # again by the producer's own retry (Faust's producer is not idempotent outside
        # transactions); same ids, never lost. Seen: 1 alert of 706 in one CI run.
        assert (outputs.lost, outputs.alerts_unexpected) == (0, 0), outputs
    finally:
        broker.stop()
        if restarted is not None:
            restarted.stop()
    record_fault(
        "broker kill -9 mid-stream, restart",
        settings,
        events_in=len(history),
        reflected=len(history) - lost,
        lost=lost,
        duplicated=doubled,
        note=f"killed after {applied_at_kill} applied; the broker answered again"
        f" {back_after_s:.0f} s after the kill (same log directory and ports) and the running"
        f" worker had applied everything {caught_up_after_s:.0f} s after it; {outputs}",
        outputs=outputs.row,
    )
