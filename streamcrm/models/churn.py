"""Online churn classifier (River) trained on delayed labels, with progressive validation.

A customer is *scored* at every event; the features that were scored are kept as a pending
snapshot. The snapshot's label arrives later, in event time (churn window ``W``):

- ``0`` (retained) when the customer purchases again within ``W`` of the snapshot,
- ``1`` (churned) when the next purchase comes only after ``W`` has passed,
- ``1`` at once on an explicit cancellation.

Each labelled example is first predicted, then learned (progressive validation), so the
running ROC AUC and log loss measure the model on data it had not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from river import linear_model, metrics, optim, preprocessing, stats

from streamcrm.events import CancellationEvent, Event, PurchaseEvent
from streamcrm.state import PendingSnapshot

MAX_PENDING_SNAPSHOTS = 8
"""Snapshots awaiting a label per customer; the oldest is dropped beyond this."""


@dataclass(frozen=True)
class LabelledExample:
    """Features that were scored, and what then happened (True = churned)."""

    features: Mapping[str, float]
    churned: bool


def settle_pending(
    pending: Sequence[PendingSnapshot], event: Event, churn_window: timedelta
) -> tuple[list[LabelledExample], tuple[PendingSnapshot, ...]]:
    """Label the snapshots that ``event`` decides; return them and the ones still pending.

    >>> from datetime import datetime, UTC
    >>> from streamcrm.events import PurchaseEvent
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> snap = PendingSnapshot(scored_at=t0, features={"x": 1.0})
    >>> buy = PurchaseEvent(event_id="e", customer_id="c", order_id="o", amount=1.0, items=1,
    ...                     channel="web", occurred_at=t0 + timedelta(days=100))
    >>> labelled, still_pending = settle_pending([snap], buy, timedelta(days=90))
    >>> labelled[0].churned, still_pending
    (True, ())
    """
    if isinstance(event, CancellationEvent):
        return [LabelledExample(s.features, churned=True) for s in pending], ()
    if isinstance(event, PurchaseEvent):
        labelled = [
            LabelledExample(s.features, churned=event.occurred_at - s.scored_at > churn_window)
            for s in pending
            if s.scored_at <= event.occurred_at
        ]
        later = tuple(s for s in pending if s.scored_at > event.occurred_at)
        return labelled, later
    return [], tuple(pending)


def add_pending(
    pending: Sequence[PendingSnapshot], snapshot: PendingSnapshot
) -> tuple[PendingSnapshot, ...]:
    """Append a snapshot, keeping at most ``MAX_PENDING_SNAPSHOTS`` (newest win)."""
    return (*pending, snapshot)[-MAX_PENDING_SNAPSHOTS:]


class ChurnModel:
    """Scaled logistic regression over customer features, measured progressively.

    >>> model = ChurnModel()
    >>> model.predict_proba_one({"recency_days": 5.0})
    0.5
    >>> for _ in range(200):
    ...     model.learn_one({"recency_days": 120.0}, churned=True)
    ...     model.learn_one({"recency_days": 5.0}, churned=False)
    >>> model.predict_proba_one({"recency_days": 120.0}) > 0.9 > 0.1 > model.predict_proba_one(
    ...     {"recency_days": 5.0})
    True
    """

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4) -> None:
        self.pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2
        )
        self.roc_auc = metrics.ROCAUC()
        self.log_loss = metrics.LogLoss()
        self.brier = stats.Mean()
        """Brier score: mean of (p − y)² over progressively validated examples."""
        self.n_learned = 0
        self.n_churned = 0

    def predict_proba_one(self, features: Mapping[str, float]) -> float:
        """P(churn) for one customer's features."""
        return float(self.pipeline.predict_proba_one(dict(features)).get(True, 0.0))

    def learn_one(self, features: Mapping[str, float], churned: bool) -> None:
        """Predict (for the progressive metrics), then learn one labelled example."""
        probability = self.predict_proba_one(features)
        self.roc_auc.update(churned, probability)
        self.log_loss.update(churned, probability)
        self.brier.update((probability - float(churned)) ** 2)
        self.pipeline.learn_one(dict(features), churned)
        self.n_learned += 1
        self.n_churned += int(churned)
