"""The whole pipeline on real services: kafka-python → broker → Faust worker → Redis → scores.

The tests sharing one worker run three times: on Tansu (the embedded default) and on Apache
Kafka (the broker production runs) with one Redis, and on Apache Kafka with a Redis Cluster.
Each expectation is computed here, independently, from the raw events the test produced.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.cli.status import format_status, latest_reports
from streamcrm.core.events import (
    CancellationEvent,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)
from streamcrm.core.records import CustomerScore, ModelMetrics
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import Record
from streamcrm.services.processes import worker_environment
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings, services_on
from tests.integration.worker_harness import (
    TopicReader,
    dead_letters,
    redis_model_version,
    redis_state,
    running_worker,
    scores,
    send,
    send_raw,
)
from tests.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


STACKS = [("tansu", "redis"), ("kafka", "redis"), ("kafka", "redis_cluster")]
"""Broker and store of each run of the module: Tansu (the embedded default) and Apache Kafka
on one Redis, and Apache Kafka on a Redis Cluster (three masters, a replica each): what
production runs once state outgrows one Redis. The same expectations on each."""


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(stack) for stack in STACKS])
def shared_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    broker, store = request.param
    services = services_on(request, broker)
    settings = isolated_settings(services, f"e2e-shared-{broker}-{store}", tmp_path_factory)
    if store == "redis":
        return settings
    cluster: LocalRedisCluster = request.getfixturevalue("redis_cluster")
    return settings.model_copy(update={"redis_url": cluster.url, "redis_cluster": True})


@pytest.fixture(scope="module")
def worker(shared_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(shared_settings, log):
        yield


@pytest.fixture(scope="module")
def score_reader(shared_settings: Settings, worker: None) -> Iterator[TopicReader]:
    assert shared_settings.kafka_bootstrap is not None
    reader = TopicReader(shared_settings.kafka_bootstrap, shared_settings.topics.scores)
    yield reader
    reader.close()


def purchase(customer: str, n: int, amount: float, day: float) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"{customer}-p{n}",
        customer_id=customer,
        order_id=f"{customer}-o{n}",
        amount=amount,
        items=1,
        channel="web",
        occurred_at=T0 + timedelta(days=day),
    )


def expected_aggregates(events: list[Event]) -> dict[str, dict[str, object]]:
    """Per-customer figures computed straight from the raw events, not by streamcrm."""
    out: dict[str, dict[str, object]] = defaultdict(
        lambda: {
            "orders": 0,
            "gross": 0.0,
            "refunds": 0.0,
            "ratings": [],
            "opened": 0,
            "resolved": 0,
            "last_purchase": None,
            "last_event": None,
            "cancelled": False,
        }
    )
    for event in events:
        agg = out[event.customer_id]
        last_event = agg["last_event"]
        agg["last_event"] = max(last_event, event.occurred_at) if last_event else event.occurred_at  # type: ignore[call-overload]
        if isinstance(event, PurchaseEvent):
            agg["orders"] = int(agg["orders"]) + 1  # type: ignore[call-overload]
            agg["gross"] = float(agg["gross"]) + event.amount  # type: ignore[arg-type]
            last = agg["last_purchase"]
            agg["last_purchase"] = max(last, event.occurred_at) if last else event.occurred_at  # type: ignore[call-overload]
        elif isinstance(event, RefundEvent):
            agg["refunds"] = float(agg["refunds"]) + event.amount  # type: ignore[arg-type]
        elif isinstance(event, FeedbackEvent):
            low, high = (1, 5) if event.scale == "csat" else (0, 10)
            agg["ratings"].append((event.rating - low) / (high - low))  # type: ignore[union-attr]
        elif isinstance(event, SupportEvent):
            if event.action == "opened":
                agg["opened"] = int(agg["opened"]) + 1  # type: ignore[call-overload]
            elif event.action == "resolved":
                agg["resolved"] = int(agg["resolved"]) + 1  # type: ignore[call-overload]
        elif isinstance(event, CancellationEvent):
            agg["cancelled"] = True
    return out


def test_scores_and_redis_state_match_an_independent_computation(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    history = simulate(customers=25, days=150, seed=11).events
    events = [e.model_copy(update={"customer_id": f"sim-{e.customer_id}"}) for e in history]
    send(shared_settings, events)
    wanted_ids = {e.event_id for e in events}

    score_reader.wait_for(lambda records: wanted_ids <= {s.event_id for s in scores(records)})

    latest = {}
    for score in scores(score_reader.records):
        if score.event_id in wanted_ids:
            latest[score.customer_id] = score  # one partition per customer: offset order
    expected = expected_aggregates(events)
    assert set(latest) == set(expected)
    for customer_id, agg in expected.items():
        score = latest[customer_id]
        ratings: list[float] = agg["ratings"]  # type: ignore[assignment]
        net = max(float(agg["gross"]) - float(agg["refunds"]), 0.0)  # type: ignore[arg-type]
        assert score.frequency == agg["orders"]
        assert score.monetary == pytest.approx(net)
        assert score.open_tickets == int(agg["opened"]) - int(agg["resolved"])  # type: ignore[call-overload]
        assert score.as_of == agg["last_event"]
        if ratings:
            assert score.satisfaction_mean == pytest.approx(sum(ratings) / len(ratings))
        else:
            assert score.satisfaction_mean is None
        assert score.cancelled == agg["cancelled"]
        if agg["cancelled"]:
            assert score.churn_probability == 1.0
        else:
            assert 0.0 <= score.churn_probability <= 1.0
        assert score.segment_name in {"champions", "loyal", "at_risk", "hibernating"}

        state, raw_score = redis_state(shared_settings, customer_id)
        assert state is not None
        assert state.order_count == agg["orders"]
        assert state.gross_revenue == pytest.approx(float(agg["gross"]))  # type: ignore[arg-type]
        assert state.last_purchase_at == agg["last_purchase"]
        assert state.rating_count == len(ratings)
        assert state.events_applied == sum(1 for e in events if e.customer_id == customer_id)
        # The stored score is the newest: this event's, or a re-score made since (quiet).
        assert raw_score is not None
        stored = CustomerScore.model_validate_json(raw_score)
        assert stored == score or (stored.trigger == "time" and stored.as_of > score.as_of)
        assert (stored.frequency, stored.monetary) == (score.frequency, score.monetary)


def test_a_purchase_is_scored_with_values_computed_from_the_formulas(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    events = [purchase("formula", 1, 40.0, 0), purchase("formula", 2, 80.0, 30)]
    send(shared_settings, events)
    score_reader.wait_for(lambda records: "formula-p2" in {s.event_id for s in scores(records)})

    final = next(s for s in scores(score_reader.records) if s.event_id == "formula-p2")
    # Two orders in 30 days of tenure: AOV 60, 2 orders per month, 24 per year.
    assert final.customer_value == pytest.approx(60.0 * 24)
    assert final.clv_simple == pytest.approx(60.0 * 24 * (1 - final.churn_probability))
    retention = 1 - final.churn_probability
    assert final.clv_discounted == pytest.approx(
        sum(60.0 * 24 * retention**t / 1.1**t for t in range(1, 6))
    )
    assert final.recency_days == 0.0
    assert final.monetary == 120.0


def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_going(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    topics = shared_settings.topics
    assert shared_settings.kafka_bootstrap is not None
    letters = TopicReader(shared_settings.kafka_bootstrap, topics.deadletter)
    try:
        send_raw(shared_settings, topics.purchases, b"bad-1", b"{this is not json")
        send_raw(
            shared_settings,
            topics.feedback,
            b"bad-2",
            purchase("bad-2", 1, 5.0, 0).model_dump_json().encode(),
        )
        too_high = (
            FeedbackEvent(
                event_id="bad-3-f1",
                customer_id="bad-3",
                rating=5,
                scale="csat",
                category="service",
                occurred_at=T0,
            )
            .model_dump_json()
            .replace('"rating":5', '"rating":9')
        )
        send_raw(shared_settings, topics.feedback, b"bad-3", too_high.encode())
        send(shared_settings, [purchase("after-bad", 1, 10.0, 0)])

        letters.wait_for(lambda records: len(records) >= 3)
        score_reader.wait_for(
            lambda records: "after-bad-p1" in {s.event_id for s in scores(records)}
        )
        by_key = {letter.key: letter for letter in dead_letters(letters.records)}
        assert by_key["bad-1"].error_type == "UndecodableEventError"
        assert by_key["bad-1"].raw == "{this is not json"
        assert by_key["bad-1"].source_topic == topics.purchases
        assert by_key["bad-2"].error_type == "WrongTopicError"
        assert "purchase" in by_key["bad-2"].reason
        assert by_key["bad-3"].error_type == "EventValidationError"
        assert "outside the csat scale" in by_key["bad-3"].reason
        assert all(letter.offset >= 0 for letter in by_key.values())
        assert redis_state(shared_settings, "bad-3")[0] is None
    finally:
        letters.close()


def test_a_duplicate_event_is_applied_once(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    first = purchase("dup", 1, 25.0, 0)
    send(shared_settings, [first, first, purchase("dup", 2, 30.0, 1)])
    score_reader.wait_for(lambda records: "dup-p2" in {s.event_id for s in scores(records)})

    # One score per event applied. The earlier tests' events moved the watermark far past
    # day 1, so the sweep may also re-score the quiet customer as of a later day (an "asof"
    # score, not an event's): a CI run saw one after dup-p2.
    dup_scores = [s for s in event_scores(score_reader.records) if s.customer_id == "dup"]
    assert [s.event_id for s in dup_scores] == ["dup-p1", "dup-p2"]
    state, _ = redis_state(shared_settings, "dup")
    assert state is not None and state.order_count == 2 and state.gross_revenue == 55.0


def wait_for_checkpoint(settings: Settings, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while redis_model_version(settings) != version:
        assert time.monotonic() < deadline, f"checkpoint is {redis_model_version(settings)}"
        time.sleep(0.3)


def event_scores(records: list[Record]) -> list[CustomerScore]:
    """The scores made at events (not the re-scores of quiet customers)."""
    return [score for score in scores(records) if score.trigger == "event"]


def test_a_restarted_worker_resumes_the_models_from_their_checkpoint(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "e2e-restart", tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    # 100 days apart: each purchase's watermark closes the previous snapshot's window, so
    # the shared learner learns 4 labels and 5 scored customers.
    events = [purchase("resume", n, 10.0 + n, day=100 * n) for n in range(1, 6)]
    with running_worker(settings, tmp_path / "first.log"):
        send(settings, events)
        reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
        reader.wait_for(lambda records: len(event_scores(records)) >= len(events))
        wait_for_checkpoint(settings, "churn-4.segments-5.clv-0")

    with running_worker(settings, tmp_path / "second.log"):
        send(settings, [purchase("resume", 6, 20.0, day=600)])
        reader.wait_for(lambda records: len(event_scores(records)) >= len(events) + 1)
        # Scored by the checkpoint it resumed from; then learned, and checkpointed again.
        assert event_scores(reader.records)[-1].model_version == "churn-4.segments-5.clv-0"
        wait_for_checkpoint(settings, "churn-5.segments-6.clv-0")
    reader.close()


def test_cli_simulate_produces_a_history_that_cli_score_then_shows(
    shared_settings: Settings, score_reader: TopicReader, tmp_path: Path
) -> None:
    settings = shared_settings
    env = worker_environment(settings)
    truth_file = tmp_path / "truth.json"
    produced = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamcrm",
            "simulate",
            "--customers",
            "4",
            "--days",
            "40",
            "--seed",
            "5",
            "--truth",
            str(truth_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert produced.stdout.startswith("produced ")
    simulated = simulate(customers=4, days=40, seed=5)
    assert set(json.loads(truth_file.read_text())) == set(simulated.truth)
    last_event = simulated.events[-1]
    score_reader.wait_for(
        lambda records: last_event.event_id in {s.event_id for s in scores(records)}
    )

    shown = subprocess.run(
        [sys.executable, "-m", "streamcrm", "score", last_event.customer_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    record = json.loads(shown.stdout)
    _, raw_score = redis_state(settings, last_event.customer_id)
    assert raw_score is not None
    # A sweep may have re-scored the customer (quiet) between the two reads: then the newer.
    stored = json.loads(raw_score)
    assert record["score"] == stored or (
        stored["trigger"] == "time" and stored["as_of"] > record["score"]["as_of"]
    )
    assert record["state"]["customer_id"] == last_event.customer_id


def test_a_late_event_is_dead_lettered_with_its_reason_and_counted(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    assert shared_settings.kafka_bootstrap is not None
    letters = TopicReader(shared_settings.kafka_bootstrap, shared_settings.topics.deadletter)
    try:
        send(shared_settings, [purchase("late", 1, 10.0, day=10), purchase("late", 2, 10.0, day=1)])
        letters.wait_for(lambda records: any(r.key == b"late" for r in records))

        letter = next(d for d in dead_letters(letters.records) if d.key == "late")
        assert letter.error_type == "LateEventError"
        assert "216.0h older than the newest purchases event" in letter.reason
        state, _ = redis_state(shared_settings, "late")
        assert state is not None and state.late_events == 1 and state.order_count == 1
    finally:
        letters.close()


def test_cli_population_summarises_every_scored_customer_in_redis(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    send(shared_settings, [purchase("population", 1, 12.0, day=3)])
    score_reader.wait_for(lambda records: "population-p1" in {s.event_id for s in scores(records)})
    scored_customers = {s.customer_id for s in scores(score_reader.records)}

    shown = subprocess.run(
        [sys.executable, "-m", "streamcrm", "population", "--json"],
        env=worker_environment(shared_settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    summary = json.loads(shown.stdout)
    assert summary["customers"] == len(scored_customers)
    assert summary["distributions"]["monetary"]["count"] == len(scored_customers)


def test_model_metrics_are_published_on_their_topic(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    assert shared_settings.kafka_bootstrap is not None
    send(shared_settings, [purchase("metrics", n, 20.0, day=5 * n) for n in range(1, 4)])
    score_reader.wait_for(lambda records: "metrics-p3" in {s.event_id for s in scores(records)})
    reports = TopicReader(shared_settings.kafka_bootstrap, shared_settings.topics.model_metrics)
    try:
        reports.wait_for(
            lambda records: any(
                ModelMetrics.model_validate_json(r.value or b"").labelled_examples >= 2
                for r in records
            )
        )
        latest = ModelMetrics.model_validate_json(reports.records[-1].value or b"")
    finally:
        reports.close()

    assert latest.worker.startswith(shared_settings.app_id + "@")
    assert latest.events["scored"] >= 3
    assert latest.model_version.startswith(f"churn-{latest.labelled_examples}.")
    assert latest.brier is not None and 0.0 <= latest.brier <= 1.0

    status = format_status(
        latest_reports(shared_settings.kafka_bootstrap, shared_settings.topics.model_metrics)
    )
    assert latest.worker in status and "ROC AUC" in status and "drift" in status


def test_a_quiet_customer_is_heartbeated_and_labelled_as_the_watermark_moves(
    shared_settings: Settings, score_reader: TopicReader
) -> None:
    # Far in the future of the other tests' events, so this test drives the watermark.
    send(shared_settings, [purchase("quiet", 1, 30.0, day=1000)])
    score_reader.wait_for(lambda records: "quiet-p1" in {s.event_id for s in scores(records)})
    send(shared_settings, [purchase("mover", 1, 30.0, day=1200)])  # watermark: day 1198

    deadline = time.monotonic() + 60
    while True:
        state, _ = redis_state(shared_settings, "quiet")
        assert state is not None
        if state.last_snapshot_at == T0 + timedelta(days=1150) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Heartbeats every 30 days while quiet for under 180 (days 1030-1150); the windows of
    # days 1000-1090 closed by day 1198 and were learned, the two newest still wait.
    assert state.last_snapshot_at == T0 + timedelta(days=1150)
    assert [s.scored_at for s in state.pending_snapshots] == [
        T0 + timedelta(days=d) for d in (1120, 1150)
    ]
