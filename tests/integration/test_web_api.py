"""The HTTP API of a real worker: /metrics, /healthz, /readyz, /customers/{id}, /api/overview."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamcrm.cli.status import format_status, latest_alerts, latest_reports
from streamcrm.core.events import ErasureRequested
from streamcrm.core.records import CustomerScore, ModelMetrics
from streamcrm.services.embedded import free_port
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.integration.worker_harness import (
    TopicReader,
    eventually,
    get,
    running_worker,
    scores,
    send,
    send_raw,
)

pytestmark = pytest.mark.integration


def scrape(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, body, content_type = get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for found, v in samples if labels.items() <= found.items())


def test_a_worker_serves_its_metrics_health_customers_and_overview(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"web_port": port})
    assert settings.kafka_bootstrap is not None
    base = f"http://127.0.0.1:{port}"
    topics = settings.topics
    history = list(simulate(customers=25, days=120, seed=17).events)

    with running_worker(settings, tmp_path / "worker.log"):
        eventually(lambda: get(f"{base}/healthz")[0] == 200 or None, "/healthz")
        assert json.loads(get(f"{base}/healthz")[1]) == {"status": "ok"}

        reader = TopicReader(settings.kafka_bootstrap, topics.scores)
        send(settings, history)
        send_raw(settings, topics.purchases, b"someone", b"{not json")
        wanted = {event.event_id for event in history}
        reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})

        def readiness() -> dict[str, Any] | None:
            status, body, _ = get(f"{base}/readyz")
            assert status in (200, 503), body
            return json.loads(body) if status == 200 else None

        ready = eventually(readiness, "/readyz 200 once partitions are assigned")
        assert ready == {
            "ready": True,
            "checks": {"broker": True, "redis": True, "partitions_assigned": True},
        }

        def counted() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            samples = scrape(base)
            ins = total(samples.get("streamcrm_events_in_total", []))
            return samples if ins >= len(history) + 1 else None

        samples = eventually(counted, "every event counted in /metrics")
        assert total(samples["streamcrm_records_out_total"], topic=topics.scores) >= len(wanted)
        assert total(samples["streamcrm_event_outcomes_total"], outcome="scored") >= len(wanted)
        assert total(samples["streamcrm_dead_letters_total"]) == 1
        assert total(samples["streamcrm_end_to_end_latency_seconds_count"]) > 0

        def busy_overview() -> dict[str, Any] | None:
            document: dict[str, Any] = fetch_json(base, "/api/overview")
            rates = [point["events_per_s"] for point in document["throughput"]]
            return document if any(rate > 0 for rate in rates) else None

        overview = eventually(busy_overview, "non-zero throughput in /api/overview")
        assert overview["records_out"][topics.scores] >= len(wanted)
        assert sum(p["events_in"] for p in overview["partitions"]) >= len(history)
        assert sum(overview["churn_risk"]["counts"]) > 0
        assert overview["segments"]["points"]

        def served_matches_topic() -> tuple[str, dict[str, Any]] | None:
            """The first customer's page once it shows the topic's last score for them (the
            compacted topic's last = the stored one; a sweep may re-score a quiet customer
            between the two reads, so read again until they agree)."""
            latest: dict[str, CustomerScore] = {}
            for score in scores(reader.drain(0.5)):
                latest[score.customer_id] = score
            customer_id, score = next(iter(sorted(latest.items())))
            status, body, _ = get(f"{base}/customers/{customer_id}")
            assert status == 200
            customer = json.loads(body)
            same = CustomerScore.model_validate(customer["score"]) == score
            return (customer_id, customer) if same else None

        customer_id, customer = eventually(served_matches_topic, "the served score to settle")
        reader.close()
        assert customer["customer_id"] == customer_id
        assert customer["state"]["customer_id"] == customer_id
        assert customer["history"], "the state keeps a score history"
        assert set(customer["history"][-1]) == {
            "as_of", "churn_probability", "health", "clv_discounted", "segment_name",
        }  # fmt: skip

        status, body, _ = get(f"{base}/customers/nobody-by-this-name")
        assert status == 404 and "error" in json.loads(body)

        # An erasure: the customer is gone from the API, and its tombstone on the scores
        # topic (sent with the bare producer, which no sensor sees) is counted as a record out.
        def settled_scores_out() -> float | None:
            """Scores out once the sweeps have re-scored every quiet customer they owe (the
            count holds still for two seconds)."""
            before = total(scrape(base)["streamcrm_records_out_total"], topic=topics.scores)
            time.sleep(2.0)
            now = total(scrape(base)["streamcrm_records_out_total"], topic=topics.scores)
            return now if now == before else None

        scores_out = eventually(settled_scores_out, "the sweeps' re-scores to be out", 60)
        erasure = ErasureRequested(
            event_id="erase-1", customer_id=customer_id, occurred_at=datetime.now(UTC)
        )
        send_raw(settings, topics.privacy, customer_id.encode(), erasure.model_dump_json().encode())
        eventually(lambda: get(f"{base}/customers/{customer_id}")[0] == 404 or None, "the erasure")
        after = total(scrape(base)["streamcrm_records_out_total"], topic=topics.scores)
        assert after == scores_out + 1

        # The same figures go to Kafka inside the model-metrics report.
        reports = TopicReader(settings.kafka_bootstrap, topics.model_metrics)
        reports.wait_for(lambda records: traffic_reported(records, topics.scores, len(wanted)), 30)
        reports.close()
        # And `streamcrm status` reads them, with the alerts the stream raised.
        alerts = latest_alerts(settings.kafka_bootstrap, topics.alerts, count=5)
        assert 0 < len(alerts) <= 5
        text = format_status(
            latest_reports(settings.kafka_bootstrap, topics.model_metrics), alerts, width=200
        )
        assert "events/s" in text and "latest alerts" in text and alerts[0].kind in text


def fetch_json(base: str, path: str) -> Any:
    status, body, _ = get(f"{base}{path}")
    assert status == 200, body
    return json.loads(body)


def traffic_reported(records: list[Any], scores_topic: str, scored: int) -> bool:
    """Whether a report carries the worker's traffic: every score out, input partitions."""
    for record in records:
        traffic = ModelMetrics.model_validate_json(record.value or b"").topics
        if (
            traffic is not None
            and traffic.records_out.get(scores_topic, 0) >= scored
            and traffic.partitions
            and traffic.latency_count > 0
        ):
            return True
    return False
