"""Online churn classifier (River), trained on delayed labels with progressive validation.

The labels come from the prediction ledger (:mod:`streamcrm.labels`): a scored snapshot is
labelled when its churn window closes in event time. Each labelled example is first
predicted, then learned (progressive validation), so the running ROC AUC, log loss and Brier
score measure the model on data it had not seen.
"""

from __future__ import annotations

from collections.abc import Mapping

from river import linear_model, metrics, optim, preprocessing, stats


class ChurnModel:
    """Scaled logistic regression over customer features, measured progressively.

    >>> model = ChurnModel()
    >>> model.predict_proba_one({"recency_days": 5.0})
    0.5
    >>> for _ in range(1000):
    ...     model.learn_one({"recency_days": 120.0}, churned=True)
    ...     model.learn_one({"recency_days": 5.0}, churned=False)
    >>> model.predict_proba_one({"recency_days": 120.0}) > 0.9 > 0.1 > model.predict_proba_one(
    ...     {"recency_days": 5.0})
    True
    """

    def __init__(self, learning_rate: float = 0.01, l2: float = 1e-4) -> None:
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

    def explain_one(self, features: Mapping[str, float], top: int = 3) -> list[tuple[str, float]]:
        """The features that moved this customer's churn log-odds most, strongest first.

        A feature's contribution is ``wᵢ · zᵢ``: its weight times its standardised value, so
        the contributions plus the intercept sum to logit P(churn); positive ones raise the
        risk. Ties in strength are broken by name; features that contribute 0 are left out.
        """
        scaled = self.pipeline["StandardScaler"].transform_one(dict(features))
        weights = self.pipeline["LogisticRegression"].weights
        contributions = [
            (name, float(weights.get(name, 0.0) * value)) for name, value in scaled.items()
        ]
        ranked = sorted((c for c in contributions if c[1] != 0.0), key=lambda c: (-abs(c[1]), c[0]))
        return ranked[:top]

    def learn_one(self, features: Mapping[str, float], churned: bool) -> None:
        """Predict (for the progressive metrics), then learn one labelled example."""
        probability = self.predict_proba_one(features)
        self.roc_auc.update(churned, probability)
        self.log_loss.update(churned, probability)
        self.brier.update((probability - float(churned)) ** 2)
        self.pipeline.learn_one(dict(features), churned)
        self.n_learned += 1
        self.n_churned += int(churned)
