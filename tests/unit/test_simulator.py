"""Behaviour of the seeded customer event simulator."""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone

import pytest

from streamcrm.core.events import (
    CancellationEvent,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
    decode_event,
)
from streamcrm.sim.simulator import Simulation, simulate

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 180


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(customers=400, days=DAYS, seed=42, start=START, churn_share=0.25)


def test_same_seed_gives_same_stream() -> None:
    first = simulate(customers=30, days=60, seed=3)
    second = simulate(customers=30, days=60, seed=3)

    assert first.events == second.events
    assert first.truth == second.truth


def test_different_seed_gives_different_stream() -> None:
    first = simulate(customers=30, days=60, seed=3)
    second = simulate(customers=30, days=60, seed=4)

    assert first.events != second.events


def test_global_random_state_is_left_alone() -> None:
    random.seed(123)
    before = random.getstate()

    simulate(customers=10, days=30, seed=1)

    assert random.getstate() == before


def test_events_are_sorted_and_inside_the_period(sim: Simulation) -> None:
    keys = [(event.occurred_at, event.event_id) for event in sim.events]

    assert keys == sorted(keys)
    assert sim.events[0].occurred_at >= START
    assert sim.events[-1].occurred_at <= START + timedelta(days=DAYS)


def test_a_short_period_is_never_overrun() -> None:
    end = START + timedelta(days=3)

    short = simulate(customers=50, days=3, seed=5)

    assert short.events
    assert all(START <= event.occurred_at <= end for event in short.events)


def test_a_start_in_another_timezone_is_respected() -> None:
    start = datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))

    shifted = simulate(customers=20, days=30, seed=1, start=start)

    assert all(start <= event.occurred_at <= start + timedelta(days=30) for event in shifted.events)


def test_event_ids_are_unique(sim: Simulation) -> None:
    ids = [event.event_id for event in sim.events]

    assert len(ids) == len(set(ids))


def test_order_ids_are_unique(sim: Simulation) -> None:
    orders = [event.order_id for event in sim.events if isinstance(event, PurchaseEvent)]

    assert len(orders) == len(set(orders))


def test_every_ticket_is_opened_once_before_its_other_steps(sim: Simulation) -> None:
    steps: defaultdict[str, list[SupportEvent]] = defaultdict(list)
    for event in sim.events:
        if isinstance(event, SupportEvent):
            steps[event.ticket_id].append(event)

    assert steps
    for ticket in steps.values():
        actions = [step.action for step in ticket]
        assert actions[0] == "opened"
        assert actions.count("opened") == 1
        assert len({step.customer_id for step in ticket}) == 1
        assert "resolved" not in actions[:-1]


def test_every_event_round_trips_through_decode_event(sim: Simulation) -> None:
    for event in sim.events:
        assert decode_event(event.model_dump_json().encode()) == event


def test_every_kind_of_event_is_produced(sim: Simulation) -> None:
    kinds = {type(event) for event in sim.events}

    assert kinds == {PurchaseEvent, RefundEvent, FeedbackEvent, SupportEvent, CancellationEvent}


def test_ratings_use_both_scales_mostly_csat(sim: Simulation) -> None:
    scales = Counter(event.scale for event in sim.events if isinstance(event, FeedbackEvent))

    assert scales["csat"] > scales["nps"] > 0


def test_loyal_customers_buy_more_often_than_occasional_ones(sim: Simulation) -> None:
    purchases = Counter(event.customer_id for event in sim.events if event.type == "purchase")

    def mean_purchases(persona: str) -> float:
        return statistics.mean(
            purchases[truth.customer_id]
            for truth in sim.truth.values()
            if truth.persona == persona and not truth.churns
        )

    assert mean_purchases("loyal") > mean_purchases("regular") > mean_purchases("occasional")


def test_some_customers_first_buy_well_after_start(sim: Simulation) -> None:
    first_purchase: dict[str, datetime] = {}
    for event in sim.events:
        if isinstance(event, PurchaseEvent):
            first_purchase.setdefault(event.customer_id, event.occurred_at)

    late = [at for at in first_purchase.values() if at > START + timedelta(days=DAYS / 6)]
    assert late
    assert max(first_purchase.values()) <= START + timedelta(days=DAYS / 3)


def test_about_churn_share_of_customers_churn(sim: Simulation) -> None:
    share = sum(truth.churns for truth in sim.truth.values()) / len(sim.truth)

    assert 0.15 <= share <= 0.35


