"""Redis restarts mid-stream (graceful, kill -9, power loss that cuts the AOF tail): every
customer's state still equals the state computed straight from the events.

Redis runs with an append-only file, fsynced every second, as in production. When it comes
back without its last writes, the worker finds the partition's offset mark behind what it had
applied, rewinds the consumer to the mark and applies those messages again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamcrm.core.events import CampaignTouch
from streamcrm.services.embedded import EmbeddedServices, RunningService, free_port, start_redis
from streamcrm.services.kafka import ensure_topics
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import (
    applied_events,
    check_campaigns,
    comparable,
    expected_states,
    lost_and_doubled,
    outputs_on_topics,
    scored_events,
    stored_states,
    touches_applied,
    wait_until,
    with_campaign,
    worker_report,
)
from tests.integration.worker_harness import TopicReader, running_worker, send

pytestmark = pytest.mark.integration


class PersistentRedis:
    """A redis-server of this test's own with an AOF, restarted on the same port and files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.directory = directory
        self.port = free_port()
        self.service: RunningService = start_redis(directory, self.port, append_only=True)

    @property
    def address(self) -> str:
        return self.service.address

    def start(self) -> None:
        """Start again on the same files; return once the AOF is loaded (Redis listens, and
        answers BusyLoadingError, while it loads)."""
        self.service = start_redis(self.directory, self.port, append_only=True)
        client = redis.Redis.from_url(self.address)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.ping()
                    return
                except redis.exceptions.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: Redis flushes and fsyncs its AOF, then exits."""
        self.service.stop()

    def kill(self) -> None:
        self.service.kill()

    def cut_aof_tail(self, keep: float) -> int:
        """Simulate a power loss: keep only the first ``keep`` share of the newest AOF part.

        Returns the bytes cut. Redis loads a truncated AOF (``aof-load-truncated yes``) and
        drops an incomplete MULTI/EXEC whole, so each cut write is lost entirely.
        """
        newest = max(
            self.directory.glob("appendonlydir/*.incr.aof"), key=lambda p: p.stat().st_mtime
        )
        size = newest.stat().st_size
        with newest.open("r+b") as aof:
            aof.truncate(int(size * keep))
        return size - int(size * keep)


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.mark.parametrize("fault", ["graceful restart", "kill -9", "power loss (AOF tail cut)"])
def test_redis_restarting_mid_stream_loses_and_double_counts_nothing(
    fault: str,
    services: EmbeddedServices,
    persistent_redis: PersistentRedis,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    name = "redis-" + fault.split()[0].replace("-", "")
    settings = isolated_settings(services, name, tmp_path_factory).model_copy(
        update={"redis_url": persistent_redis.address}
    )
    assert settings.kafka_bootstrap is not None
    history = with_campaign(list(simulate(customers=260, days=365, seed=29).events), seed=29)
    customers = sorted({e.customer_id for e in history})
    scored = len(scored_events(history))
    touches = sum(isinstance(e, CampaignTouch) for e in history)
    ensure_topics(settings, settings.kafka_bootstrap)
    metrics = TopicReader(settings.kafka_bootstrap, settings.topics.model_metrics)
    rolled_back = 0
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            send(settings, history)
            wait_until(
                lambda: applied_events(settings, customers) >= scored // 3,
                120,
                "a third of the events to be applied",
            )
            if fault == "graceful restart":
                persistent_redis.stop()
                time.sleep(1.0)
                persistent_redis.start()
            elif fault == "kill -9":
                persistent_redis.kill()
                time.sleep(1.0)
                persistent_redis.start()
            else:
                os.kill(worker.pid, signal.SIGSTOP)  # freeze it, to count what the cut loses
                try:
                    time.sleep(1.5)  # the AOF is fsynced every second
                    before = applied_events(settings, customers)
                    persistent_redis.kill()
                    persistent_redis.cut_aof_tail(keep=0.7)
                    persistent_redis.start()
                    rolled_back = before - applied_events(settings, customers)
                finally:
                    os.kill(worker.pid, signal.SIGCONT)
                assert rolled_back > 0, "the cut removed no applied write: nothing was tested"
            wait_until(
                lambda: (
                    applied_events(settings, customers) >= scored
                    and touches_applied(settings) >= touches
                ),
                180,
                "every event to be applied and every touch counted",
            )
            time.sleep(2 * settings.metrics_interval_s + 1)
            metrics.wait_for(lambda records: worker_report(records, worker.pid) is not None)
            report = worker_report(metrics.drain(1.5), worker.pid)
    finally:
        metrics.close()

    stored = stored_states(settings, customers)
    expected = expected_states(history, settings.scoring)
    lost, doubled = lost_and_doubled(expected, stored)
    assert (lost, doubled) == (0, 0)
    mismatched = [c for c in customers if comparable(stored[c]) != comparable(expected[c])]
    assert mismatched == []
    assert report is not None
    rewinds = report.events.get("rewinds", 0)
    if rolled_back:
        assert rewinds > 0, "writes were lost but the worker never rewound"
    # At least once: a write Redis lost after its outputs went out is re-applied, and its
    # outputs go out again (same ids); none may be missing.
    outputs = outputs_on_topics(settings, history)
    assert (outputs.lost, outputs.alerts_unexpected) == (0, 0), outputs
    if not rolled_back:
        assert outputs.duplicated == 0, outputs
    # Campaign figures exact; each churn alert counted once (not checked where Redis lost
    # writes whose alerts had gone out: those re-made may differ, see check_outputs).
    campaigns = check_campaigns(settings, history, alerts=outputs.customers_rewritten == 0)
    assert campaigns.touches_expected > 0, campaigns
    assert campaigns.arms_differing == 0, campaigns
    if not outputs.customers_rewritten:
        assert (campaigns.alerts_published or 0) > 0 and campaigns.alerts_unaccounted == 0, (
            campaigns
        )
    record_fault(
        f"Redis {fault}",
        settings,
        events_in=len(history),
        reflected=len(history) - lost,
        lost=lost,
        duplicated=doubled,
        note=f"{rolled_back} Redis writes rolled back; {rewinds} partitions rewound,"
        f" {report.events.get('re-applied', 0)} messages re-applied; {outputs}; {campaigns}",
        outputs=outputs.row,
    )
