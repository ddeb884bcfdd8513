"""Behaviour of ``customer_features``: a state, measured as of an event time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcrm.core.features import (
    FEATURE_NAMES,
    MIN_TENURE_DAYS_FOR_RATES,
    NEUTRAL_SATISFACTION,
    customer_features,
)
from streamcrm.core.state import CustomerState, Rating, Ticket, TicketTotals

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def customer(**fields: Any) -> CustomerState:
    """A state first seen at ``T0`` and last active at ``T0 + 60 days`` unless overridden."""
    return CustomerState(
        **{"customer_id": "c1", "first_seen_at": T0, "last_event_at": T0 + days(60), **fields}
    )


def buyer(**fields: Any) -> CustomerState:
    """Four orders (first on day 10, last on day 50) worth 400 gross, 100 refunded."""
    return customer(
        **{
            "first_purchase_at": T0 + days(10),
            "last_purchase_at": T0 + days(50),
            "order_count": 4,
            "gross_cents": 40_000,
            "refund_count": 1,
            "refunded_cents": 10_000,
            **fields,
        }
    )


AS_OF = T0 + days(70)


def test_recency_counts_days_since_the_last_purchase() -> None:
    assert customer_features(buyer(), AS_OF)["recency_days"] == 20.0


def test_recency_falls_back_to_first_seen_before_any_purchase() -> None:
    assert customer_features(customer(), AS_OF)["recency_days"] == 70.0


def test_recency_is_fractional_in_days() -> None:
    features = customer_features(buyer(), T0 + days(50) + timedelta(hours=12))

    assert features["recency_days"] == pytest.approx(0.5)


def test_tenure_counts_from_the_first_purchase() -> None:
    assert customer_features(buyer(), AS_OF)["tenure_days"] == 60.0


def test_tenure_counts_from_first_seen_before_any_purchase() -> None:
    assert customer_features(customer(), AS_OF)["tenure_days"] == 70.0


def test_frequency_and_monetary_are_orders_and_net_revenue() -> None:
    features = customer_features(buyer(), AS_OF)

    assert features["frequency"] == 4.0
    assert features["monetary"] == 300.0


def test_average_order_value_is_net_revenue_per_order() -> None:
    assert customer_features(buyer(), AS_OF)["average_order_value"] == 75.0


def test_average_order_value_is_zero_without_orders() -> None:
    assert customer_features(customer(), AS_OF)["average_order_value"] == 0.0


def test_orders_per_month_is_orders_over_tenure_in_thirty_day_months() -> None:
    # 4 orders over 60 days of tenure = 2 per 30 days.
    assert customer_features(buyer(), AS_OF)["orders_per_month"] == pytest.approx(2.0)


def test_orders_per_month_uses_at_least_thirty_days_of_tenure() -> None:
    fresh = buyer(first_purchase_at=AS_OF - days(1), order_count=1)

    features = customer_features(fresh, AS_OF)

    assert MIN_TENURE_DAYS_FOR_RATES == 30.0
    assert features["tenure_days"] == 1.0
    assert features["orders_per_month"] == pytest.approx(1.0)


def test_orders_per_month_on_the_first_day_is_not_a_division_by_zero() -> None:
    first_day = buyer(first_purchase_at=AS_OF, last_purchase_at=AS_OF, order_count=1)

    assert customer_features(first_day, AS_OF)["orders_per_month"] == pytest.approx(1.0)


def test_refund_rate_is_refunds_per_order() -> None:
    assert customer_features(buyer(refund_count=2), AS_OF)["refund_rate"] == 0.5


def test_refund_rate_is_zero_without_orders() -> None:
    assert customer_features(customer(refund_count=2), AS_OF)["refund_rate"] == 0.0


def test_satisfaction_is_neutral_before_any_rating() -> None:
    features = customer_features(customer(), AS_OF)

    assert NEUTRAL_SATISFACTION == 0.5
    assert features["satisfaction_mean"] == 0.5
    assert features["satisfaction_recent"] == 0.5
    assert features["rating_count"] == 0.0


def test_satisfaction_is_the_mean_and_the_ewma_of_ratings() -> None:
    # CSAT 5, 4, 4 and 2 normalise to 1, 0.75, 0.75, 0.25: mean 0.6875.
    ratings = [(1, 1.0), (2, 0.75), (3, 0.75), (4, 0.25)]
    rated = customer(
        csat_count=4,
        csat_sum=15,
        recent_ratings=tuple(
            Rating(occurred_at=T0 + days(day), event_id=f"f{day}", score=score)
            for day, score in ratings
        ),
    )

    features = customer_features(rated, AS_OF)

    ewma = 1.0
    for _, score in ratings[1:]:
        ewma = 0.3 * score + 0.7 * ewma
    assert features["satisfaction_mean"] == 0.6875
    assert features["satisfaction_recent"] == pytest.approx(ewma)
    assert features["rating_count"] == 4.0


def test_support_load_features() -> None:
    # Three open complaints (one answered after 2 h) and, long resolved and forgotten, two
    # inquiries, one answered after 5 h.
    supported = customer(
        tickets={
            "t0": Ticket(opened_at=AS_OF - hours(2), first_response_at=AS_OF, category="complaint"),
            "t1": Ticket(opened_at=AS_OF, category="complaint"),
            "t2": Ticket(opened_at=AS_OF, category="complaint"),
        },
        forgotten_tickets=TicketTotals(
            opened=2,
            resolved=2,
            by_category={"inquiry": 2},
            first_response_count=1,
            first_response_seconds=5 * 3600,
        ),
        escalations=1,
    )

    features = customer_features(supported, AS_OF)

    assert features["open_tickets"] == 3.0
    assert features["complaints"] == 3.0
    assert features["escalations"] == 1.0
    assert features["mean_first_response_hours"] == 3.5


def test_support_load_is_zero_without_tickets() -> None:
    features = customer_features(customer(), AS_OF)

    assert features["open_tickets"] == 0.0
    assert features["complaints"] == 0.0
    assert features["escalations"] == 0.0
    assert features["mean_first_response_hours"] == 0.0


def test_days_since_last_event_counts_from_any_event() -> None:
    assert customer_features(buyer(), AS_OF)["days_since_last_event"] == 10.0


def test_features_are_never_negative_when_as_of_is_before_the_events() -> None:
    features = customer_features(buyer(), T0 - days(30))

    assert features["recency_days"] == 0.0
    assert features["tenure_days"] == 0.0
    assert features["days_since_last_event"] == 0.0
    assert all(value >= 0.0 for value in features.values())


def test_exactly_the_documented_features_are_present() -> None:
    features = customer_features(buyer(), AS_OF)

    assert tuple(features) == FEATURE_NAMES
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


@settings(max_examples=100, deadline=None)
@given(
    as_of_offset=st.floats(min_value=-1000, max_value=1000),
    orders=st.integers(min_value=0, max_value=1000),
    gross=st.integers(min_value=0, max_value=10**9),
    refunded=st.integers(min_value=0, max_value=10**9),
    refunds=st.integers(min_value=0, max_value=1000),
    ratings=st.integers(min_value=0, max_value=100),
    tickets=st.tuples(st.integers(0, 50), st.integers(0, 50)),
)
def test_every_feature_is_a_finite_non_negative_float(
    as_of_offset: float,
    orders: int,
    gross: int,
    refunded: int,
    refunds: int,
    ratings: int,
    tickets: tuple[int, int],
) -> None:
    state = buyer(
        order_count=orders,
        gross_cents=gross,
        refunded_cents=refunded,
        refund_count=refunds,
        csat_count=ratings,
        csat_sum=ratings * 4,
        tickets={
            f"t{i}": Ticket(opened_at=T0, resolved_at=T0 if i < tickets[1] else None)
            for i in range(tickets[0])
        },
    )

    features = customer_features(state, T0 + days(as_of_offset))

    assert set(features) == set(FEATURE_NAMES)
    for name, value in features.items():
        assert type(value) is float, name
        assert math.isfinite(value), name
        assert value >= 0.0, name
