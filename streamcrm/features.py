"""Turn a customer's state into the flat ``dict[str, float]`` that River models read.

Every feature is measured *as of* an event time (normally the newest event applied), never
the wall clock, so replaying history gives the same features as the live path.

>>> from datetime import datetime, UTC
>>> from streamcrm.state import CustomerState
>>> state = CustomerState(customer_id="c1", first_seen_at=datetime(2026, 1, 1, tzinfo=UTC),
...                       last_event_at=datetime(2026, 1, 31, tzinfo=UTC), order_count=2,
...                       gross_cents=10_000, last_purchase_at=datetime(2026, 1, 21, tzinfo=UTC))
>>> f = customer_features(state, as_of=state.last_event_at)
>>> f["recency_days"], f["tenure_days"], f["average_order_value"]
(10.0, 30.0, 50.0)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from streamcrm.state import CustomerState

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


def customer_features(state: CustomerState, as_of: datetime) -> dict[str, float]:
    """Features of ``state`` as of event time ``as_of``.

    - ``recency_days``: days since the last purchase (since first seen if none yet),
    - ``frequency``: orders placed; ``monetary``: net revenue (gross - refunds),
    - ``average_order_value`` = monetary / frequency (0 without orders),
    - ``orders_per_month`` = frequency / max(tenure_days, 30) × 30,
    - ``refund_rate`` = refunds / orders,
    - ``satisfaction_mean`` = Σ sᵢ / n over normalised ratings (0.5 before any),
    - ``satisfaction_recent``: the EWMA of ratings (0.5 before any),
    - support load: open tickets, complaints, escalations, mean first-response hours.
    """
    last_activity = state.last_purchase_at or state.first_seen_at
    tickets = state.ticket_totals
    tenure_days = _days(as_of - (state.first_purchase_at or state.first_seen_at))
    orders = state.order_count
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
            state.satisfaction_recent
            if state.satisfaction_recent is not None
            else NEUTRAL_SATISFACTION
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


def _days(delta: timedelta) -> float:
    seconds = delta.total_seconds()
    return max(seconds, 0.0) / SECONDS_PER_DAY
