"""Behaviour of the churn model: delayed labels, bounded pending snapshots, progressive learning,
and the checkpointed model bundle."""

from __future__ import annotations

import pickle
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.events import (
    CancellationEvent,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)
from streamcrm.features import FEATURE_NAMES
from streamcrm.models import ModelBundle
from streamcrm.models.churn import (
    MAX_PENDING_SNAPSHOTS,
    ChurnModel,
    LabelledExample,
    add_pending,
    settle_pending,
)
from streamcrm.state import PendingSnapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=90)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def snapshot(day: float, marker: float | None = None) -> PendingSnapshot:
    """A snapshot scored on ``day``; its single feature identifies it."""
    return PendingSnapshot(
        scored_at=T0 + days(day), features={"marker": day if marker is None else marker}
    )


def purchase(day: float) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"p{day}",
        customer_id="c1",
        order_id="o1",
        occurred_at=T0 + days(day),
        amount=10.0,
        items=1,
        channel="web",
    )


def cancellation(day: float) -> CancellationEvent:
    return CancellationEvent(event_id=f"x{day}", customer_id="c1", occurred_at=T0 + days(day))


def churned(labelled: Sequence[LabelledExample]) -> list[bool]:
    return [example.churned for example in labelled]


# --- delayed labels --------------------------------------------------------------------------


def test_purchase_within_the_window_labels_pending_snapshots_retained() -> None:
    labelled, pending = settle_pending([snapshot(0), snapshot(30)], purchase(80), WINDOW)

    assert [(e.features["marker"], e.churned) for e in labelled] == [(0, False), (30, False)]
    assert pending == ()


def test_purchase_exactly_at_the_window_edge_counts_as_retained() -> None:
    labelled, _ = settle_pending([snapshot(0)], purchase(90), WINDOW)

    assert churned(labelled) == [False]


def test_purchase_after_the_window_labels_pending_snapshots_churned() -> None:
    labelled, pending = settle_pending([snapshot(0), snapshot(50)], purchase(120), WINDOW)

    assert [(e.features["marker"], e.churned) for e in labelled] == [(0, True), (50, False)]
    assert pending == ()


def test_cancellation_labels_every_pending_snapshot_churned() -> None:
    snapshots = [snapshot(0), snapshot(10), snapshot(400)]

    labelled, pending = settle_pending(snapshots, cancellation(5), WINDOW)

    assert churned(labelled) == [True, True, True]
    assert [e.features["marker"] for e in labelled] == [0, 10, 400]
    assert pending == ()


@pytest.mark.parametrize(
    "event",
    [
        FeedbackEvent(
            event_id="f",
            customer_id="c1",
            occurred_at=T0 + days(200),
            rating=1,
            scale="csat",
            category="service",
        ),
        SupportEvent(
            event_id="s",
            customer_id="c1",
            occurred_at=T0 + days(200),
            ticket_id="t",
            action="opened",
            channel="chat",
            category="complaint",
        ),
        RefundEvent(
            event_id="r", customer_id="c1", occurred_at=T0 + days(200), order_id="o", amount=5.0
        ),
    ],
    ids=["feedback", "support", "refund"],
)
def test_events_that_are_not_purchases_or_cancellations_leave_pending_untouched(
    event: Event,
) -> None:
    snapshots = [snapshot(0), snapshot(10)]

    labelled, pending = settle_pending(snapshots, event, WINDOW)

    assert labelled == []
    assert pending == tuple(snapshots)


def test_snapshots_scored_after_the_purchase_stay_pending() -> None:
    early, late = snapshot(10), snapshot(60)

    labelled, pending = settle_pending([early, late], purchase(30), WINDOW)

    assert [e.features["marker"] for e in labelled] == [10]
    assert pending == (late,)


def test_settling_nothing_pending_learns_nothing() -> None:
    assert settle_pending([], purchase(1), WINDOW) == ([], ())


def test_labelled_example_carries_the_features_that_were_scored() -> None:
    scored = PendingSnapshot(scored_at=T0, features={"recency_days": 3.0, "frequency": 2.0})

    labelled, _ = settle_pending([scored], purchase(1), WINDOW)

    assert dict(labelled[0].features) == {"recency_days": 3.0, "frequency": 2.0}


def test_add_pending_appends_the_newest() -> None:
    pending = add_pending((snapshot(0),), snapshot(1))

    assert pending == (snapshot(0), snapshot(1))


