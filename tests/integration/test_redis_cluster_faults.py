"""A Redis Cluster master killed with ``kill -9`` mid-stream: its replica takes over, the old
master comes back as a replica, and every customer's state still equals the state computed
straight from the events.

Three ways: the replica current when its master dies (replication on loopback keeps up); the
replica cut off a third of the way in (frozen, its link closed) while the master takes 150 or
more events' writes it never receives; and the replica cut off from the start, so that it
takes over with nothing of the stream (what a replica caught in a full resync holds). The
failover drops what the replica lacks, and the worker's lost-write catch-up applies it again
(outputs at least once, as after a Redis power loss).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from streamcrm.core.events import CampaignTouch
from streamcrm.services.embedded import EmbeddedServices, RunningService
from streamcrm.services.kafka import ensure_topics
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from streamcrm.store import offsets_key
from streamcrm.store.base import partition_of
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
from tests.integration.worker_harness import TopicReader, redis_client, running_worker, send
from tests.redis_cluster import LocalRedisCluster, local_redis_cluster

pytestmark = pytest.mark.integration


def marks_and_ends(settings: Settings) -> str:
    """Each input topic partition's stored offset mark against its end offset: whether what
    is missing was never applied or applied and lost."""
    assert settings.kafka_bootstrap is not None
    client = redis_client(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        marks: dict[str, str] = {}
        for partition in range(settings.partitions):
            for field, mark in client.hgetall(
                offsets_key(settings.redis_namespace, partition)
            ).items():
                name = field.decode() if isinstance(field, bytes) else str(field)
                if not name.endswith("|newest"):
                    marks[name.split("|")[0].rsplit(".", 1)[-1] + f"[{name.split('|')[2]}]"] = mark
        topics = [*settings.topics.inputs, settings.topics.marketing]
        wanted = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        ends = {f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}]": end
                for tp, end in consumer.end_offsets(wanted).items()}  # fmt: skip
    finally:
        consumer.close()
        client.close()
    return "marks (next offset) / ends: " + ", ".join(
        f"{name} {int(marks[name]) + 1 if name in marks else '-'}/{end}"
        for name, end in sorted(ends.items())
    )


def freeze_and_cut_off(
    cluster: LocalRedisCluster, master: RunningService, replica: RunningService
) -> None:
    """Stop ``replica`` following ``master``: frozen (``SIGSTOP``), its link closed, so the
    master's writes from now on reach no replica."""
    os.kill(replica.process.pid, signal.SIGSTOP)
    cluster.cut_replication(master)


@pytest.fixture
def own_cluster() -> Iterator[LocalRedisCluster]:
    """A cluster of this test's own: it kills one of its masters."""
    with local_redis_cluster() as cluster:
        yield cluster


MID_STREAM_CUT = pytest.mark.skipif(
    not os.environ.get("STREAMCRM_TEST_MID_STREAM_CUT"),
    reason="run with STREAMCRM_TEST_MID_STREAM_CUT=1: its rare loss under load (a batch's"
    " later step holding pre-batch marks, carried over the failover by redis-py) is fixed;"
    " 9 runs since were exact, more are wanted before it joins every ./dev test"
    " (docs/operations.md, 'A failover that drops writes')",
)


