"""What the whole customer population looks like, kept online: RFM quintiles and means.

RFM codes place one customer against everyone: a 1-5 code per dimension, 5 best (most recent,
most frequent, highest spending). Boundaries are the population's 20/40/60/80 % quantiles,
estimated online with River's P² ``stats.Quantile``; like the models, they are shared,
checkpointed and versioned, so codes are "population fields": they depend on what the
population looked like when the score was made.
"""

from __future__ import annotations

from collections.abc import Mapping

from river import stats

QUINTILE_LEVELS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
RFM_FEATURES: Mapping[str, bool] = {"recency_days": False, "frequency": True, "monetary": True}
"""Each RFM feature and whether a higher value is better (recency: lower is better)."""


class PopulationStats:
    """Online quantiles of recency, frequency and monetary value, and mean satisfaction.

    >>> population = PopulationStats()
    >>> for n in range(1, 101):
    ...     population.learn_one({"recency_days": float(n), "frequency": float(n),
    ...                           "monetary": 10.0 * n}, satisfaction=None)
    >>> population.rfm_codes({"recency_days": 5.0, "frequency": 95.0, "monetary": 500.0})
    (5, 5, 3)
    """

    def __init__(self) -> None:
        self.quantiles = {
            name: [stats.Quantile(level) for level in QUINTILE_LEVELS] for name in RFM_FEATURES
        }
        self.satisfaction = stats.Mean()
        self.n_learned = 0

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the read cache: a checkpoint holds the model alone."""
        state = dict(self.__dict__)
        state.pop("_boundaries_at", None)
        return state

    def learn_one(self, features: Mapping[str, float], satisfaction: float | None) -> None:
        """Add one scored customer's RFM values (and mean satisfaction, if rated)."""
        for name, estimators in self.quantiles.items():
            for estimator in estimators:
                estimator.update(features[name])
        if satisfaction is not None:
            self.satisfaction.update(satisfaction)
        self.n_learned += 1

    def rfm_codes(self, features: Mapping[str, float]) -> tuple[int, int, int]:
        """(R, F, M) codes in 1-5: 1 + boundaries the value is better than."""
        codes = []
        for name, higher_is_better in RFM_FEATURES.items():
            value = features[name]
            boundaries = self._boundaries()[name]
            if higher_is_better:
                code = 1 + sum(value > b for b in boundaries)
            else:
                code = 1 + sum(value < b for b in boundaries)
            codes.append(min(code, 5))
        return codes[0], codes[1], codes[2]

    def _boundaries(self) -> dict[str, list[float]]:
        """Each RFM feature's quintile boundaries estimated so far, read again only after the
        estimators learned (which counts in ``n_learned``)."""
        cached: tuple[int, dict[str, list[float]]] | None = getattr(self, "_boundaries_at", None)
        if cached is None or cached[0] != self.n_learned:
            boundaries = {
                name: [b for b in (q.get() for q in estimators) if b is not None]
                for name, estimators in self.quantiles.items()
            }
            cached = (self.n_learned, boundaries)
            self._boundaries_at = cached
        return cached[1]

    @property
    def mean_satisfaction(self) -> float | None:
        """Mean over scored customers' mean satisfaction (null before any rating)."""
        return self.satisfaction.get() if self.satisfaction.n else None
