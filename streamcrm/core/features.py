"""Turn a customer's state into the flat ``dict[str, float]`` that River models read.

Every feature is measured *as of* an event time (normally the newest event applied), never
the wall clock, so replaying history gives the same features as the live path.

>>> from datetime import datetime, UTC
>>> from streamcrm.core.state import CustomerState
>>> state = CustomerState(customer_id="c1", first_seen_at=datetime(2026, 1, 1, tzinfo=UTC),
...                       last_event_at=datetime(2026, 1, 31, tzinfo=UTC), order_count=2,
...                       gross_cents=10_000, last_purchase_at=datetime(2026, 1, 21, tzinfo=UTC))
>>> f = customer_features(state, as_of=state.last_event_at)
>>> f["recency_days"], f["tenure_days"], f["average_order_value"]
(10.0, 30.0, 50.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from streamcrm.core.state import CustomerState, TicketTotals
from streamcrm.models.repeat_buying import RepeatBuying

SECONDS_PER_DAY = 86_400.0
SECONDS_PER_HOUR = 3_600.0
NEUTRAL_SATISFACTION = 0.5
"""Stands in for satisfaction before a customer has rated anything."""

MIN_TENURE_DAYS_FOR_RATES = 30.0
"""Rates per month use at least this much tenure, so one fresh order is not "30 per month"."""

FEATURE_NAMES: tuple[str, ...] = (
    "recency_days",
    "frequency",
    "monetary",
    "average_order_value",
    "tenure_days",
    "orders_per_month",
    "refund_rate",
    "satisfaction_mean",
    "satisfaction_recent",
    "rating_count",
    "open_tickets",
    "complaints",
    "escalations",
    "mean_first_response_hours",
    "days_since_last_event",
)


def customer_features(
    state: CustomerState, as_of: datetime, tickets: TicketTotals | None = None
) -> dict[str, float]:
    """Features of ``state`` as of event time ``as_of``.

    - ``recency_days``: days since the last purchase (since first seen if none yet),
    - ``frequency``: orders placed; ``monetary``: net revenue (gross - refunds),
    - ``average_order_value`` = monetary / frequency (0 without orders),
    - ``orders_per_month`` = frequency / max(tenure_days, 30) × 30,
    - ``refund_rate`` = refunds / orders,
    - ``satisfaction_mean`` = Σ sᵢ / n over normalised ratings (0.5 before any),
    - ``satisfaction_recent``: the EWMA of ratings (0.5 before any),
    - support load: open tickets, complaints, escalations, mean first-response hours.

    ``tickets``: ``state.ticket_totals``, when the caller has it already.
    """
    last_activity = state.last_purchase_at or state.first_seen_at
    if tickets is None:
        tickets = state.ticket_totals
    tenure_days = _days(as_of - (state.first_purchase_at or state.first_seen_at))
    orders = state.order_count
    recent_satisfaction = state.satisfaction_recent  # an EWMA over the ratings: read once
    return {
        "recency_days": _days(as_of - last_activity),
        "frequency": float(orders),
        "monetary": state.monetary,
        "average_order_value": state.monetary / orders if orders else 0.0,
        "tenure_days": tenure_days,
        "orders_per_month": orders / max(tenure_days, MIN_TENURE_DAYS_FOR_RATES) * 30.0,
        "refund_rate": state.refund_count / orders if orders else 0.0,
        "satisfaction_mean": (
            state.rating_sum / state.rating_count if state.rating_count else NEUTRAL_SATISFACTION
        ),
        "satisfaction_recent": (
            recent_satisfaction if recent_satisfaction is not None else NEUTRAL_SATISFACTION
        ),
        "rating_count": float(state.rating_count),
        "open_tickets": float(state.open_tickets),
        "complaints": float(tickets.by_category.get("complaint", 0)),
        "escalations": float(state.escalations),
        "mean_first_response_hours": (
            tickets.first_response_seconds / tickets.first_response_count / SECONDS_PER_HOUR
            if tickets.first_response_count
            else 0.0
        ),
        "days_since_last_event": _days(as_of - state.last_event_at),
    }


CHURN_FEATURE_NAMES: tuple[str, ...] = (
    "log_repeat_transactions",
    "log_mean_spend",
    "recency_in_horizons",
    "age_in_horizons",
    "log_expected_at_own_rate",
    "silence_times_rate",
    "quiet_in_horizons",
    "refund_rate",
    "satisfaction_mean",
    "satisfaction_recent",
    "log_rating_count",
    "open_tickets",
    "complaints",
    "escalations",
    "mean_first_response_hours",
)


def repeat_buying(state: CustomerState) -> RepeatBuying | None:
    """The customer's repeat-buying statistics (None before a first purchase).

    A transaction is one day with a purchase; the mean spend is net revenue per transaction.
    """
    if state.first_purchase_at is None or state.last_purchase_at is None:
        return None
    transactions = max(state.purchase_days, 1)
    return RepeatBuying(
        first_purchase_at=state.first_purchase_at,
        last_purchase_at=state.last_purchase_at,
        transactions=transactions,
        mean_spend=state.monetary / transactions,
    )


def churn_features(
    state: CustomerState,
    as_of: datetime,
    horizon: timedelta,
    described: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """What the churn model reads: will the customer buy within ``horizon`` after ``as_of``?

    ``described``: ``customer_features(state, as_of)``, when the caller has it already.

    Times are measured *in horizons* so one model answers for any horizon: it learns from
    windows of the churn window W as they close, and the offline evaluation asks it about a
    39-week holdout. With x repeat transactions, silence g = time since the last purchase
    and age T = time since the first (weeks; first seen when nothing was bought yet):

    - ``log_repeat_transactions`` = ln(1 + x); ``log_mean_spend`` = ln(1 + spend per transaction),
    - ``recency_in_horizons`` = g / h; ``age_in_horizons`` = T / h,
    - own purchase rate ρ = (x + ½) / (T + 1) per week (shrunk for young customers):
      ``log_expected_at_own_rate`` = ln(ρ h), ``silence_times_rate`` = ρ g (the purchases
      the customer's own rate says they "missed"),
    - ``quiet_in_horizons``: time since any event / h, and the horizon-free satisfaction and
      support features of :func:`customer_features`.

    >>> from datetime import UTC
    >>> state = CustomerState(customer_id="c1", first_seen_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...     last_event_at=datetime(2026, 1, 15, tzinfo=UTC), order_count=3, purchase_days=3,
    ...     gross_cents=9_000, first_purchase_at=datetime(2026, 1, 1, tzinfo=UTC),
    ...     last_purchase_at=datetime(2026, 1, 15, tzinfo=UTC))
    >>> f = churn_features(state, datetime(2026, 1, 29, tzinfo=UTC), timedelta(weeks=4))
    >>> f["recency_in_horizons"], f["age_in_horizons"], round(f["silence_times_rate"], 3)
    (0.5, 1.0, 1.0)
    """
    weeks = horizon.total_seconds() / SECONDS_PER_WEEK
    stats = repeat_buying(state)
    start = state.first_purchase_at or state.first_seen_at
    last = state.last_purchase_at or state.first_seen_at
    repeats = float(stats.transactions - 1) if stats else 0.0
    silence = _days(as_of - last) / 7.0
    age = _days(as_of - start) / 7.0
    rate = (repeats + 0.5) / (age + 1.0)
    if described is None:
        described = customer_features(state, as_of)
    return {
        "log_repeat_transactions": math.log1p(repeats),
        "log_mean_spend": math.log1p(stats.mean_spend) if stats else 0.0,
        "recency_in_horizons": silence / weeks,
        "age_in_horizons": age / weeks,
        "log_expected_at_own_rate": math.log(rate * weeks),
        "silence_times_rate": silence * rate,
        "quiet_in_horizons": described["days_since_last_event"] / 7.0 / weeks,
        "refund_rate": described["refund_rate"],
        "satisfaction_mean": described["satisfaction_mean"],
        "satisfaction_recent": described["satisfaction_recent"],
        "log_rating_count": math.log1p(described["rating_count"]),
        "open_tickets": described["open_tickets"],
        "complaints": described["complaints"],
        "escalations": described["escalations"],
        "mean_first_response_hours": described["mean_first_response_hours"],
    }


SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY


def _days(delta: timedelta) -> float:
    seconds = delta.total_seconds()
    return max(seconds, 0.0) / SECONDS_PER_DAY
