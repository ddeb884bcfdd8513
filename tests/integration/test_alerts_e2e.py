"""Alerts on a real worker: events in on Kafka, alerts out on ``<prefix>.alerts``.

What each alert must say is worked out here from the events the test sends: a ticket answered
two hours late against a one-hour SLA (urgent priority), then a cancellation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.core.events import CancellationEvent, Event, PurchaseEvent, SupportEvent
from streamcrm.core.experiments import is_control
from streamcrm.core.records import Alert
from streamcrm.services.kafka import Record
from streamcrm.settings import Settings
from tests.integration.worker_harness import (
    TopicReader,
    redis_state,
    running_worker,
    scores,
    send,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
CUSTOMER = "alerted-1"
QUIET = "quiet-1"


def history() -> list[Event]:
    at = T0.__add__
    purchases: list[Event] = [
        PurchaseEvent(
            event_id=f"{customer}-p1",
            customer_id=customer,
            order_id=f"{customer}-o1",
            amount=80.0,
            items=2,
            channel="web",
            occurred_at=at(timedelta(days=0)),
        )
        for customer in (CUSTOMER, QUIET)
    ]
    return purchases + [
        SupportEvent(
            event_id=f"{CUSTOMER}-s1",
            customer_id=CUSTOMER,
            ticket_id="t1",
            action="opened",
            channel="email",
            priority="urgent",  # first response promised within 1 hour
            category="complaint",
            occurred_at=at(timedelta(days=1)),
        ),
        SupportEvent(
            event_id=f"{CUSTOMER}-s2",
            customer_id=CUSTOMER,
            ticket_id="t1",
            action="first_response",
            channel="email",
            priority="urgent",
            category="complaint",
            occurred_at=at(timedelta(days=1, hours=3)),  # 3 hours: an SLA breach
        ),
        CancellationEvent(
            event_id=f"{CUSTOMER}-x1",
            customer_id=CUSTOMER,
            occurred_at=at(timedelta(days=2)),
            reason="too many problems",
        ),
    ]


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[None]:
    with running_worker(settings, tmp_path / "worker.log"):  # creates the topics first
        yield


@pytest.fixture
def readers(settings: Settings, worker: None) -> Iterator[tuple[TopicReader, TopicReader]]:
    assert settings.kafka_bootstrap is not None
    alerts = TopicReader(settings.kafka_bootstrap, settings.topics.alerts)
    scored = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
    yield alerts, scored
    alerts.close()
    scored.close()


def alerts_in(records: list[Record]) -> list[tuple[bytes | None, Alert]]:
    return [(r.key, Alert.model_validate_json(r.value)) for r in records if r.value is not None]


def test_a_cancellation_and_an_sla_breach_reach_the_alerts_topic(
    settings: Settings, readers: tuple[TopicReader, TopicReader]
) -> None:
    alert_reader, score_reader = readers
    events = history()

    send(settings, events)
    score_reader.wait_for(lambda records: len(records) >= len(events))
    alert_reader.wait_for(
        lambda records: {a.kind for _, a in alerts_in(records)} >= {"churn_risk", "sla_breach"}
    )
    alert_reader.drain(2.0)  # anything sent twice would be here by now

    received = alerts_in(alert_reader.records)
    by_event = {score.event_id: score for score in scores(score_reader.records)}
    assert all(key == CUSTOMER.encode() for key, _ in received), "keyed by customer"
    alerts = [alert for _, alert in received]
    assert len({a.alert_id for a in alerts}) == len(alerts), "no alert sent twice"
    assert all(a.customer_id == CUSTOMER for a in alerts), "the quiet customer raised nothing"

    [cancelled] = [a for a in alerts if a.kind == "churn_risk"]
    assert cancelled.alert_id == f"{CUSTOMER}-x1:churn_risk"
    assert (cancelled.event_id, cancelled.severity) == (f"{CUSTOMER}-x1", "critical")
    assert cancelled.raised_at == T0 + timedelta(days=2)
    assert cancelled.scores["churn_probability"] == 1.0
    assert cancelled.scores["reason"] == "cancellation"
    assert cancelled.model_version == by_event[f"{CUSTOMER}-x1"].model_version
    # Held out or acted on, by a hash of customer and alert (docs/marketing.md); no retention
    # campaign has arms here, so an acted alert recommends none.
    assert cancelled.control == is_control(
        CUSTOMER, cancelled.alert_id, settings.alert_control_share
    )
    assert cancelled.recommended_arm is None

    [breach] = [a for a in alerts if a.kind == "sla_breach"]
    assert breach.control is None  # only churn alerts are held out
    assert breach.alert_id == f"{CUSTOMER}-s2:sla_breach"
    assert (breach.scores["sla_breaches"], breach.scores["previous_sla_breaches"]) == (1, 0)
    assert breach.scores["mean_first_response_hours"] == pytest.approx(3.0)
    triggering = by_event[f"{CUSTOMER}-s2"]
    assert breach.model_version == triggering.model_version
    assert breach.churn_drivers == triggering.churn_drivers[:3]

    state, _ = redis_state(settings, CUSTOMER)
    assert state is not None
    assert state.alert_memory.cancelled
    assert [p.as_of for p in state.score_history] == sorted(
        score.as_of for score in scores(score_reader.records) if score.customer_id == CUSTOMER
    )
