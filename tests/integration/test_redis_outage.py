"""A Redis outage stalls scoring; it neither dead-letters good events nor loses them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamcrm.embedded import EmbeddedServices, free_port, start_redis
from streamcrm.events import PurchaseEvent
from streamcrm.kafka_io import ensure_topics
from tests.conftest import isolated_settings
from tests.integration.worker_harness import (
    TopicReader,
    redis_state,
    running_worker,
    scores,
    send,
)

pytestmark = pytest.mark.integration


def purchase(n: int) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"outage-p{n}",
        customer_id="outage",
        order_id=f"o{n}",
        amount=10.0,
        items=1,
        channel="store",
        occurred_at=datetime(2026, 5, n, tzinfo=UTC),
    )


def test_events_sent_while_redis_is_down_are_scored_once_it_is_back(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    own_redis = start_redis(redis_dir, port)
    settings = isolated_settings(services, "outage", tmp_path_factory).model_copy(
        update={"redis_url": own_redis.address}
    )
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings, settings.kafka_bootstrap)
    scores_seen = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
    letters = TopicReader(settings.kafka_bootstrap, settings.topics.deadletter)
    try:
        with running_worker(settings, tmp_path / "worker.log"):
            send(settings, [purchase(1)])
            scores_seen.wait_for(lambda records: len(records) >= 1)

            own_redis.stop()
            send(settings, [purchase(2)])
            time.sleep(3)  # the worker meets the outage and retries
            # Redis restarts empty (no persistence): the state begins again from event 2.
            own_redis = start_redis(redis_dir, port)
            scores_seen.wait_for(lambda records: len(records) >= 2)

        assert [s.event_id for s in scores(scores_seen.records)] == ["outage-p1", "outage-p2"]
        assert letters.drain(seconds=1.0) == []
        state, _ = redis_state(settings, "outage")
        assert state is not None and state.recent_event_ids == ("outage-p2",)
    finally:
        scores_seen.close()
        letters.close()
        own_redis.stop()
