"""A Redis outage stalls scoring; it neither dead-letters good events nor loses them, even
when Redis comes back empty."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamcrm.core.events import PurchaseEvent
from streamcrm.services.embedded import EmbeddedServices, RunningService, free_port, start_redis
from streamcrm.services.kafka import ensure_topics
from tests.conftest import isolated_settings
from tests.integration.worker_harness import (
    TopicReader,
    eventually,
    get,
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


class RestartableRedis:
    """A redis-server of this test's own, stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.directory = directory
        self.port = free_port()
        self.service: RunningService = start_redis(directory, self.port)

    @property
    def address(self) -> str:
        return self.service.address

    def stop(self) -> None:
        self.service.stop()

    def start(self) -> None:
        self.service = start_redis(self.directory, self.port)


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    redis_server = RestartableRedis(tmp_path / "redis")
    yield redis_server
    redis_server.stop()


def test_events_sent_while_redis_is_down_are_scored_once_it_is_back(
    services: EmbeddedServices,
    restartable_redis: RestartableRedis,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    web_port = free_port()
    settings = isolated_settings(services, "outage", tmp_path_factory).model_copy(
        update={"redis_url": restartable_redis.address, "web_port": web_port}
    )
    base = f"http://127.0.0.1:{web_port}"
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings, settings.kafka_bootstrap)
    scores_seen = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
    letters = TopicReader(settings.kafka_bootstrap, settings.topics.deadletter)
    try:
        with running_worker(settings, tmp_path / "worker.log"):
            send(settings, [purchase(1)])
            scores_seen.wait_for(lambda records: len(records) >= 1)
            eventually(lambda: True if get(f"{base}/readyz")[0] == 200 else None, "ready")

            restartable_redis.stop()
            send(settings, [purchase(2)])
            time.sleep(3)  # the worker meets the outage and retries
            # Not ready (Redis unreachable), yet alive: an orchestrator must not restart it.
            status, body, _ = get(f"{base}/readyz")
            assert status == 503
            assert json.loads(body)["checks"] == {
                "broker": True,
                "redis": False,
                "partitions_assigned": True,
            }
            assert get(f"{base}/healthz")[0] == 200
            # Redis restarts empty (no persistence): the worker finds the partition's offset
            # mark gone, re-reads the partition from the start and rebuilds the state.
            restartable_redis.start()
            scores_seen.wait_for(
                lambda records: "outage-p2" in {s.event_id for s in scores(records)}
            )
            eventually(lambda: True if get(f"{base}/readyz")[0] == 200 else None, "ready again")

        published = scores(scores_seen.drain(1.0))
        # p1 is re-applied to the empty Redis; its re-made score goes out again only if it
        # differs from the one already published (the outbox skips exact copies).
        assert [s.event_id for s in published] in (
            ["outage-p1", "outage-p2"],
            ["outage-p1", "outage-p1", "outage-p2"],
        )
        if len(published) == 3:
            assert published[0] != published[1]
        assert letters.drain(seconds=1.0) == []
        log = (tmp_path / "worker.log").read_text()
        assert "Redis unavailable" in log and "Redis lost writes" in log
        state, _ = redis_state(settings, "outage")
        assert state is not None and state.recent_event_ids == ("outage-p1", "outage-p2")
    finally:
        scores_seen.close()
        letters.close()