def test_no_customer_churns_at_zero_share() -> None:
    loyal_world = simulate(customers=50, days=90, seed=2, churn_share=0.0)

    assert not any(truth.churns for truth in loyal_world.truth.values())
    assert not any(isinstance(event, CancellationEvent) for event in loyal_world.events)


def test_truth_dates_are_set_only_for_churners(sim: Simulation) -> None:
    for truth in sim.truth.values():
        if truth.churns:
            assert truth.drift_starts_at is not None
            assert truth.churned_at is not None
            assert START < truth.drift_starts_at < truth.churned_at
            assert truth.churned_at <= START + timedelta(days=DAYS)
        else:
            assert truth.drift_starts_at is None
            assert truth.churned_at is None
            assert not truth.cancelled


def test_churners_buy_less_in_the_second_half(sim: Simulation) -> None:
    half = START + timedelta(days=DAYS / 2)
    purchases = Counter(
        event.customer_id
        for event in sim.events
        if event.type == "purchase" and event.occurred_at >= half
    )
    churners = [truth.customer_id for truth in sim.truth.values() if truth.churns]
    others = [truth.customer_id for truth in sim.truth.values() if not truth.churns]

    churner_rate = statistics.mean(purchases[customer] for customer in churners)
    other_rate = statistics.mean(purchases[customer] for customer in others)

    assert churner_rate < 0.6 * other_rate


def test_churners_rate_worse_after_drift(sim: Simulation) -> None:
    churner_ratings, other_ratings = [], []
    for event in sim.events:
        if not isinstance(event, FeedbackEvent):
            continue
        truth = sim.truth[event.customer_id]
        if not truth.churns:
            other_ratings.append(event.normalised_rating)
        elif truth.drift_starts_at is not None and event.occurred_at >= truth.drift_starts_at:
            churner_ratings.append(event.normalised_rating)

    assert len(churner_ratings) >= 20
    assert statistics.mean(churner_ratings) < statistics.mean(other_ratings) - 0.08


def test_churners_complain_more_after_drift(sim: Simulation) -> None:
    def complaint_share(tickets: list[SupportEvent]) -> float:
        return sum(ticket.category == "complaint" for ticket in tickets) / len(tickets)

    drifting, others = [], []
    for event in sim.events:
        if isinstance(event, SupportEvent) and event.action == "opened":
            truth = sim.truth[event.customer_id]
            if not truth.churns:
                others.append(event)
            elif truth.drift_starts_at is not None and event.occurred_at >= truth.drift_starts_at:
                drifting.append(event)

    assert complaint_share(drifting) > complaint_share(others) + 0.1


def test_churners_are_silent_after_churned_at(sim: Simulation) -> None:
    for event in sim.events:
        churned_at = sim.truth[event.customer_id].churned_at
        if churned_at is not None:
            assert event.occurred_at <= churned_at


def test_cancelled_churners_send_exactly_one_cancellation_at_churn(sim: Simulation) -> None:
    cancellations = [event for event in sim.events if isinstance(event, CancellationEvent)]
    by_customer = Counter(event.customer_id for event in cancellations)
    cancelled = {truth.customer_id for truth in sim.truth.values() if truth.cancelled}
    churners = sum(truth.churns for truth in sim.truth.values())

    assert set(by_customer) == cancelled
    assert set(by_customer.values()) == {1}
    assert all(
        event.occurred_at == sim.truth[event.customer_id].churned_at for event in cancellations
    )
    assert 0.15 <= len(cancelled) / churners <= 0.5


def test_refunds_never_exceed_their_order_and_come_after_it(sim: Simulation) -> None:
    orders = {event.order_id: event for event in sim.events if isinstance(event, PurchaseEvent)}
    refunded: defaultdict[str, float] = defaultdict(float)
    refunds = [event for event in sim.events if isinstance(event, RefundEvent)]

    assert refunds
    for refund in refunds:
        order = orders[refund.order_id]
        assert refund.customer_id == order.customer_id
        assert refund.occurred_at > order.occurred_at
        refunded[refund.order_id] += refund.amount
    assert all(refunded[order_id] <= orders[order_id].amount for order_id in refunded)


def test_refunds_are_occasional(sim: Simulation) -> None:
    kinds = Counter(event.type for event in sim.events)

    assert 0.01 <= kinds["refund"] / kinds["purchase"] <= 0.08


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"customers": -1, "days": 10}, "customers"),
        ({"customers": 10, "days": 0}, "days"),
        ({"customers": 10, "days": 10, "churn_share": 1.5}, "churn_share"),
        ({"customers": 10, "days": 10, "start": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_impossible_arguments_are_rejected(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(**arguments)  # type: ignore[arg-type]
