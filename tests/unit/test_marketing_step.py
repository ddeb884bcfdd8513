"""Marketing events and purchases in the customer's state (streamcrm.core.scoring.apply_marketing
and the purchase attribution of score_event)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.core.events import (
    CampaignTouch,
    PurchaseEvent,
    RetentionOffer,
    TouchClicked,
    TouchOpened,
)
from streamcrm.core.marketing import ArmFigures, ArmKey, Tally
from streamcrm.core.scoring import ScoringConfig, apply_marketing, score_event
from streamcrm.core.state import CustomerState
from streamcrm.errors import InvalidEventError, LateEventError
from streamcrm.models import ModelBundle
from streamcrm.settings import Settings
from streamcrm.store import InMemoryStateStore
from streamcrm.worker.pipeline import ScoringPipeline

DAY = timedelta(days=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = ScoringConfig()


def touch(n: int, day: float, arm: str = "A", cost: float = 0.25) -> CampaignTouch:
    return CampaignTouch(
        event_id=f"m{n}",
        customer_id="c1",
        occurred_at=T0 + day * DAY,
        touch_id=f"t{n}",
        campaign_id="spring",
        arm=arm,
        channel="email",
        cost=cost,
    )


def purchase(n: int, day: float, amount: float = 40.0) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"p{n}",
        customer_id="c1",
        order_id=f"o{n}",
        amount=amount,
        items=1,
        channel="web",
        occurred_at=T0 + day * DAY,
    )


def test_a_purchase_within_the_window_of_a_touch_converts_it() -> None:
    models = ModelBundle()
    bought = score_event(None, purchase(0, 0), models, CONFIG)
    touched = apply_marketing(bought.state, touch(1, 1), CONFIG)

    converted = score_event(touched.state, purchase(2, 3, amount=80.0), models, CONFIG)

    assert touched.campaigns.by_campaign_arm() == {("spring", "A"): ArmFigures(1, cost_cents=25)}
    assert converted.campaigns.by_campaign_arm() == {
        ("spring", "A"): ArmFigures(conversions=1, revenue_cents=8_000)
    }


def test_a_touch_that_arrives_after_the_purchase_it_won_converts_then() -> None:
    """The purchases and marketing topics are consumed independently."""
    models = ModelBundle()
    bought = score_event(None, purchase(0, 3, amount=80.0), models, CONFIG)

    touched = apply_marketing(bought.state, touch(1, 1), CONFIG)

    assert touched.campaigns.by_campaign_arm() == {
        ("spring", "A"): ArmFigures(1, conversions=1, revenue_cents=8_000, cost_cents=25)
    }


def test_a_touch_is_filed_under_the_customers_segment_of_their_newest_score() -> None:
    scored = score_event(None, purchase(0, 0), ModelBundle(), CONFIG)
    assert scored.score is not None

    touched = apply_marketing(scored.state, touch(1, 1), CONFIG)

    assert list(touched.campaigns.arms) == [ArmKey("spring", "A", scored.score.segment_name)]


def test_opens_clicks_and_retention_offers_are_recorded() -> None:
    offer = RetentionOffer(
        event_id="m1",
        customer_id="c1",
        occurred_at=T0,
        touch_id="t1",
        campaign_id="winback",
        arm="discount",
        channel="sms",
        alert_id="p9:churn_risk",
        cost=1.5,
    )
    state = apply_marketing(None, offer, CONFIG).state
    opened = apply_marketing(
        state, TouchOpened(event_id="m2", customer_id="c1", occurred_at=T0, touch_id="t1"), CONFIG
    )
    clicked = apply_marketing(
        opened.state,
        TouchClicked(event_id="m3", customer_id="c1", occurred_at=T0, touch_id="t1"),
        CONFIG,
    )

    assert opened.campaigns.by_campaign_arm() == {("winback", "discount"): ArmFigures(opens=1)}
    assert clicked.campaigns.by_campaign_arm() == {("winback", "discount"): ArmFigures(clicks=1)}


def test_a_repeated_marketing_event_changes_nothing() -> None:
    state = apply_marketing(None, touch(1, 0), CONFIG).state

    again = apply_marketing(state, touch(1, 0), CONFIG)

    assert again.duplicate and again.campaigns.is_zero and again.state == state


def test_a_marketing_event_older_than_the_customers_newest_one_by_the_lateness_is_late() -> None:
    state = apply_marketing(None, touch(0, 10), CONFIG).state

    late = apply_marketing(state, touch(1, 5), CONFIG)

    assert late.late_by == 3 * DAY  # newest touch (day 10) less 2 days' lateness, minus day 5
    assert late.campaigns.is_zero and late.state.late_events == 1


def test_a_touch_consumed_after_purchases_far_ahead_on_their_topic_still_wins_its_purchase() -> (
    None
):
    """The purchases and marketing topics are consumed independently: a worker catching up
    may apply a customer's purchases weeks ahead of their touches. A touch is late only
    against its own topic, and what the purchase topic ran ahead with is kept for it."""
    models, state = ModelBundle(), None
    for n, day in enumerate((2.0, 20.0, 40.0)):
        state = score_event(state, purchase(n, day), models, CONFIG).state

    touched = apply_marketing(state, touch(9, 1), CONFIG)

    assert touched.late_by is None
    figures = touched.campaigns.by_campaign_arm()[("spring", "A")]
    assert (figures.conversions, figures.revenue_cents) == (1, 4000)


def test_past_the_partitions_watermark_a_marketing_event_is_late_and_memory_forgets() -> None:
    """The watermark (every event of the customer's partition is in up to it, on every
    topic) settles attribution for a customer with events on one topic only."""
    models = ModelBundle()
    bought = score_event(None, purchase(0, 1), models, CONFIG).state
    assert bought.marketing.purchases  # a touch may still come for it

    later = score_event(bought, purchase(1, 30), models, CONFIG, watermark=T0 + 28 * DAY)

    assert [p.purchase_id for p in later.state.marketing.purchases] == ["p1"]
    late = apply_marketing(later.state, touch(9, 1), CONFIG, watermark=T0 + 28 * DAY)
    assert late.late_by == 27 * DAY and late.campaigns.is_zero


def test_a_touch_makes_a_prospect_whose_first_purchase_sets_when_they_were_first_seen() -> None:
    prospect = apply_marketing(None, touch(1, 0), CONFIG).state
    assert prospect.events_applied == 0

    customer = score_event(prospect, purchase(2, 5), ModelBundle(), CONFIG).state

    assert customer.first_seen_at == customer.last_event_at == T0 + 5 * DAY
    assert customer.order_count == 1


def test_marketing_events_do_not_move_the_customers_last_event_time() -> None:
    state = score_event(None, purchase(0, 0), ModelBundle(), CONFIG).state

    touched = apply_marketing(state, touch(1, 1), CONFIG).state

    assert touched.last_event_at == T0 and touched.events_applied == state.events_applied


def test_the_marketing_memory_is_saved_with_the_state_and_old_states_load_without_it() -> None:
    state = apply_marketing(None, touch(1, 0), CONFIG).state
    state = apply_marketing(
        state, TouchOpened(event_id="m2", customer_id="c1", occurred_at=T0, touch_id="t1"), CONFIG
    ).state

    assert CustomerState.model_validate_json(state.model_dump_json()) == state
    old = state.model_dump(mode="json")
    del old["marketing"]
    assert CustomerState.model_validate(old).marketing.touches == ()


async def test_a_purchase_through_the_pipeline_adds_its_conversion_to_the_partitions_figures() -> (
    None
):
    store = InMemoryStateStore()
    touched = apply_marketing(None, touch(1, 0), CONFIG)
    await store.save(touched.state, None)
    pipeline = ScoringPipeline(store, CONFIG)

    await pipeline.handle(purchase(2, 1).model_dump_json().encode(), "crm.purchases", 5, 0)

    assert Tally.from_fields(await store.campaign_fields(5)).by_campaign_arm() == {
        ("spring", "A"): ArmFigures(conversions=1, revenue_cents=4_000)
    }


async def test_a_marketing_message_is_applied_once_with_its_offset_mark() -> None:
    store = InMemoryStateStore()
    pipeline = ScoringPipeline(store, CONFIG)
    raw = touch(1, 0).model_dump_json().encode()

    await pipeline.handle_marketing(raw, "crm.marketing", 2, 0)
    redelivered = await ScoringPipeline(store, CONFIG).handle_marketing(raw, "crm.marketing", 2, 0)

    assert redelivered.duplicate
    assert Tally.from_fields(await store.campaign_fields(2)).by_campaign_arm() == {
        ("spring", "A"): ArmFigures(touches=1, cost_cents=25)
    }


async def test_a_late_marketing_message_is_counted_and_raised_for_the_dead_letters() -> None:
    store = InMemoryStateStore()
    pipeline = ScoringPipeline(store, CONFIG)
    await pipeline.handle_marketing(touch(0, 10).model_dump_json().encode(), "crm.marketing", 0, 0)

    with pytest.raises(LateEventError, match="attribution horizon"):
        await pipeline.handle_marketing(
            touch(1, 5).model_dump_json().encode(), "crm.marketing", 0, 1
        )

    state = await store.load("c1")
    assert state is not None and state.late_events == 1
    figures = Tally.from_fields(await store.campaign_fields(0)).by_campaign_arm()
    assert figures == {("spring", "A"): ArmFigures(touches=1, cost_cents=25)}  # the first only


async def test_a_malformed_marketing_message_is_invalid() -> None:
    pipeline = ScoringPipeline(InMemoryStateStore(), CONFIG)

    with pytest.raises(InvalidEventError):
        await pipeline.handle_marketing(b'{"type": "touch"}', "crm.marketing", 0, 0)


def test_the_attribution_window_is_a_setting() -> None:
    narrow = Settings(attribution_window_days=2).scoring
    touched = apply_marketing(None, touch(1, 0), narrow)

    bought = score_event(touched.state, purchase(2, 3), ModelBundle(), narrow)

    assert narrow.rules.attribution_window == 2 * DAY
    assert bought.campaigns.is_zero  # three days after the touch: outside a two-day window
