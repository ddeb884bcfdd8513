"""Campaign events end to end: kafka-python → Tansu → Faust worker → per-partition campaign
figures in Redis, summed when read (docs/marketing.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.core.events import (
    CampaignTouch,
    CancellationEvent,
    PurchaseEvent,
    TouchClicked,
    TouchOpened,
)
from streamcrm.core.experiments import is_control
from streamcrm.core.marketing import ArmFigures, Tally, summed
from streamcrm.core.records import CampaignMetrics, UpliftMetrics
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import Record
from streamcrm.settings import Settings
from streamcrm.store.base import campaigns_key
from tests.conftest import isolated_settings
from tests.integration.worker_harness import (
    TopicReader,
    dead_letters,
    redis_client,
    running_worker,
    send,
    send_raw,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def settings(services: EmbeddedServices, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return isolated_settings(services, "marketing", tmp_path_factory)


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with running_worker(settings, tmp_path_factory.mktemp("worker") / "worker.log"):
        yield


def touch(customer: str, n: int, arm: str, day: float, cost: float) -> CampaignTouch:
    return CampaignTouch(
        event_id=f"{customer}-m{n}",
        customer_id=customer,
        occurred_at=T0 + timedelta(days=day),
        touch_id=f"{customer}-t{n}",
        campaign_id="spring",
        arm=arm,
        channel="email",
        cost=cost,
    )


def purchase(customer: str, amount: float, day: float) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"{customer}-p",
        customer_id=customer,
        order_id=f"{customer}-o",
        amount=amount,
        items=1,
        channel="web",
        occurred_at=T0 + timedelta(days=day),
    )


def send_marketing(settings: Settings, *events: CampaignTouch | TouchOpened | TouchClicked) -> None:
    for event in events:
        send_raw(
            settings,
            settings.topics.marketing,
            event.customer_id.encode(),
            event.model_dump_json().encode(),
        )


def campaign_figures(settings: Settings) -> dict[tuple[str, str], ArmFigures]:
    """Every partition's partial figures from Redis, summed (as a reader of them would)."""
    assert settings.redis_url is not None
    client = redis_client(settings, decode_responses=True)
    try:
        parts = [
            Tally.from_fields(
                {
                    name: int(value)
                    for name, value in client.hgetall(
                        campaigns_key(settings.redis_namespace, partition)
                    ).items()
                }
            )
            for partition in range(settings.partitions)
        ]
    finally:
        client.close()
    return summed(parts).by_campaign_arm()


def test_touches_opens_clicks_and_attributed_purchases_reach_the_campaign_figures(
    settings: Settings, worker: None, tmp_path: Path
) -> None:
    # mk1: touched, then buys within the window; mk2: buys, and the touch that won the
    # purchase is sent afterwards (the topics are consumed independently); mk3: touched,
    # opens and clicks, buys nothing.
    send_marketing(settings, touch("mk1", 1, "A", 0, 0.5))
    send(settings, [purchase("mk1", 30.0, 2), purchase("mk2", 45.0, 1)])
    send_marketing(
        settings,
        touch("mk2", 1, "B", 0, 0.5),
        touch("mk3", 1, "A", 0, 0.5),
        TouchOpened(event_id="mk3-m2", customer_id="mk3", occurred_at=T0, touch_id="mk3-t1"),
        TouchClicked(event_id="mk3-m3", customer_id="mk3", occurred_at=T0, touch_id="mk3-t1"),
        touch("mk1", 1, "A", 0, 0.5),  # the same touch again: counted once
    )
    expected = {
        ("spring", "A"): ArmFigures(
            touches=2, opens=1, clicks=1, conversions=1, revenue_cents=3_000, cost_cents=100
        ),
        ("spring", "B"): ArmFigures(touches=1, conversions=1, revenue_cents=4_500, cost_cents=50),
    }

    deadline = time.monotonic() + 90
    while campaign_figures(settings) != expected:
        assert time.monotonic() < deadline, f"campaign figures: {campaign_figures(settings)}"
        time.sleep(0.5)
    time.sleep(3)  # nothing more arrives: the repeated touch was not counted twice
    assert campaign_figures(settings) == expected

    # The campaign's report: the same figures, in money, with each arm's posterior.
    assert settings.kafka_bootstrap is not None
    reader = TopicReader(settings.kafka_bootstrap, settings.topics.campaign_metrics)
    try:

        def complete(records: list[Record]) -> bool:
            reports = [CampaignMetrics.model_validate_json(r.value) for r in records if r.value]
            return any(
                sum(arm.conversions for arm in report.arms) == 2 and len(report.arms) == 2
                for report in reports
            )

        reader.wait_for(complete)
        report = [CampaignMetrics.model_validate_json(r.value) for r in reader.records if r.value][
            -1
        ]
    finally:
        reader.close()
    by_arm = {arm.arm: arm for arm in report.arms}
    assert report.campaign_id == "spring"
    assert (by_arm["A"].touches, by_arm["A"].attributed_revenue, by_arm["A"].cost) == (2, 30.0, 1.0)
    assert (by_arm["B"].touches, by_arm["B"].effect, by_arm["B"].roi) == (1, 44.5, 89.0)
    # One conversion in two touches under the uniform prior: (1 + 1) / (2 + 2) = 0.5 once A's
    # other touch's window has closed; while it is open (here), that touch counts for the
    # share F of its window's conversions already due: (1 + 1) / (1 + F + 1 + 1), F in [0, 1].
    assert 0.5 <= by_arm["A"].conversion_rate <= 2 / 3
    assert not report.stop  # 500 touches per arm at least


