"""The churn ceiling: what the simulator's ground truth says a churn label's chance was.

A churn label (:mod:`streamcrm.core.labels`) asks of a snapshot taken at ``s``: *no purchase in
(s, s + W]?* The simulator (:mod:`streamcrm.sim.simulator`) draws a customer's orders as a chain of
exponential gaps: after an order at t₀ the next comes Exp(mean d(t₀)) later, with
d(t₀) = d̄ · (1 + 4 · drift(t₀)) the persona's mean gap d̄ stretched by how far a churner has
drifted at t₀, and no order from ``active_until`` on (the end of a churner's drift, else of the
period). The exponential forgets how long it has already waited, so given the truth and the
customer's last order t₀ ≤ s, the label's probability is exactly

    P(churn label | truth, history to s) = exp(−(e − s) / d(t₀)),   e = min(s + W, active_until)

(1 when s ≥ ``active_until``; before the first order, 1 or 0 as that order falls outside or
inside the window). This is :func:`oracle_churn_probability`: it is *the* conditional
probability of the label given everything the simulator decided about the customer and
everything that happened to them up to ``s``, so no score of that information ranks the labels
better (the likelihood ratio is the optimal ROC ordering). The model's progressive ROC AUC is
measured against this score's on the very same labels.

The simpler truth-based scores of :data:`SIMPLE_TRUTH_SCORES` (the churner flag, the drift
reached at ``s``, "activity stops within the window") are there to show that they do no
better.

>>> from datetime import UTC, datetime, timedelta
>>> from streamcrm.sim.simulator import CustomerTruth
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> stays = CustomerTruth("c", "regular", False, None, None, False, days_between_purchases=30.0,
...     first_purchase_at=t0, active_until=t0 + timedelta(days=365))
>>> round(oracle_churn_probability(stays, t0, t0 + timedelta(days=5), timedelta(days=90)), 4)
0.0498
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from streamcrm.sim.simulator import CustomerTruth

__all__ = [
    "SIMPLE_TRUTH_SCORES",
    "TruthScore",
    "oracle_churn_probability",
]

TruthScore = Callable[[CustomerTruth, "datetime | None", datetime, timedelta], float]
"""A score of one label from the truth: (truth, last order at or before s, s, W) -> score."""


def oracle_churn_probability(
    truth: CustomerTruth, last_purchase_at: datetime | None, at: datetime, window: timedelta
) -> float:
    """P(no purchase in (at, at + window]) given the customer's truth and last order (module
    docstring): exp(−(e − s) / d(t₀)) with e = min(s + W, active_until).

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> leaves = CustomerTruth("c", "loyal", True, t0, t0 + timedelta(days=40), False,
    ...     days_between_purchases=10.0, first_purchase_at=t0,
    ...     active_until=t0 + timedelta(days=40))
    >>> oracle_churn_probability(leaves, t0, t0 + timedelta(days=50), timedelta(days=90))
    1.0
    >>> round(oracle_churn_probability(leaves, t0 + timedelta(days=20), t0 + timedelta(days=30),
    ...       timedelta(days=90)), 4)  # gap stretched 3x at half drift, 10 days left
    0.7165
    """
    end = at + window
    if truth.active_until is not None:
        end = min(end, truth.active_until)
    if end <= at:
        return 1.0
    if last_purchase_at is None:
        first = truth.first_purchase_at
        return 0.0 if first is not None and at < first <= end else 1.0
    gap_days = truth.days_between_purchases_after(last_purchase_at)
    return math.exp(-(end - at).total_seconds() / 86_400 / gap_days)


def _churns(
    truth: CustomerTruth, last_purchase_at: datetime | None, at: datetime, window: timedelta
) -> float:
    return float(truth.churns)


def _drift_reached(
    truth: CustomerTruth, last_purchase_at: datetime | None, at: datetime, window: timedelta
) -> float:
    return truth.drift_at(at) + float(truth.churns)


def _stops_within_window(
    truth: CustomerTruth, last_purchase_at: datetime | None, at: datetime, window: timedelta
) -> float:
    stops = truth.active_until is not None and truth.churns and truth.active_until <= at + window
    return float(stops) + truth.drift_at(at)


SIMPLE_TRUTH_SCORES: dict[str, TruthScore] = {
    "truth: churner or not": _churns,
    "truth: churner, then drift reached": _drift_reached,
    "truth: stops within the window": _stops_within_window,
}
"""Truth-based scores simpler than the oracle, each higher for riskier labels."""