def test_add_pending_keeps_at_most_the_newest_snapshots() -> None:
    pending: tuple[PendingSnapshot, ...] = ()
    for day in range(MAX_PENDING_SNAPSHOTS + 3):
        pending = add_pending(pending, snapshot(day))

    assert len(pending) == MAX_PENDING_SNAPSHOTS
    assert pending == tuple(snapshot(d) for d in range(3, MAX_PENDING_SNAPSHOTS + 3))


# --- the model -------------------------------------------------------------------------------


def customer_features(rng: random.Random, churner: bool) -> dict[str, float]:
    """Full feature dicts where only recency separates churners (long gone) from the rest."""
    features = {name: rng.uniform(0.0, 10.0) for name in FEATURE_NAMES}
    features["recency_days"] = rng.uniform(100, 200) if churner else rng.uniform(0, 30)
    return features


def stream(n: int, seed: int = 1) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    labels = [rng.random() < 0.4 for _ in range(n)]
    return [(customer_features(rng, label), label) for label in labels]


def test_untrained_model_is_undecided() -> None:
    assert ChurnModel().predict_proba_one({"recency_days": 50.0}) == 0.5


def test_model_learns_that_long_absence_means_churn() -> None:
    model = ChurnModel()
    examples = stream(600)

    for features, label in examples:
        model.learn_one(features, label)

    assert model.roc_auc.get() > 0.9
    rng = random.Random(99)
    assert model.predict_proba_one(customer_features(rng, True)) > 0.5
    assert model.predict_proba_one(customer_features(rng, False)) < 0.5


def test_progressive_metrics_count_every_learned_example() -> None:
    model = ChurnModel()
    examples = stream(250)

    for features, label in examples:
        model.learn_one(features, label)

    assert model.n_learned == 250
    assert model.n_churned == sum(label for _, label in examples)
    # River's metrics keep their counts internally: each ROC AUC threshold's confusion matrix
    # and the log loss' running mean see one update per learned example.
    assert all(cm.n_samples == 250 for cm in model.roc_auc.cms)
    assert model.log_loss._mean.n == 250


def test_progressive_metrics_predict_before_learning() -> None:
    model = ChurnModel()

    model.learn_one({"recency_days": 120.0}, churned=True)

    # The first prediction was made by the untrained model: log loss of p=0.5 is ln 2.
    assert model.log_loss.get() == pytest.approx(0.6931, abs=1e-4)


# --- the bundle ------------------------------------------------------------------------------


def trained_bundle() -> ModelBundle:
    bundle = ModelBundle()
    for features, label in stream(60, seed=5):
        bundle.churn.learn_one(features, label)
        bundle.segments.learn_predict_one(features)
    return bundle


def test_bundle_version_counts_what_each_model_learned() -> None:
    bundle = trained_bundle()

    assert bundle.version == "churn-60.segments-60"


def test_bundle_round_trips_through_bytes() -> None:
    bundle = trained_bundle()
    probes = [features for features, _ in stream(20, seed=11)]

    restored = ModelBundle.from_bytes(bundle.to_bytes())

    assert restored.version == bundle.version
    assert [restored.churn.predict_proba_one(f) for f in probes] == [
        bundle.churn.predict_proba_one(f) for f in probes
    ]
    assert restored.churn.roc_auc.get() == bundle.churn.roc_auc.get()
    assert restored.segments.segment_names() == bundle.segments.segment_names()
    assert [restored.segments.learn_predict_one(f) for f in probes] == [
        bundle.segments.learn_predict_one(f) for f in probes
    ]


def test_bundle_refuses_a_pickle_of_another_type() -> None:
    with pytest.raises(TypeError, match="not ModelBundle"):
        ModelBundle.from_bytes(pickle.dumps({"churn": "not a model"}))


def test_the_brier_score_is_the_mean_squared_error_of_the_progressive_predictions() -> None:
    model = ChurnModel()
    examples = [({"recency_days": float(d)}, d > 50) for d in (5, 80, 10, 120, 60, 3)]
    squared_errors = []
    for features, churned in examples:
        squared_errors.append((model.predict_proba_one(features) - float(churned)) ** 2)
        model.learn_one(features, churned)

    assert model.brier.get() == pytest.approx(sum(squared_errors) / len(squared_errors))
