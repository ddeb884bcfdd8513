"""Behaviour of the deterministic customer scores (satisfaction, value, CLV, loyalty, health)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcrm.core.scores import (
    DEFAULT_DISCOUNT_RATE,
    DEFAULT_HORIZON_YEARS,
    annual_order_rate,
    clv_discounted,
    clv_simple,
    customer_value,
    discounted_value,
    health_score,
    loyalty_index,
    satisfaction_mean,
)
from streamcrm.core.state import CustomerState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BUYER = {"average_order_value": 50.0, "orders_per_month": 2.0}
"""Features of a customer worth 50 × 24 = 1200 a year."""

probabilities = st.floats(min_value=0.0, max_value=1.0)
unit = st.floats(min_value=0.0, max_value=1.0)


def customer(**fields: Any) -> CustomerState:
    return CustomerState(customer_id="c1", first_seen_at=T0, last_event_at=T0, **fields)


def loyalty_features(tenure_days: float = 0.0, satisfaction: float = 0.5) -> dict[str, float]:
    return {"tenure_days": tenure_days, "satisfaction_mean": satisfaction}


# --- satisfaction ----------------------------------------------------------------------------


def test_satisfaction_mean_is_the_mean_normalised_rating() -> None:
    # CSAT 4, 4 and NPS 10, 5 normalise to 0.75, 0.75, 1.0, 0.5.
    rated = customer(csat_count=2, csat_sum=8, nps_sum=15, nps_promoters=1, nps_detractors=1)
    assert satisfaction_mean(rated) == 0.75


def test_satisfaction_mean_is_unknown_before_any_rating() -> None:
    assert satisfaction_mean(customer()) is None


# --- value and CLV ---------------------------------------------------------------------------


def test_annual_order_rate_is_twelve_months() -> None:
    assert annual_order_rate(BUYER) == 24.0


def test_customer_value_is_aov_times_annual_orders() -> None:
    assert customer_value(BUYER) == pytest.approx(1200.0)


def test_customer_value_is_zero_without_orders() -> None:
    assert customer_value({"average_order_value": 0.0, "orders_per_month": 0.0}) == 0.0


@pytest.mark.parametrize(
    ("churn", "expected"), [(0.0, 1200.0), (0.25, 900.0), (0.5, 600.0), (1.0, 0.0)]
)
def test_clv_simple_is_value_times_retention(churn: float, expected: float) -> None:
    assert clv_simple(BUYER, churn) == pytest.approx(expected)


@pytest.mark.parametrize("churn", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize(("rate", "horizon"), [(0.1, 5), (0.0, 3), (0.25, 1), (0.08, 10)])
def test_clv_discounted_is_the_discounted_sum_of_retained_yearly_value(
    churn: float, rate: float, horizon: int
) -> None:
    value, retention = 1200.0, 1.0 - churn
    expected = 0.0
    for year in range(1, horizon + 1):
        expected += value * retention**year / (1.0 + rate) ** year

    assert clv_discounted(BUYER, churn, rate, horizon) == pytest.approx(expected)


def test_clv_discounted_defaults_to_ten_percent_over_five_years() -> None:
    assert (DEFAULT_DISCOUNT_RATE, DEFAULT_HORIZON_YEARS) == (0.10, 5)
    assert clv_discounted(BUYER, 0.2) == pytest.approx(
        clv_discounted(BUYER, 0.2, discount_rate=0.10, horizon_years=5)
    )


def test_clv_discounted_without_churn_or_discount_is_value_times_years() -> None:
    assert clv_discounted(BUYER, 0.0, discount_rate=0.0, horizon_years=3) == pytest.approx(3600.0)


def test_clv_of_a_certain_churner_is_zero() -> None:
    assert clv_discounted(BUYER, 1.0) == 0.0
    assert clv_simple(BUYER, 1.0) == 0.0


@settings(max_examples=100, deadline=None)
@given(low=probabilities, high=probabilities)
def test_clv_never_rises_with_churn_risk(low: float, high: float) -> None:
    low, high = sorted((low, high))

    assert clv_simple(BUYER, high) <= clv_simple(BUYER, low)
    assert clv_discounted(BUYER, high) <= clv_discounted(BUYER, low)


# --- loyalty ---------------------------------------------------------------------------------


def test_loyalty_of_a_new_one_time_buyer_is_only_neutral_advocacy() -> None:
    assert loyalty_index(customer(order_count=1), loyalty_features()) == pytest.approx(0.15)


def test_loyalty_repeat_component_grows_with_repeat_orders() -> None:
    def repeat(orders: int) -> float:
        return loyalty_index(customer(order_count=orders), loyalty_features(satisfaction=0.0))

    assert repeat(0) == repeat(1) == 0.0
    assert repeat(4) == pytest.approx(0.4 * (1 - math.exp(-1.0)))
    assert repeat(2) < repeat(4) < repeat(40) < 0.4


def test_loyalty_tenure_component_saturates_after_a_year() -> None:
    def tenure(days: float) -> float:
        return loyalty_index(customer(), loyalty_features(tenure_days=days, satisfaction=0.0))

    assert tenure(0.0) == 0.0
    assert tenure(182.5) == pytest.approx(0.15)
    assert tenure(365.0) == pytest.approx(0.3)
    assert tenure(3650.0) == pytest.approx(0.3)


def test_loyalty_advocacy_uses_mean_satisfaction_without_nps_answers() -> None:
    loved = loyalty_index(customer(), loyalty_features(satisfaction=1.0))
    hated = loyalty_index(customer(), loyalty_features(satisfaction=0.0))

    assert (loved, hated) == (pytest.approx(0.3), 0.0)


@pytest.mark.parametrize(
    ("promoters", "passives", "detractors", "advocacy"),
    [(1, 0, 0, 1.0), (0, 0, 1, 0.0), (0, 1, 0, 0.5), (3, 0, 1, 0.75), (1, 2, 1, 0.5)],
)
def test_loyalty_advocacy_uses_nps_when_answered(
    promoters: int, passives: int, detractors: int, advocacy: float
) -> None:
    state = customer(nps_promoters=promoters, nps_passives=passives, nps_detractors=detractors)

    # Satisfaction is ignored once NPS is known: set it to the opposite extreme.
    loyalty = loyalty_index(state, loyalty_features(satisfaction=1.0 - advocacy))

    assert loyalty == pytest.approx(0.3 * advocacy)


def test_loyalty_of_a_perfect_customer_is_one() -> None:
    state = customer(order_count=10_000, nps_promoters=3)

    assert loyalty_index(state, loyalty_features(tenure_days=1000.0)) == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(
    orders=st.integers(min_value=0, max_value=100_000),
    tenure_days=st.floats(min_value=0.0, max_value=1e5),
    satisfaction=unit,
    nps=st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)),
)
def test_loyalty_stays_within_zero_and_one(
    orders: int, tenure_days: float, satisfaction: float, nps: tuple[int, int, int]
) -> None:
    state = customer(
        order_count=orders, nps_promoters=nps[0], nps_passives=nps[1], nps_detractors=nps[2]
    )

    loyalty = loyalty_index(state, loyalty_features(tenure_days, satisfaction))

    assert 0.0 <= loyalty <= 1.0


# --- health ----------------------------------------------------------------------------------


def test_health_of_a_perfect_customer_is_one_hundred() -> None:
    assert health_score(0.0, 1.0, 1.0, 0) == pytest.approx(100.0)


def test_health_of_a_lost_unhappy_customer_with_open_tickets_is_near_zero() -> None:
    assert health_score(1.0, 0.0, 0.0, 1000) == pytest.approx(15.0 / 1001)


def test_health_weighs_its_components() -> None:
    assert health_score(0.5, 0.4, 0.5, 1) == pytest.approx(
        100 * (0.4 * 0.5 + 0.25 * 0.4 + 0.2 * 0.5 + 0.15 / 2)
    )


@settings(max_examples=200, deadline=None)
@given(
    churn=probabilities,
    satisfaction=unit,
    loyalty=unit,
    open_tickets=st.integers(min_value=0, max_value=10_000),
)
def test_health_stays_within_zero_and_one_hundred(
    churn: float, satisfaction: float, loyalty: float, open_tickets: int
) -> None:
    health = health_score(churn, satisfaction, loyalty, open_tickets)

    assert 0.0 <= health <= 100.0


@settings(max_examples=200, deadline=None)
@given(
    churn=st.tuples(probabilities, probabilities).filter(lambda pair: pair[0] != pair[1]),
    satisfaction=unit,
    loyalty=unit,
    open_tickets=st.integers(min_value=0, max_value=100),
)
def test_health_falls_as_churn_probability_rises(
    churn: tuple[float, float], satisfaction: float, loyalty: float, open_tickets: int
) -> None:
    low, high = sorted(churn)

    assert health_score(high, satisfaction, loyalty, open_tickets) <= health_score(
        low, satisfaction, loyalty, open_tickets
    )
    assert health_score(1.0, satisfaction, loyalty, open_tickets) < health_score(
        0.0, satisfaction, loyalty, open_tickets
    )


def test_the_discounted_value_with_divisors_worked_out_once_is_the_plain_sum() -> None:
    rng = random.Random(12)
    for _ in range(2_000):
        value, retention = rng.uniform(0.0, 5_000.0), rng.random()
        rate, years = rng.choice((0.0, 0.05, 0.1, rng.random())), rng.randint(1, 10)
        plain = sum(value * retention**year / (1.0 + rate) ** year for year in range(1, years + 1))
        assert discounted_value(value, retention, rate, years) == plain
