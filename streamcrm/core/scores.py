"""The deterministic customer scores, each a small pure function with its formula.

Satisfaction, value, CLV, loyalty and health, from the CRM literature the project was
founded on. Inputs are a customer's features (see :mod:`streamcrm.core.features`) and, where a
formula needs retention, the churn model's probability.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the scores take a state but need none of its code
    from streamcrm.core.state import CustomerState, TicketTotals

DAYS_PER_YEAR = 365.0
DEFAULT_DISCOUNT_RATE = 0.10
DEFAULT_HORIZON_YEARS = 5


def satisfaction_mean(state: CustomerState) -> float | None:
    """Mean satisfaction ``Σ sᵢ / n`` over the customer's ratings, each normalised to [0, 1].

    >>> from datetime import datetime, UTC
    >>> from streamcrm.core.state import CustomerState
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> satisfaction_mean(CustomerState(customer_id="c", first_seen_at=t, last_event_at=t,
    ...                                 csat_count=2, csat_sum=8))
    0.75
    """
    return state.rating_sum / state.rating_count if state.rating_count else None


def csat_mean(state: CustomerState) -> float | None:
    """Mean CSAT on its own 1-5 scale: Σ rᵢ / n over CSAT answers (null before any)."""
    return state.csat_sum / state.csat_count if state.csat_count else None


def net_promoter_score(state: CustomerState) -> float | None:
    """NPS in [-100, 100] = 100 × (promoters − detractors) / responses (null before any).

    Promoters answered 9-10, passives 7-8, detractors 0-6.
    """
    responses = state.nps_count
    if not responses:
        return None
    return 100.0 * (state.nps_promoters - state.nps_detractors) / responses


def mean_first_response_hours(tickets: TicketTotals) -> float | None:
    """Mean hours from a ticket's opening to its first response (null before any)."""
    if not tickets.first_response_count:
        return None
    return tickets.first_response_seconds / tickets.first_response_count / 3600.0


def mean_resolution_hours(tickets: TicketTotals) -> float | None:
    """Mean hours from a ticket's opening to its resolution (null before any)."""
    if not tickets.resolution_count:
        return None
    return tickets.resolution_seconds / tickets.resolution_count / 3600.0


def annual_order_rate(features: Mapping[str, float]) -> float:
    """Orders per year: ``orders_per_month × 12``."""
    return features["orders_per_month"] * 12.0


def customer_value(features: Mapping[str, float]) -> float:
    """Customer value per year = average order value × annual order frequency.

    >>> customer_value({"average_order_value": 50.0, "orders_per_month": 1.0})
    600.0
    """
    return features["average_order_value"] * annual_order_rate(features)


def clv_simple(features: Mapping[str, float], churn_probability: float) -> float:
    """Simple CLV = AOV × annual orders × retention, with retention = 1 − P(churn).

    >>> clv_simple({"average_order_value": 50.0, "orders_per_month": 1.0}, 0.25)
    450.0
    """
    return customer_value(features) * (1.0 - churn_probability)


def clv_to_acquisition_cost(clv: float, acquisition_cost: float | None) -> float | None:
    """CLV ÷ customer acquisition cost (CAC), when the cost is known and positive.

    Above 1 the customer is expected to repay what acquiring them cost.

    >>> clv_to_acquisition_cost(450.0, 150.0)
    3.0
    """
    if not acquisition_cost:
        return None
    return clv / acquisition_cost


def clv_discounted(
    features: Mapping[str, float],
    churn_probability: float,
    discount_rate: float = DEFAULT_DISCOUNT_RATE,
    horizon_years: int = DEFAULT_HORIZON_YEARS,
) -> float:
    """Discounted CLV = Σₜ₌₁..H TCFₜ / (1 + r)ᵗ with TCFₜ = value × retentionᵗ.

    The yearly contribution is the customer value, kept with probability
    ``retention = 1 − P(churn)`` each year, so CLV moves as soon as churn risk moves.

    >>> round(clv_discounted({"average_order_value": 100.0, "orders_per_month": 1.0}, 0.0,
    ...                      discount_rate=0.1, horizon_years=2), 2)
    2082.64
    """
    return discounted_value(
        customer_value(features), 1.0 - churn_probability, discount_rate, horizon_years
    )


def discounted_value(
    yearly_value: float,
    retention: float,
    discount_rate: float = DEFAULT_DISCOUNT_RATE,
    horizon_years: int = DEFAULT_HORIZON_YEARS,
) -> float:
    """Σₜ₌₁..H V × retentionᵗ / (1 + r)ᵗ: the discounted CLV of a yearly value V.

    >>> round(discounted_value(1200.0, 1.0, discount_rate=0.1, horizon_years=2), 2)
    2082.64
    """
    return sum(
        [
            yearly_value * retention**year / discount
            for year, discount in discount_factors(discount_rate, horizon_years)
        ]
    )


@functools.cache
def discount_factors(discount_rate: float, horizon_years: int) -> tuple[tuple[int, float], ...]:
    """(t, (1 + r)ᵗ) for t = 1..H: the divisors of :func:`discounted_value`, worked out once
    per rate and horizon (two CLVs a score, on the same few settings).

    >>> discount_factors(0.5, 2)
    ((1, 1.5), (2, 2.25))
    """
    return tuple((year, (1.0 + discount_rate) ** year) for year in range(1, horizon_years + 1))


def loyalty_index(state: CustomerState, features: Mapping[str, float]) -> float:
    """Loyalty in [0, 1] = 0.4 × repeat + 0.3 × tenure + 0.3 × advocacy.

    - repeat = 1 − exp(−(orders − 1) / 3): 0 for a one-time buyer, → 1 with repeat buying;
    - tenure = min(tenure_days / 365, 1);
    - advocacy = (NPS + 1) / 2 with NPS = (promoters − detractors) / responses when the
      customer answered NPS surveys, otherwise mean satisfaction (0.5 before any rating).

    >>> from datetime import datetime, UTC
    >>> from streamcrm.core.state import CustomerState
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> new = CustomerState(customer_id="c", first_seen_at=t, last_event_at=t, order_count=1)
    >>> loyalty_index(new, {"tenure_days": 0.0, "satisfaction_mean": 0.5})
    0.15
    """
    repeat = 1.0 - math.exp(-max(state.order_count - 1, 0) / 3.0)
    tenure = min(features["tenure_days"] / DAYS_PER_YEAR, 1.0)
    responses = state.nps_promoters + state.nps_passives + state.nps_detractors
    if responses:
        nps = (state.nps_promoters - state.nps_detractors) / responses
        advocacy = (nps + 1.0) / 2.0
    else:
        advocacy = features["satisfaction_mean"]
    return round(0.4 * repeat + 0.3 * tenure + 0.3 * advocacy, 12)


def health_score(
    churn_probability: float, satisfaction: float, loyalty: float, open_tickets: float
) -> float:
    """Health in [0, 100] = 100 × (0.4 (1 − P(churn)) + 0.25 S + 0.2 L + 0.15 / (1 + T)).

    S is recent satisfaction in [0, 1], L the loyalty index and T the open tickets.

    >>> health_score(0.0, 1.0, 1.0, 0)
    100.0
    """
    return 100.0 * (
        0.4 * (1.0 - churn_probability)
        + 0.25 * satisfaction
        + 0.2 * loyalty
        + 0.15 / (1.0 + open_tickets)
    )
