"""Behaviour of the churn model (progressive learning) and of the checkpointed model bundle.

The delayed labels it learns from are specified in test_labels.py."""

from __future__ import annotations

import itertools
import math
import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.core.features import FEATURE_NAMES
from streamcrm.models import ModelBundle
from streamcrm.models.churn import ChurnModel

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = timedelta(days=90)


def days(n: float) -> timedelta:
    return timedelta(days=n)


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

    assert bundle.version == "churn-60.segments-60.clv-0"


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


def test_explanations_name_the_features_that_moved_the_log_odds_and_sum_to_the_logit() -> None:
    model = ChurnModel()
    for i in range(400):
        quiet = i % 2 == 0
        model.learn_one(
            {
                "recency_in_horizons": 3.0 if quiet else 0.1,
                "satisfaction_mean": 0.5,
                "noise": (i % 7) / 7,
            },
            churned=quiet,
        )
    customer = {"recency_in_horizons": 3.0, "satisfaction_mean": 0.5, "noise": 0.5}

    drivers = model.explain_one(customer, top=3)

    assert drivers[0][0] == "recency_in_horizons" and drivers[0][1] > 0
    assert all(abs(a[1]) >= abs(b[1]) for a, b in itertools.pairwise(drivers))
    assert "satisfaction_mean" not in dict(drivers)  # constant: scaled to 0, contributes 0
    intercept = model.pipeline["LogisticRegression"].intercept
    logit = intercept + sum(value for _, value in model.explain_one(customer, top=99))
    p = model.predict_proba_one(customer)
    assert logit == pytest.approx(math.log(p / (1 - p)), abs=1e-9)


def test_a_change_in_what_churn_looks_like_is_flagged_as_drift_and_a_stable_one_is_not() -> None:
    rng = random.Random(5)
    model = ChurnModel()

    def learn(n: int, quiet_churn: bool) -> None:
        for _ in range(n):
            quiet = rng.random() < 0.5
            model.learn_one({"recency_in_horizons": 3.0 if quiet else 0.2}, quiet == quiet_churn)

    learn(3000, quiet_churn=True)
    assert model.drifts_detected == 0

    learn(1000, quiet_churn=False)  # the relation flips: errors jump until the model relearns
    assert model.drifts_detected >= 1
    assert model.last_drift_at is not None and 3000 < model.last_drift_at <= 4000
    assert model.rolling_roc_auc.get() < model.roc_auc.get()
