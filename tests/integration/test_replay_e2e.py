"""``streamcrm replay`` on real services: a shuffled CSV history → Tansu → worker → Redis.

The history is written out of event-time order on purpose: the worker counts an event more
than the allowed lateness older than what it has seen as late and does not apply it, so only
a replay in event-time order gives the figures computed here from the raw events.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from streamcrm.cli.replay import write_history
from streamcrm.core.events import Event, PurchaseEvent, RefundEvent
from streamcrm.core.records import CustomerScore
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.processes import worker_environment
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings
from tests.integration.worker_harness import TopicReader, redis_state, running_worker, scores

pytestmark = pytest.mark.integration


def expected_money(events: list[Event]) -> dict[str, tuple[int, float, int]]:
    """Per customer, straight from the raw events: orders, net monetary value, events."""
    orders: dict[str, int] = defaultdict(int)
    net: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for event in events:
        count[event.customer_id] += 1
        if isinstance(event, PurchaseEvent):
            orders[event.customer_id] += 1
            net[event.customer_id] += event.amount
        elif isinstance(event, RefundEvent):
            net[event.customer_id] -= event.amount
    return {cid: (orders[cid], max(net[cid], 0.0), count[cid]) for cid in count}


def test_a_shuffled_csv_history_replayed_by_the_cli_is_scored_in_event_time_order(
    services: EmbeddedServices,
    unique_name: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = isolated_settings(services, unique_name, tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    events = list(simulate(customers=15, days=120, seed=21).events)
    shuffled = random.Random(21).sample(events, len(events))
    assert shuffled != events
    history = tmp_path / "history.csv"
    write_history(history, shuffled)

    with running_worker(settings, tmp_path / "worker.log"):
        reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
        try:
            replayed = subprocess.run(
                [sys.executable, "-m", "streamcrm", "replay", str(history)],
                env=worker_environment(settings),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
            assert f"published {len(events):,} events" in replayed.stdout
            assert "0 rejected" in replayed.stdout

            wanted = {event.event_id for event in events}
            reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})
        finally:
            reader.close()

        final: dict[str, CustomerScore] = {}
        for score in scores(reader.records):
            final[score.customer_id] = score  # one partition per customer: offset order
        last_event_at = {event.customer_id: event.occurred_at for event in events}
        expected = expected_money(events)
        assert set(final) == set(expected)
        for customer_id, (orders, monetary, applied) in expected.items():
            score = final[customer_id]
            state, raw_score = redis_state(settings, customer_id)
            assert state is not None and raw_score is not None
            assert CustomerScore.model_validate_json(raw_score) == score
            assert score.frequency == state.order_count == orders
            # Money is kept in whole cents, so each amount may move by half a cent.
            assert score.monetary == pytest.approx(monetary, abs=0.005 * applied + 1e-9)
            assert state.monetary == score.monetary
            assert state.events_applied == applied  # none came late, none was dropped
            assert score.as_of == last_event_at[customer_id]
