"""Behaviour of the worker's topic metrics: rates, lag, latency, recent scores, the three views."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamcrm.core.events import PurchaseEvent
from streamcrm.core.records import Alert, CustomerScore, ModelMetrics
from streamcrm.core.scoring import ScoringConfig, score_event
from streamcrm.models import ModelBundle
from streamcrm.worker.metrics import (
    METRIC_NAMES,
    BucketHistogram,
    MapPoint,
    PartitionPosition,
    RateWindow,
    RecentScores,
    WorkerMetrics,
    churn_risk_histogram,
    consumer_lag,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INPUTS = ("crm.purchases", "crm.feedback")


def a_score(customer_id: str, churn: float = 0.2, segment: str = "loyal") -> CustomerScore:
    event = PurchaseEvent(
        event_id=f"e-{customer_id}",
        customer_id=customer_id,
        occurred_at=T0,
        order_id="o1",
        amount=40.0,
        items=1,
        channel="web",
    )
    score = score_event(None, event, ModelBundle(), ScoringConfig()).score
    assert score is not None
    return score.model_copy(update={"churn_probability": churn, "segment_name": segment})


def a_report(**fields: object) -> ModelMetrics:
    values: dict[str, object] = {
        "worker": "w1",
        "published_at": T0,
        "event_time": T0,
        "model_version": "churn-12.3",
        "labelled_examples": 12,
        "churned_examples": 4,
        "roc_auc": 0.71,
        "log_loss": 0.52,
        "brier": 0.18,
        "drifts_detected": 1,
        "customers_scored": 30,
        "segment_shares": {"loyal": 0.75, "at risk": 0.25},
        "events": {"scored": 30},
    }
    return ModelMetrics.model_validate(values | fields)


def an_alert(customer_id: str, at: datetime) -> Alert:
    return Alert(
        alert_id=f"a-{customer_id}",
        kind="churn_risk",
        severity="warning",
        customer_id=customer_id,
        raised_at=at,
        event_id="e1",
        message=f"{customer_id} is likely to churn",
        scores={"churn_probability": 0.8},
        model_version="churn-12.3",
    )


@pytest.fixture
def outcomes() -> Counter[str]:
    return Counter({"scored": 7, "duplicate": 2})


@pytest.fixture
def dead_letters() -> Counter[str]:
    return Counter({"not_json": 1})


@pytest.fixture
def metrics(outcomes: Counter[str], dead_letters: Counter[str]) -> WorkerMetrics:
    return WorkerMetrics("w1", INPUTS, outcomes, dead_letters, rate_window_s=10.0)


# -- lag -----------------------------------------------------------------------------------


def test_lag_is_end_offset_minus_committed_offset() -> None:
    assert consumer_lag(end_offset=500, committed=420) == 80


def test_lag_is_unknown_while_either_offset_is_unknown() -> None:
    assert consumer_lag(None, 420) is None
    assert consumer_lag(500, None) is None


def test_lag_never_goes_below_zero_when_the_end_offset_reads_low() -> None:
    # Tansu's ListOffsets answers the last batch's base offset + 1 (docs/tansu.md).
    assert consumer_lag(end_offset=7, committed=9) == 0


def test_total_lag_sums_the_known_lags_of_input_partitions_only(
    metrics: WorkerMetrics,
) -> None:
    metrics.set_positions(
        [
            PartitionPosition("crm.purchases", 0, 100, 90),
            PartitionPosition("crm.purchases", 1, 50, None),  # unknown: not counted
            PartitionPosition("crm.feedback", 0, 30, 25),
            PartitionPosition("crm.model-updates", 0, 900, 0),  # not an input topic
        ]
    )

    assert metrics.total_lag() == 15


# -- rates ---------------------------------------------------------------------------------


def test_rate_spans_the_sliding_window() -> None:
    rate = RateWindow(window_s=10.0)
    for second in range(0, 21, 2):
        rate.record(float(second), 30 * second)  # 30 events a second throughout

    assert rate.per_second() == pytest.approx(30.0)


def test_rate_forgets_a_burst_once_it_leaves_the_window() -> None:
    rate = RateWindow(window_s=10.0)
    rate.record(0.0, 0)
    rate.record(1.0, 1_000)  # a burst of 1,000 in the first second
    for second in range(2, 31):
        rate.record(float(second), 1_000)  # then nothing

    assert rate.per_second() == 0.0


def test_rate_is_zero_before_two_samples() -> None:
    rate = RateWindow()
    assert rate.per_second() == 0.0
    rate.record(5.0, 100)
    assert rate.per_second() == 0.0


def test_throughput_series_has_one_point_per_sample_of_input_messages(
    metrics: WorkerMetrics,
) -> None:
    metrics.sample(T0)
    metrics.count_in("crm.purchases", 0, 40)
    metrics.count_in("crm.feedback", 1, 10)
    metrics.count_in("crm.model-updates", 0, 999)  # not an input topic
    metrics.sample(T0 + timedelta(seconds=5))

    assert [rate for _, rate in metrics.throughput] == [0.0, 10.0]
    assert metrics.rate.per_second() == pytest.approx(10.0)


def test_counts_before_the_first_sample_show_in_it_when_the_start_is_known(
    outcomes: Counter[str], dead_letters: Counter[str]
) -> None:
    metrics = WorkerMetrics("w1", INPUTS, outcomes, dead_letters, started_at=T0)
    metrics.count_in("crm.purchases", 0, 60)
    metrics.sample(T0 + timedelta(seconds=2))

    assert [rate for _, rate in metrics.throughput] == [30.0]


def test_the_series_keep_only_the_history_asked_for(
    outcomes: Counter[str], dead_letters: Counter[str]
) -> None:
    metrics = WorkerMetrics(
        "w1", INPUTS, outcomes, dead_letters, history_s=60.0, sample_interval_s=5.0
    )
    for tick in range(100):
        metrics.sample(T0 + timedelta(seconds=5 * tick))

    assert len(metrics.throughput) == len(metrics.lag_history) == 12
    assert metrics.throughput[-1][0] == T0 + timedelta(seconds=5 * 99)


# -- latency histogram ---------------------------------------------------------------------


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    histogram = BucketHistogram((0.1, 1.0))
    for value in (0.1, 1.0, 1.5):
        histogram.observe(value)

    assert histogram.cumulative() == [(0.1, 1), (1.0, 2), (float("inf"), 3)]
    assert histogram.sum == pytest.approx(2.6)


def test_quantiles_interpolate_inside_their_bucket() -> None:
    histogram = BucketHistogram((0.1, 0.2, 0.4))
    for value in [0.05] * 50 + [0.3] * 50:
        histogram.observe(value)

    assert histogram.quantile(0.5) == pytest.approx(0.1)
    assert histogram.quantile(0.75) == pytest.approx(0.3)
    assert histogram.quantile(1.0) == pytest.approx(0.4)


def test_quantile_in_the_overflow_bucket_is_the_largest_bound() -> None:
    histogram = BucketHistogram((0.1, 0.2))
    histogram.observe(7.0)

    assert histogram.quantile(0.99) == 0.2


def test_quantile_of_an_empty_histogram_is_unknown() -> None:
    assert BucketHistogram((0.1,)).quantile(0.5) is None


def test_latency_runs_from_the_input_timestamp_to_the_score_being_sent(
    metrics: WorkerMetrics,
) -> None:
    sent_at = T0.timestamp()
    metrics.note_scores(
        [(sent_at - 0.04, a_score("a")), (None, a_score("b")), (sent_at - 3.0, a_score("c"))],
        sent_at,
    )

    assert metrics.latency.count == 2  # b had no timestamp
    assert metrics.latency.sum == pytest.approx(3.04)
    assert len(metrics.recent) == 3  # but its score is in the sample


# -- recent scores -------------------------------------------------------------------------


def test_churn_risk_histogram_has_ten_bins_over_zero_to_one() -> None:
    histogram = churn_risk_histogram([0.0, 0.05, 0.1, 0.55, 0.999, 1.0])

    assert histogram["edges"] == pytest.approx([i / 10 for i in range(11)])
    assert histogram["counts"] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]


def test_recent_scores_keep_each_customers_latest_score_only() -> None:
    recent = RecentScores(capacity=2)
    recent.add(MapPoint("a", 1.0, 10.0, "loyal", 0.1))
    recent.add(MapPoint("b", 1.0, 10.0, "loyal", 0.1))
    recent.add(MapPoint("a", 2.0, 20.0, "champions", 0.2))  # a again: b is now the oldest
    recent.add(MapPoint("c", 1.0, 10.0, "at risk", 0.9))  # b drops out

    assert [p.customer_id for p in recent.points()] == ["a", "c"]
    assert recent.segment_shares() == {"at risk": 0.5, "champions": 0.5}


# -- the three views -----------------------------------------------------------------------


def test_overview_has_the_shape_of_the_http_contract(metrics: WorkerMetrics) -> None:
    metrics.count_in("crm.purchases", 0, 12)
    metrics.count_out("crm.scores", 9)
    metrics.set_positions([PartitionPosition("crm.purchases", 0, 20, 12)])
    metrics.note_scores([(T0.timestamp() - 0.5, a_score("a", churn=0.85, segment="at risk"))], 0)
    metrics.sample(T0)
    alerts = [an_alert("old", T0), an_alert("new", T0 - timedelta(days=3))]  # sent in this order

    overview = metrics.overview(T0, alerts, model_version="v0")

    assert set(overview) == {
        "worker", "generated_at", "throughput", "lag", "partitions", "outcomes",
        "dead_letters", "privacy_requests_failed", "records_out", "churn_risk", "at_risk",
        "segments", "alerts", "model",
    }  # fmt: skip
    assert overview["generated_at"] == "2026-03-01T12:00:00+00:00"
    assert overview["partitions"] == [
        {
            "topic": "crm.purchases",
            "partition": 0,
            "events_in": 12,
            "end_offset": 20,
            "committed": 12,
            "lag": 8,
        }
    ]
    assert overview["lag"] == [{"at": "2026-03-01T12:00:00+00:00", "lag": 8}]
    assert overview["outcomes"] == {"duplicate": 2, "scored": 7}
    assert overview["dead_letters"] == {"not_json": 1}
    assert overview["records_out"] == {"crm.scores": 9}
    assert overview["churn_risk"]["counts"][8] == 1
    assert overview["at_risk"] == [
        {
            "customer_id": "a",
            "churn_probability": 0.85,
            "segment_name": "at risk",
            "recency_days": overview["at_risk"][0]["recency_days"],
            "usual_gap_days": None,
            "quiet": False,
        }
    ]
    assert overview["segments"]["shares"] == {"at risk": 1.0}
    assert overview["segments"]["points"][0]["customer_id"] == "a"
    assert [a["customer_id"] for a in overview["alerts"]] == ["new", "old"]  # newest sent first
    assert overview["model"] == {
        "version": "v0",
        "labelled_examples": 0,
        "roc_auc": None,
        "log_loss": None,
        "brier": None,
        "drifts_detected": 0,
    }
    json.dumps(overview)  # plain JSON all the way down


def test_overview_model_comes_from_the_newest_report(metrics: WorkerMetrics) -> None:
    metrics.note_model_report(a_report())

    model = metrics.overview(T0, [], model_version="ignored")["model"]

    assert model["version"] == "churn-12.3"
    assert model["roc_auc"] == 0.71 and model["labelled_examples"] == 12


def test_topic_summary_carries_rate_lag_records_out_and_latency(metrics: WorkerMetrics) -> None:
    metrics.sample(T0)
    metrics.count_in("crm.purchases", 1, 100)
    metrics.set_positions([PartitionPosition("crm.purchases", 1, 130, 100)])
    metrics.count_out("crm.scores", 95)
    metrics.note_scores([(T0.timestamp(), a_score("a"))], T0.timestamp() + 0.2)
    metrics.sample(T0 + timedelta(seconds=10))

    summary = metrics.topic_summary()

    assert summary.events_per_s == pytest.approx(10.0)
    assert [(p.partition, p.events_in, p.lag) for p in summary.partitions] == [(1, 100, 30)]
    assert summary.records_out == {"crm.scores": 95}
    assert summary.latency_count == 1
    assert summary.latency_p50_s is not None and 0.1 < summary.latency_p50_s <= 0.25
    # It travels inside the model-metrics report.
    report = a_report(topics=summary)
    assert ModelMetrics.model_validate_json(report.model_dump_json()).topics == summary


def scrape(metrics: WorkerMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse the exposition as Prometheus would: sample name -> [(labels, value)]."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_exposition_parses_and_carries_every_count(metrics: WorkerMetrics) -> None:
    metrics.count_in("crm.purchases", 0, 12)
    metrics.count_out("crm.scores", 9)
    metrics.set_positions([PartitionPosition("crm.purchases", 0, 20, 12)])
    metrics.note_scores([(T0.timestamp(), a_score("a"))], T0.timestamp() + 0.03)
    metrics.note_model_report(a_report())

    samples = scrape(metrics)

    assert samples["streamcrm_events_in_total"] == [
        ({"topic": "crm.purchases", "partition": "0"}, 12.0)
    ]
    assert ({"outcome": "scored"}, 7.0) in samples["streamcrm_event_outcomes_total"]
    assert samples["streamcrm_dead_letters_total"] == [({"reason": "not_json"}, 1.0)]
    assert samples["streamcrm_records_out_total"] == [({"topic": "crm.scores"}, 9.0)]
    assert samples["streamcrm_consumer_lag_messages"] == [
        ({"topic": "crm.purchases", "partition": "0"}, 8.0)
    ]
    assert samples["streamcrm_end_to_end_latency_seconds_count"] == [({}, 1.0)]
    assert ({"le": "0.05"}, 1.0) in samples["streamcrm_end_to_end_latency_seconds_bucket"]
    assert ({"le": "0.025"}, 0.0) in samples["streamcrm_end_to_end_latency_seconds_bucket"]
    assert samples["streamcrm_model_roc_auc"] == [({}, 0.71)]
    assert samples["streamcrm_model_info"] == [({"version": "churn-12.3"}, 1.0)]
    assert ({"segment": "at risk"}, 0.25) in samples["streamcrm_segment_share_ratio"]


def test_every_listed_metric_is_exposed_once_a_report_is_in(metrics: WorkerMetrics) -> None:
    metrics.note_model_report(a_report())
    names = {
        family.name for family in text_string_to_metric_families(metrics.exposition().decode())
    }
    # The parser names counters without _total and histograms without their suffixes.
    assert {name.removesuffix("_total") for name in METRIC_NAMES} == names


def test_the_pipeline_counters_are_read_at_scrape_time_not_copied(
    metrics: WorkerMetrics, outcomes: Counter[str]
) -> None:
    outcomes["late"] += 3

    assert ({"outcome": "late"}, 3.0) in scrape(metrics)["streamcrm_event_outcomes_total"]


def test_each_worker_has_its_own_registry(
    outcomes: Counter[str], dead_letters: Counter[str]
) -> None:
    first = WorkerMetrics("w1", INPUTS, outcomes, dead_letters)
    second = WorkerMetrics("w2", INPUTS, outcomes, dead_letters)
    first.count_out("crm.scores")

    assert "streamcrm_records_out_total" not in scrape(second)


def test_the_at_risk_list_names_quiet_customers_scored_as_time_passed(
    metrics: WorkerMetrics,
) -> None:
    quiet = a_score("q", churn=0.9, segment="at risk").model_copy(
        update={"trigger": "time", "recency_days": 42.0, "usual_gap_days": 10.0}
    )
    metrics.note_scores([(None, a_score("busy", churn=0.2, segment="loyal")), (None, quiet)], 0)

    at_risk = metrics.overview(T0, [], model_version="v0")["at_risk"]

    assert [(c["customer_id"], c["quiet"]) for c in at_risk] == [("q", True), ("busy", False)]
    assert at_risk[0]["usual_gap_days"] == 10.0