def test_a_malformed_marketing_message_is_dead_lettered_with_its_reason(
    settings: Settings, worker: None
) -> None:
    assert settings.kafka_bootstrap is not None
    reader = TopicReader(settings.kafka_bootstrap, settings.topics.deadletter)
    try:
        send_raw(
            settings,
            settings.topics.marketing,
            b"mk9",
            b'{"type": "touch", "event_id": "mk9-m1", "customer_id": "mk9",'
            b' "occurred_at": "2026-03-01T09:00:00Z", "touch_id": "t", "campaign_id": "c",'
            b' "arm": "A", "channel": "email", "cost": "0.5"}',
        )
        reader.wait_for(lambda records: any(b"mk9-m1" in (r.value or b"") for r in records))
        letters = [
            letter
            for letter in dead_letters(reader.records)
            if letter.source_topic == settings.topics.marketing
        ]
    finally:
        reader.close()
    assert [letter.reason_code for letter in letters] == ["schema:float_type"]


def test_a_churn_alert_is_counted_for_the_uplift_once_its_window_has_closed(
    services: EmbeddedServices, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A cancellation raises a churn alert; when the watermark has passed its churn window
    (other customers' events move it), the sweep settles it: crm.uplift counts it once, in
    the group its control mark put it, not retained (no purchase came). Its own worker and
    namespace, so no other test's alerts are counted."""
    settings = isolated_settings(services, "uplift", tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    with running_worker(settings, tmp_path_factory.mktemp("uplift") / "worker.log"):
        _count_one_settled_alert(settings)


def _count_one_settled_alert(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    window = timedelta(days=settings.churn_window_days)
    cancel = CancellationEvent(
        event_id="up1-x", customer_id="up1", occurred_at=T0 + timedelta(days=1)
    )
    send(settings, [purchase("up1", 20.0, 0), cancel])
    later = T0 + timedelta(days=3) + window + timedelta(hours=settings.allowed_lateness_hours)
    send(
        settings,
        [
            PurchaseEvent(
                event_id=f"clock-{n}",
                customer_id=f"clock-{n}",
                order_id=f"clock-o{n}",
                amount=5.0,
                items=1,
                channel="web",
                occurred_at=later,
            )
            for n in range(2 * settings.partitions)  # every partition's watermark moves
        ],
    )
    reader = TopicReader(settings.kafka_bootstrap, settings.topics.uplift)
    try:

        def counted(records: list[Record]) -> bool:
            reports = [UpliftMetrics.model_validate_json(r.value) for r in records if r.value]
            return any(r.segment == "" and r.acted_alerts + r.control_alerts >= 1 for r in reports)

        reader.wait_for(counted, timeout_s=120)
        overall = [
            UpliftMetrics.model_validate_json(r.value)
            for r in reader.records
            if r.value and b'"segment":""' in r.value
        ][-1]
    finally:
        reader.close()
    alert_id = "up1-x:churn_risk"
    held_out = is_control("up1", alert_id, settings.alert_control_share)
    assert overall.kind == "churn_risk"
    assert (overall.control_alerts, overall.acted_alerts) == ((1, 0) if held_out else (0, 1))
    assert overall.acted_retained == overall.control_retained == 0