@pytest.mark.parametrize(
    "replica",
    ["current", pytest.param("cut off", marks=MID_STREAM_CUT), "cut off from the start"],
)
def test_a_killed_master_whose_replica_takes_over_loses_and_double_counts_nothing(
    replica: str,
    services: EmbeddedServices,
    own_cluster: LocalRedisCluster,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = isolated_settings(
        # Topics, group and namespace of this variant's own: the session's broker keeps
        # every variant's topics (sharing them, a variant read its predecessor's stream).
        services,
        f"redis-cluster-kill-{replica.replace(' ', '-')}",
        tmp_path_factory,
    ).model_copy(update={"redis_url": own_cluster.url, "redis_cluster": True})
    assert settings.kafka_bootstrap is not None
    history = with_campaign(list(simulate(customers=260, days=365, seed=31).events), seed=31)
    customers = sorted({e.customer_id for e in history})
    scored = len(scored_events(history))
    touches = sum(isinstance(e, CampaignTouch) for e in history)
    ensure_topics(settings, settings.kafka_bootstrap)
    # The master of partition 0's slot (with the default four partitions and three masters,
    # it holds partition 1's too): half the stream's state is on it.
    marks = offsets_key(settings.redis_namespace, 0)
    victim = own_cluster.node_of(marks)
    # The victim's customers: only their writes can be dropped. Counting every customer's, the
    # 150 events "on the master alone" could all be other masters' (a run that lost nothing
    # and so, rightly, never rewound failed the rewind check below).
    victims = {
        p
        for p in range(settings.partitions)
        if own_cluster.node_of(offsets_key(settings.redis_namespace, p)) is victim
    }
    on_victim = [c for c in customers if partition_of(c, settings.partitions) in victims]
    metrics = TopicReader(settings.kafka_bootstrap, settings.topics.model_metrics)
    follower = own_cluster.replica_of(victim)
    cut = 0
    if replica == "cut off from the start":
        # The replica holds none of this stream: the failover drops all the master took.
        freeze_and_cut_off(own_cluster, victim, follower)
    try:
        with running_worker(settings, tmp_path / "worker.log") as worker:
            send(settings, history)
            wait_until(
                lambda: applied_events(settings, customers) >= scored // 3,
                120,
                "a third of the events to be applied",
            )
            if replica == "cut off":
                # The replica stops following: the master takes writes it never receives,
                # and the failover drops them (the lost-write catch-up must redo them).
                freeze_and_cut_off(own_cluster, victim, follower)
                before = applied_events(settings, on_victim)
                wait_until(
                    lambda: applied_events(settings, on_victim) >= before + 150,
                    60,
                    "150 more events applied on the master alone",
                )
                cut = applied_events(settings, on_victim) - before
            elif replica == "cut off from the start":
                cut = applied_events(settings, customers)
            index = own_cluster.kill(victim)
            if replica != "current":
                os.kill(follower.process.pid, signal.SIGCONT)
            failover_s = own_cluster.wait_for_failover(marks, victim)
            try:
                wait_until(
                    lambda: (
                        applied_events(settings, customers) >= scored
                        and touches_applied(settings) >= touches
                    ),
                    180,
                    "every event to be applied and every touch counted",
                )
                stalled = ""
            except AssertionError as timed_out:  # the comparison below says what is missing
                stalled = f"{timed_out}; {marks_and_ends(settings)}"
                # mode's worker dumps every thread's and task's stack on SIGUSR1: what waits.
                os.kill(worker.pid, signal.SIGUSR1)
                time.sleep(3)
                print("".join((tmp_path / "worker.log").read_text(errors="replace")[-60_000:]))
            # The old master comes back, as its replica's replica (its newer writes dropped).
            own_cluster.restart(index)
            own_cluster.wait_until_ok(replicas=3)
            time.sleep(2 * settings.metrics_interval_s + 1)
            metrics.wait_for(lambda records: worker_report(records, worker.pid) is not None)
            report = worker_report(metrics.drain(1.5), worker.pid)
    finally:
        metrics.close()

    stored = stored_states(settings, customers)
    expected = expected_states(history, settings.scoring)
    lost, doubled = lost_and_doubled(expected, stored)
    differing = {
        c: {k: (v, comparable(expected[c])[k]) for k, v in comparable(stored[c]).items()
            if v != comparable(expected[c])[k]}
        for c in customers
        if comparable(stored[c]) != comparable(expected[c])
    }  # fmt: skip
    if differing:  # shown with a failure: which customers, which fields (stored, expected)
        print(f"{len(differing)} customers differ:", json.dumps(differing, default=str)[:20_000])
    counters = report.events if report is not None else None
    assert (lost, doubled, differing) == (0, 0, {}), f"{stalled}; worker's counters {counters}"
    assert not stalled, stalled
    assert report is not None
    rewinds = report.events.get("rewinds", 0)
    if replica != "current":
        assert rewinds > 0, "the failover dropped writes but the worker never rewound"
    # At least once: a write the failover lost after its outputs went out is re-applied, and
    # its outputs go out again (same ids); none may be missing.
    outputs = outputs_on_topics(settings, history)
    assert (outputs.lost, outputs.alerts_unexpected) == (0, 0), outputs
    if replica == "current":
        assert outputs.duplicated == 0, outputs
    campaigns = check_campaigns(settings, history, alerts=outputs.customers_rewritten == 0)
    assert campaigns.touches_expected > 0, campaigns
    assert campaigns.arms_differing == 0, campaigns
    record_fault(
        f"Redis Cluster master kill -9, replica ({replica}) takes over",
        settings,
        events_in=len(history),
        reflected=len(history) - lost,
        lost=lost,
        duplicated=doubled,
        note=f"failover in {failover_s:.1f} s, {cut} events applied on the master alone;"
        f" {rewinds} partitions rewound,"
        f" {report.events.get('re-applied', 0)} messages re-applied; {outputs}; {campaigns}",
        outputs=outputs.row,
    )
