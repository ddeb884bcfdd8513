"""What ``streamcrm status`` prints for given reports and alerts (no Kafka: the rendering)."""

from __future__ import annotations

from datetime import UTC, datetime

from streamcrm.cli.status import format_status, without_erased
from streamcrm.core.records import Alert, ModelMetrics, PartitionMetrics, TopicMetrics
from streamcrm.store import InMemoryStateStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WORKER = "streamcrm@host-with-a-rather-long-name.example.internal:123456"


def traffic() -> TopicMetrics:
    return TopicMetrics(
        events_per_s=812.4,
        rate_window_s=60.0,
        partitions=[
            PartitionMetrics(
                topic="crm.purchases",
                partition=0,
                events_in=40_000,
                end_offset=41_250,
                committed=40_000,
                lag=1_250,
            ),
            PartitionMetrics(
                topic="crm.feedback",
                partition=3,
                events_in=12,
                end_offset=None,
                committed=None,
                lag=None,
            ),
        ],
        records_out={"crm.scores": 39_990, "crm.alerts": 17},
        latency_count=39_990,
        latency_p50_s=0.044,
        latency_p95_s=0.31,
        latency_p99_s=1.7,
    )


def report(worker: str = WORKER, **fields: object) -> ModelMetrics:
    values: dict[str, object] = {
        "worker": worker,
        "published_at": T0,
        "event_time": T0,
        "model_version": "churn-1200.7",
        "labelled_examples": 1_200,
        "churned_examples": 300,
        "roc_auc": 0.8123,
        "log_loss": 0.41,
        "brier": 0.1312,
        "customers_scored": 900,
        "segment_shares": {"champions": 0.25, "at risk": 0.75},
        "events": {"scored": 39_990, "duplicate": 10},
        "dead_letters": {"not_json": 2},
        "topics": traffic(),
    }
    return ModelMetrics.model_validate(values | fields)


def alert(customer_id: str | None, message: str) -> Alert:
    return Alert(
        alert_id=f"a-{customer_id}",
        kind="churn_risk" if customer_id else "model_drift",
        severity="critical" if customer_id else "warning",
        customer_id=customer_id,
        raised_at=T0,
        event_id=None,
        message=message,
        scores={},
        model_version="churn-1200.7",
    )


def test_status_shows_rates_lag_latency_and_records_out() -> None:
    text = format_status({WORKER: report()})

    assert WORKER in text
    assert "812.4 events/s over 60 s" in text
    assert "1,250 messages" in text  # total lag; the unknown partition adds nothing
    assert "p50 44 ms, p95 310 ms, p99 1.70 s" in text
    assert "crm.scores 39,990" in text and "crm.alerts 17" in text


def test_status_shows_each_partition_with_unknown_offsets_as_dashes() -> None:
    lines = format_status({WORKER: report()}).splitlines()

    purchases = next(line for line in lines if "crm.purchases" in line and "41,250" in line)
    feedback = next(line for line in lines if "crm.feedback" in line)
    assert purchases.strip("│ ").split() == [
        "crm.purchases",
        "0",
        "40,000",
        "41,250",
        "40,000",
        "1,250",
    ]
    assert feedback.strip("│ ").split() == ["crm.feedback", "3", "12", "–", "–", "–"]


def test_status_shows_model_quality_segments_and_outcomes() -> None:
    text = format_status({WORKER: report()})

    assert "churn-1200.7" in text
    assert "ROC AUC" in text and "0.812 overall" in text
    assert "Brier" in text and "0.1312 overall" in text
    assert "champions 25%, at risk 75%" in text
    assert "scored 39,990, duplicate 10" in text
    assert "not_json 2" in text


def test_status_flags_drift_since_the_previous_report() -> None:
    assert "MODEL DRIFT" in format_status({WORKER: report(drifts_detected=2, model_drift=True)})
    assert "MODEL DRIFT" not in format_status({WORKER: report(drifts_detected=2)})


def test_status_lists_the_latest_alerts_in_the_order_given() -> None:
    alerts = [alert("c-42", "c-42 crossed churn risk 0.70"), alert(None, "churn model drift")]

    text = format_status({WORKER: report()}, alerts)

    assert "latest alerts" in text
    assert text.index("c-42 crossed churn risk 0.70") < text.index("churn model drift")
    assert "(model)" in text  # a model-wide alert has no customer


def test_status_of_a_report_from_before_topic_metrics_still_renders() -> None:
    text = format_status({WORKER: report(topics=None)})

    assert "ROC AUC" in text and "events/s" not in text


def test_status_shows_one_panel_per_worker_in_name_order() -> None:
    text = format_status({"w2": report("w2"), "w1": report("w1")})

    assert text.index("w1") < text.index("w2")


def test_status_without_reports_says_so() -> None:
    assert "no model-metrics reports yet" in format_status({})


async def test_status_leaves_out_the_alerts_of_customers_erased_since() -> None:
    store = InMemoryStateStore()
    await store.erase("gone", 0, None, datetime(2026, 3, 2, tzinfo=UTC))
    alerts = [alert("gone", "churn"), alert("kept", "churn"), alert(None, "model drift")]

    shown = await without_erased(alerts, store)

    assert [a.customer_id for a in shown] == ["kept", None]
