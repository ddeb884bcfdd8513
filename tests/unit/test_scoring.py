"""Behaviour of ``score_event``: one event in, the new state and one score out."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.core.events import (
    CancellationEvent,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)
from streamcrm.core.features import CHURN_FEATURE_NAMES, churn_features
from streamcrm.core.records import CustomerScore
from streamcrm.core.scoring import ScoredEvent, ScoringConfig, score_event
from streamcrm.core.state import CustomerState
from streamcrm.models import ModelBundle, QueuedUpdates
from streamcrm.models.segments import SEGMENT_NAMES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = ScoringConfig()
_ids = itertools.count()


def days(n: float) -> timedelta:
    return timedelta(days=n)


def purchase(day: float, amount: float = 60.0, customer_id: str = "c1") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"p{next(_ids)}",
        customer_id=customer_id,
        order_id=f"o{next(_ids)}",
        occurred_at=T0 + days(day),
        amount=amount,
        items=1,
        channel="web",
    )


def feedback(day: float, rating: int = 4) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=f"f{next(_ids)}",
        customer_id="c1",
        occurred_at=T0 + days(day),
        rating=rating,
        scale="csat",
        category="product",
    )


def cancellation(day: float) -> CancellationEvent:
    return CancellationEvent(
        event_id=f"x{next(_ids)}", customer_id="c1", occurred_at=T0 + days(day)
    )


def score_all(
    events: Iterable[Event], models: ModelBundle, state: CustomerState | None = None
) -> ScoredEvent:
    """Score ``events`` in order, carrying the state; return the last outcome.

    The watermark follows the events, as a worker's does (newest event time less lateness).
    """
    scored = None
    newest: datetime | None = None
    for event in events:
        newest = event.occurred_at if newest is None else max(newest, event.occurred_at)
        watermark = newest - CONFIG.rules.allowed_lateness
        scored = score_event(state, event, models, CONFIG, watermark)
        state = scored.state
    assert scored is not None
    return scored


def test_default_config_uses_a_ninety_day_churn_window() -> None:
    assert CONFIG.churn_window == timedelta(days=90)


def test_purchase_score_is_consistent_with_the_state() -> None:
    models = ModelBundle()
    first = score_all([purchase(0, amount=100.0)], models)

    version_before = models.version
    scored = score_event(first.state, purchase(20, amount=50.0), models, CONFIG)

    score, state = scored.score, scored.state
    assert isinstance(score, CustomerScore)
    assert score.customer_id == "c1"
    assert score.as_of == T0 + days(20)
    assert score.frequency == state.order_count == 2
    assert score.monetary == state.monetary == 150.0
    assert score.recency_days == 0.0
    assert score.open_tickets == 0
    assert score.satisfaction_mean is None
    assert score.satisfaction_recent is None
    assert score.model_version == version_before  # the models that made it
    assert score.segment_name in SEGMENT_NAMES
    assert 0.0 <= score.churn_probability <= 1.0
    assert 0.0 <= score.loyalty <= 1.0
    assert 0.0 <= score.health <= 100.0


def test_model_version_names_the_models_that_made_the_score() -> None:
    models = ModelBundle()

    scored = score_all([purchase(0), purchase(100)], models)  # the day-0 window closed

    # The settled label was learned before the prediction; this customer is learned by the
    # segments only after it was placed (predict, then learn).
    assert scored.score is not None
    assert scored.score.model_version == "churn-1.segments-1.clv-0"
    assert models.version == "churn-1.segments-2.clv-0"


def test_a_queued_learner_receives_the_updates_and_the_models_stay_unchanged() -> None:
    models, queue = ModelBundle(), QueuedUpdates()
    first = score_event(None, purchase(0), models, CONFIG, learner=queue)

    score_event(first.state, purchase(100), models, CONFIG, T0 + days(98), learner=queue)

    assert models.version == "churn-0.segments-0.clv-0"
    assert [u.kind for u in queue.drain()] == ["scored", "labelled", "scored"]
    assert queue.drain() == []


def test_score_carries_the_event_id_and_satisfaction() -> None:
    event = feedback(3, rating=5)

    scored = score_all([purchase(0), event], ModelBundle())

    assert scored.score is not None
    assert scored.score.event_id == event.event_id
    assert scored.score.satisfaction_mean == 1.0
    assert scored.score.satisfaction_recent == 1.0


def test_recency_is_unknown_before_any_purchase() -> None:
    scored = score_all([feedback(0)], ModelBundle())

    assert scored.score is not None
    assert scored.score.recency_days is None
    assert scored.score.frequency == 0


def test_purchase_leaves_a_pending_snapshot_of_the_churn_features_it_scored() -> None:
    scored = score_all([purchase(0)], ModelBundle())

    (snapshot,) = scored.state.pending_snapshots
    assert snapshot.scored_at == T0
    assert snapshot.features == churn_features(scored.state, T0, CONFIG.churn_window)


def test_a_second_purchase_within_the_window_marks_the_snapshot_retained_to_learn_later() -> None:
    models = ModelBundle()
    first = score_all([purchase(0)], models)

    second = score_event(first.state, purchase(30), models, CONFIG, watermark=T0 + days(28))

    assert second.examples_learned == 0  # the day-0 window is still open
    assert [(s.scored_at, s.purchased) for s in second.state.pending_snapshots] == [
        (T0, True),
        (T0 + days(30), False),
    ]
    third = score_event(second.state, feedback(95), models, CONFIG, watermark=T0 + days(93))
    assert third.examples_learned == 1
    assert (models.churn.n_learned, models.churn.n_churned) == (1, 0)


def test_a_window_that_closes_without_a_purchase_teaches_a_churned_example() -> None:
    models = ModelBundle()

    score_all([purchase(0), feedback(70), purchase(150)], models)

    # day 0: bought again only on day 150 (churned); day 70: bought on day 150 (retained,
    # but that window closes only on day 160).
    assert models.churn.n_learned == 1
    assert models.churn.n_churned == 1


def test_cancellation_means_certain_churn_and_teaches_every_pending_snapshot() -> None:
    models = ModelBundle()
    before = score_all([purchase(0), feedback(5)], models)
    pending = len(before.state.pending_snapshots)
    learned, churned = models.churn.n_learned, models.churn.n_churned

    scored = score_event(before.state, cancellation(12), models, CONFIG)

    assert pending == 2
    assert scored.score is not None
    assert scored.score.churn_probability == 1.0
    assert scored.score.clv_simple == 0.0
    assert scored.state.pending_snapshots == ()
    assert scored.examples_learned == pending
    assert models.churn.n_learned == learned + pending
    assert models.churn.n_churned == churned + pending


def test_a_cancelled_customer_stays_certain_churn_without_new_snapshots() -> None:
    models = ModelBundle()

    scored = score_all([purchase(0), cancellation(1), feedback(2, rating=1)], models)

    assert scored.score is not None
    assert scored.score.churn_probability == 1.0
    assert scored.state.pending_snapshots == ()


def test_a_purchase_after_cancellation_reactivates_the_customer() -> None:
    models = ModelBundle()

    scored = score_all([purchase(0), cancellation(1), purchase(40)], models)

    assert scored.score is not None
    assert scored.score.churn_probability < 1.0
    assert len(scored.state.pending_snapshots) == 1


def test_duplicate_event_gives_no_score_and_teaches_nothing() -> None:
    models = ModelBundle()
    event = purchase(0)
    first = score_event(None, event, models, CONFIG)
    version = models.version

    again = score_event(first.state, event, models, CONFIG)

    assert again.duplicate is True
    assert again.score is None
    assert again.examples_learned == 0
    assert again.state == first.state
    assert models.version == version


def test_a_new_event_is_not_a_duplicate() -> None:
    assert score_event(None, purchase(0), ModelBundle(), CONFIG).duplicate is False


def test_scores_depend_only_on_event_time_and_the_event_stream() -> None:
    events: list[Event] = [
        purchase(0, 80.0),
        feedback(2, 3),
        SupportEvent(
            event_id="s1",
            customer_id="c1",
            occurred_at=T0 + days(3),
            ticket_id="t1",
            action="opened",
            channel="chat",
            category="complaint",
        ),
        purchase(40, 20.0),
        RefundEvent(
            event_id="r1", customer_id="c1", occurred_at=T0 + days(41), order_id="o", amount=5.0
        ),
        purchase(200, 70.0),
        cancellation(210),
    ]

    def replay() -> list[CustomerScore | None]:
        models = ModelBundle()
        state: CustomerState | None = None
        scores: list[CustomerScore | None] = []
        for event in events:
            scored = score_event(state, event, models, CONFIG)
            state = scored.state
            scores.append(scored.score)
        return scores

    first, second = replay(), replay()

    assert first == second
    assert all(score is not None for score in first)


def test_churn_window_is_configurable() -> None:
    models = ModelBundle()
    short = ScoringConfig(churn_window=timedelta(days=7))
    first = score_event(None, purchase(0), models, short)

    score_event(first.state, purchase(30), models, short, watermark=T0 + days(28))

    assert models.churn.n_churned == 1


@pytest.mark.parametrize(("rate", "horizon"), [(0.0, 1), (0.2, 3)])
def test_discount_rate_and_horizon_come_from_the_config(rate: float, horizon: int) -> None:
    config = ScoringConfig(discount_rate=rate, horizon_years=horizon)
    models = ModelBundle()

    scored = score_event(None, purchase(0, amount=100.0), models, config)

    assert scored.score is not None
    value, retention = scored.score.customer_value, 1.0 - scored.score.churn_probability
    expected = sum(value * retention**t / (1 + rate) ** t for t in range(1, horizon + 1))
    assert scored.score.clv_discounted == pytest.approx(expected)


def test_clv_is_set_against_the_acquisition_cost_when_an_order_reports_it() -> None:
    order = PurchaseEvent(
        event_id="cac-1",
        customer_id="cac",
        order_id="o1",
        amount=100.0,
        items=1,
        channel="web",
        acquisition_cost=50.0,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )

    scored = score_event(None, order, ModelBundle(), ScoringConfig())

    assert scored.score is not None
    assert scored.score.clv_to_acquisition_cost == pytest.approx(scored.score.clv_simple / 50.0)


def test_scores_carry_churn_drivers_segment_distance_and_the_repeat_buying_forecast() -> None:
    models = ModelBundle()
    for n in range(120):
        history = [purchase(d, customer_id=f"c{n}") for d in range(0, 1 + n % 5 * 40, 20)]
        state = score_all(history, models).state
        models.learn_labelled(churn_features(state, T0 + days(200), days(90)), n % 5 == 0)
    assert models.repeat_buying.fits >= 1

    scored = score_all([purchase(0), purchase(30), purchase(61)], models)

    assert scored.score is not None
    drivers = scored.score.churn_drivers
    assert drivers and {d.feature for d in drivers} <= set(CHURN_FEATURE_NAMES)
    assert scored.score.segment_distance is not None and scored.score.segment_distance >= 0
    assert 0 < (scored.score.probability_alive or 0) <= 1
    assert scored.score.expected_purchases is not None and scored.score.expected_purchases > 0
    assert scored.score.clv_expected is not None and scored.score.clv_expected > 0
    assert scored.score.model_version.endswith(f".clv-{models.repeat_buying.fits}")
