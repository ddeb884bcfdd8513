"""Quiet customers on a real worker: re-scored as event time passes, alerted, exactly once.

The expected re-scores are worked out by the pure core offline (a pipeline over the in-memory
store, swept to the end): which customers are re-scored, and as of which moments, is a
function of the events alone, so the live worker must publish exactly those, each once,
even when it is killed with SIGKILL mid-sweep and restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.core.events import PurchaseEvent
from streamcrm.core.records import Alert
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import ensure_topics
from streamcrm.settings import Settings
from streamcrm.store import InMemoryStateStore
from streamcrm.worker.pipeline import ScoringPipeline
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import applied_events, outputs_on_topics, wait_until
from tests.integration.worker_harness import TopicReader, running_worker, scores, send
from tests.outputs import outbox_outputs

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_ids = itertools.count()


def order(customer_id: str, day: float) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"{customer_id}-{next(_ids)}",
        customer_id=customer_id,
        order_id=f"o{next(_ids)}",
        amount=60.0,
        items=1,
        channel="web",
        occurred_at=T0 + timedelta(days=day),
    )


def population(leavers: int, stayers: int, days: int) -> list[PurchaseEvent]:
    """Weekly buyers: ``leavers`` stop after a few weeks (at staggered times), ``stayers``
    keep buying every week to the end, so the model learns what a long silence leads to."""
    events = [
        order(f"leaver-{n}", week * 7 + n % 5) for n in range(leavers) for week in range(6 + n % 8)
    ]
    events += [
        order(f"stayer-{n}", week * 7 + n % 5) for n in range(stayers) for week in range(days // 7)
    ]
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


def expected_rescores(events: Sequence[PurchaseEvent], settings: Settings) -> set[str]:
    """The re-score ids the core makes from ``events`` (in event-time order, swept to the end
    with the final watermark)."""

    async def run() -> set[str]:
        pipeline = ScoringPipeline(InMemoryStateStore(), settings.scoring)
        for offset, event in enumerate(events):
            raw = event.model_dump_json().encode()
            await pipeline.handle(raw, "crm.purchases", 0, offset)
        while (await pipeline.sweep([0], 10_000)).rescores:
            pass
        return {
            score.event_id
            for score, _ in await outbox_outputs(pipeline.store)
            if score.trigger == "time"
        }

    return asyncio.run(run())


def time_scores(records: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(s.event_id for s in scores(records) if s.trigger == "time")


def test_a_quiet_customer_is_rescored_as_event_time_passes_and_raises_a_churn_alert(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "quiet-alert", tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    history = population(leavers=60, stayers=40, days=300)
    history += [order("steady", 7 * week) for week in range(20)]  # then silent from day 133
    history.sort(key=lambda e: (e.occurred_at, e.event_id))
    customers = sorted({e.customer_id for e in history})
    expected = expected_rescores(history, settings)
    ensure_topics(settings, settings.kafka_bootstrap)
    out = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
    alerts_topic = TopicReader(settings.kafka_bootstrap, settings.topics.alerts)

    with running_worker(settings, tmp_path / "worker.log"):
        send(settings, history)
        wait_until(lambda: applied_events(settings, customers) >= len(history), 120, "events")
        out.wait_for(lambda records: set(time_scores(records)) >= expected, 120)
        alerts_topic.drain(2.0)
    out.close()
    alerts_topic.close()

    published = time_scores(out.records)
    assert set(published) == expected  # the core's re-scores, no others
    assert max(published.values()) == 1  # each once
    steady = [s for s in scores(out.records) if s.customer_id == "steady" and s.trigger == "time"]
    as_of = [s.as_of for s in steady]
    last_purchase = T0 + timedelta(days=7 * 19)
    assert as_of == [last_purchase + timedelta(days=7 * k) for k in range(1, len(as_of) + 1)]
    assert steady[0].recency_days == pytest.approx(7.0)
    assert steady[-1].recency_days == pytest.approx((as_of[-1] - last_purchase).days)
    assert steady[-1].churn_probability > steady[0].churn_probability
    quiet_alerts = [
        alert
        for alert in (Alert.model_validate_json(r.value) for r in alerts_topic.records if r.value)
        if alert.kind == "churn_risk" and (alert.event_id or "").startswith("asof:")
    ]
    assert quiet_alerts, "no churn alert came from a re-score of a quiet customer"
    assert all("x their usual gap" in alert.message for alert in quiet_alerts)
    assert len({a.alert_id for a in quiet_alerts}) == len(quiet_alerts)
    print(
        f"\nquiet customers: {len(published)} re-scores, steady's churn probability "
        f"{steady[0].churn_probability:.2f} -> {steady[-1].churn_probability:.2f}, "
        f"{len(quiet_alerts)} churn alerts from re-scores"
    )


def test_a_worker_killed_mid_sweep_neither_skips_nor_doubles_a_rescore_or_an_alert(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "quiet-kill", tmp_path_factory).model_copy(
        update={"sweep_max_customers": 15}
    )
    assert settings.kafka_bootstrap is not None
    history = population(leavers=120, stayers=12, days=260)
    customers = sorted({e.customer_id for e in history})
    expected = expected_rescores(history, settings)
    ensure_topics(settings, settings.kafka_bootstrap)
    out = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
    alerts_topic = TopicReader(settings.kafka_bootstrap, settings.topics.alerts)

    with running_worker(settings, tmp_path / "first.log") as first:
        send(settings, history)
        wait_until(lambda: applied_events(settings, customers) >= len(history), 120, "events")
        out.wait_for(lambda records: len(time_scores(records)) >= len(expected) // 5, 120)
        first.kill()  # SIGKILL mid-sweep: no shutdown, no final commit
        first.wait()
    at_kill = len(time_scores(out.drain(1.0)))
    assert at_kill < len(expected), "the kill came too late to interrupt the sweeps"

    started = time.monotonic()
    with running_worker(settings, tmp_path / "second.log"):
        out.wait_for(lambda records: set(time_scores(records)) >= expected, 180)
        out.drain(3.0)  # anything sent twice would arrive now
        alerts_topic.drain(2.0)
    recovered_s = time.monotonic() - started
    out.close()
    alerts_topic.close()

    published = time_scores(out.records)
    lost = len(expected - set(published))
    doubled = sum(count - 1 for count in published.values())
    unexpected = set(published) - expected
    alert_ids = Counter(
        Alert.model_validate_json(r.value).alert_id
        for r in alerts_topic.records
        if r.value and b'"event_id":"asof:' in r.value
    )
    doubled_alerts = sum(count - 1 for count in alert_ids.values())
    assert (lost, doubled, unexpected, doubled_alerts) == (0, 0, set(), 0)
    outputs = outputs_on_topics(settings, history)  # the events' own scores, all re-scores' alerts
    assert (outputs.lost, outputs.duplicated, outputs.alerts_unexpected) == (0, 0, 0), outputs
    record_fault(
        "worker kill -9 mid-sweep, restart",
        settings,
        events_in=len(expected),
        reflected=len(expected) - lost,
        lost=lost,
        duplicated=doubled + doubled_alerts,
        note=f"re-scores (not events): {at_kill} of {len(expected)} published at the kill, the"
        f" rest after the restart ({recovered_s:.0f} s); {sum(alert_ids.values())} alerts"
        f" from re-scores, none twice; {outputs}",
        outputs=(len(expected) + outputs.expected, lost + outputs.lost, outputs.duplicated),
    )
