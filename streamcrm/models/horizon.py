"""P(any purchase within h), for any horizon h, learned from the population's own history.

BG/NBD answers "will this customer buy within h?" from (x, t_x, T) and four population
parameters, but it is a parametric story: on real data its probabilities are biased in ways
that depend on the horizon and on how long the customers have been watched (on CDNOW it
says 0.264 where 0.299 of the customers buy). The churn model learns from one window (the
churn window W) only, so asked about another horizon it extrapolates. This model learns the
question for *every* horizon from windows that have closed in event time, and corrects
BG/NBD with what actually happened:

- at each refit of the repeat-buying models (weekly in event time, in the learner) it keeps a
  **snapshot** of a stable subset of the sample: per customer (x, t_x, T) as of that moment,
  with the BG/NBD parameters fitted then;
- any two snapshots s < s' make a closed window of h = s' − s weeks, and a customer in both
  bought within it iff their repeat transactions grew: y = 1{x(s') > x(s)}. No window is
  labelled before it has closed, and nothing later than the newest event is looked at;
- a logistic regression over the features below, fitted (IRLS, L2-penalised, standardised
  inputs) on a deterministic sample of those windows, gives

      P(purchase within h) = σ(β₀ + Σ βᵢ zᵢ(x, t_x, T, h)),

with zᵢ the standardised features of :func:`horizon_features`: logit of BG/NBD's
P(X(h) > 0) and of P(alive), then ln(1 + x), ln(1 + T), ln h, ln(1 + T − t_x) and
ln(1 + t_x). Age and horizon enter separately (not as T / h): a long window seen only for
young customers and an old customer seen only over short windows then combine additively
instead of being confused (on CDNOW this beat the ratios on every split tried, see
``docs/models.md``).

A buyer's purchase count is left to BG/NBD: E[X(h)] = P(X(h) > 0) · E_BG/NBD[X | X > 0]
(:class:`streamcrm.models.ModelBundle.forecasts`); a count regression learned from the same
windows forecast worse (``docs/models.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from streamcrm.models.repeat_buying import (
    SECONDS_PER_WEEK,
    BgNbdParams,
    Floats,
    RepeatBuying,
    probability_alive,
    probability_of_purchase,
    sample_key,
)

FEATURES = (
    "logit_bgnbd_purchase",
    "logit_alive",
    "log_repeat_transactions",
    "log_age",
    "log_horizon",
    "log_silence",
    "log_recency",
)
"""The inputs of the regression, in the order of its weights (weeks throughout)."""

_EPS = 1e-6


def horizon_features(
    purchase: Floats, alive: Floats, x: Floats, t_x: Floats, age: Floats, weeks: Floats
) -> Floats:
    """The rows of :data:`FEATURES` as a ``(n, 7)`` array, for customers (x, t_x, T) asked
    about horizons h (``weeks``), given BG/NBD's P(X(h) > 0) (``purchase``) and P(alive).

    >>> one = np.array([1.0])
    >>> horizon_features(one / 2, one / 2, one, one, 3 * one, 4 * one).round(3).tolist()
    [[0.0, 0.0, 0.693, 1.386, 1.386, 1.099, 0.693]]
    """
    return np.column_stack(
        [
            _logit(purchase),
            _logit(alive),
            np.log1p(x),
            np.log1p(age),
            np.log(weeks),
            np.log1p(np.maximum(age - t_x, 0.0)),
            np.log1p(t_x),
        ]
    )


def _logit(p: Floats) -> Floats:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def _logit_one(p: float) -> float:
    q = min(max(p, _EPS), 1.0 - _EPS)
    return math.log(q) - math.log1p(-q)


@dataclass(frozen=True)
class Snapshot:
    """A subset of the repeat-buying sample as of one refit: sample keys (sorted) with each
    customer's (x, t_x, T) in weeks, and the BG/NBD parameters fitted at that moment."""

    as_of: datetime
    params: BgNbdParams
    keys: NDArray[np.uint64]
    x: NDArray[np.float32]
    t_x: NDArray[np.float32]
    age: NDArray[np.float32]


def fit_logistic(
    features: Floats, labels: Floats, l2: float = 1e-3, iterations: int = 25
) -> tuple[Floats, Floats, Floats]:
    """Penalised logistic regression by Newton's method (IRLS) on standardised features.

    Minimises −Σ [y log p + (1 − y) log(1 − p)] / n + (λ/2)‖β‖² (intercept unpenalised).
    Returns (weights with the intercept first, feature means, feature scales).

    >>> z = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> weights, _, _ = fit_logistic(z, np.array([0.0, 0.0, 1.0, 1.0]), l2=0.1)
    >>> bool(weights[1] > 0)  # more z, more often 1
    True
    """
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    design = np.column_stack([np.ones(len(features)), (features - mean) / scale])
    n, k = design.shape
    penalty = np.full(k, l2)
    penalty[0] = 0.0
    beta = np.zeros(k)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -35.0, 35.0)))
        gradient = design.T @ (p - labels) / n + penalty * beta
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design / n + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return beta, mean, scale


class PurchaseHorizonModel:
    """P(any purchase within h) for any h, refitted on closed windows between snapshots.

    ``capacity``: customers per snapshot (the smallest sample keys, so the same customers
    recur from snapshot to snapshot); ``max_horizon``: the longest window learned from (older
    snapshots are dropped); ``budget``: windows sampled per refit; ``min_windows``: fewer
    labelled windows than this and the model stays unfitted (:meth:`predict_one` gives None).

    >>> model = PurchaseHorizonModel()
    >>> model.fitted
    False
    """

    def __init__(
        self,
        capacity: int = 5_000,
        max_horizon: timedelta = timedelta(weeks=78),
        budget: int = 60_000,
        min_windows: int = 500,
    ) -> None:
        self.capacity = capacity
        self.max_horizon = max_horizon
        self.budget = budget
        self.min_windows = min_windows
        self.snapshots: list[Snapshot] = []
        self.weights: Floats | None = None
        self.mean: Floats | None = None
        self.scale: Floats | None = None
        self.windows_learned = 0
        """Labelled windows the current fit learned from."""
        self.fits = 0
        self._linear: tuple[float, tuple[float, ...], tuple[float, ...]] | None = None
        """The fit as plain floats for :meth:`predict_one`: intercept, means, weight / scale."""

    @property
    def fitted(self) -> bool:
        return self.weights is not None

    def take_snapshot(
        self, as_of: datetime, params: BgNbdParams, sample: dict[str, tuple[int, RepeatBuying]]
    ) -> None:
        """Keep the ``capacity`` customers of ``sample`` with the smallest keys, as of ``as_of``."""
        rows = sorted(
            (key, stats.summary(as_of))
            for key, stats in sample.values()
            if stats.first_purchase_at < as_of
        )[: self.capacity]
        summaries = np.array([summary for _, summary in rows], dtype=np.float64).reshape(-1, 3)
        self.snapshots.append(
            Snapshot(
                as_of=as_of,
                params=params,
                keys=np.fromiter((key for key, _ in rows), dtype=np.uint64, count=len(rows)),
                x=summaries[:, 0].astype(np.float32),
                t_x=summaries[:, 1].astype(np.float32),
                age=summaries[:, 2].astype(np.float32),
            )
        )
        oldest = as_of - self.max_horizon
        self.snapshots = [s for s in self.snapshots if s.as_of >= oldest]

    def forget(self, customer_id: str) -> None:
        """Drop an erased customer from every snapshot."""
        key = np.uint64(sample_key(customer_id))
        self.snapshots = [_without(s, key) for s in self.snapshots]

    def windows(self) -> tuple[Floats, Floats]:
        """Features and labels (1 = bought within the window) of a deterministic sample of
        the closed windows between two snapshots."""
        matched = []
        for i, older in enumerate(self.snapshots):
            for newer in self.snapshots[i + 1 :]:
                _, at_older, at_newer = np.intersect1d(
                    older.keys, newer.keys, assume_unique=True, return_indices=True
                )
                matched.append((older, newer, at_older, at_newer))
        total = sum(len(at_older) for _, _, at_older, _ in matched)
        keep_share = min(1.0, self.budget / total) if total else 0.0
        rng = np.random.default_rng(len(self.snapshots))
        blocks, labels = [], []
        for older, newer, at_older, at_newer in matched:
            chosen = rng.random(len(at_older)) < keep_share
            if not chosen.any():
                continue
            at_older, at_newer = at_older[chosen], at_newer[chosen]
            weeks = (newer.as_of - older.as_of).total_seconds() / SECONDS_PER_WEEK
            x = older.x[at_older].astype(np.float64)
            t_x = older.t_x[at_older].astype(np.float64)
            age = older.age[at_older].astype(np.float64)
            blocks.append(
                horizon_features(
                    probability_of_purchase(older.params, x, t_x, age, weeks),
                    probability_alive(older.params, x, t_x, age),
                    x,
                    t_x,
                    age,
                    np.full(len(x), weeks),
                )
            )
            labels.append((newer.x[at_newer] > older.x[at_older]).astype(np.float64))
        if not blocks:
            return np.empty((0, len(FEATURES))), np.empty(0)
        return np.vstack(blocks), np.concatenate(labels)

    def refit(self) -> bool:
        """Fit on the closed windows; False (and the previous fit kept) if too few windows,
        or no buyer or no non-buyer among them."""
        features, labels = self.windows()
        if len(labels) < self.min_windows or labels.min() == labels.max():
            return False
        self.weights, self.mean, self.scale = fit_logistic(features, labels)
        self._linear = (
            float(self.weights[0]),
            tuple(self.mean.tolist()),
            tuple((self.weights[1:] / self.scale).tolist()),
        )
        self.windows_learned = len(labels)
        self.fits += 1
        return True

    def predict_one(
        self, bgnbd_purchase: float, alive: float, x: float, t_x: float, age: float, weeks: float
    ) -> float | None:
        """P(any purchase within ``weeks``) of a customer (x, t_x, T), given BG/NBD's
        P(X(h) > 0) and P(alive) for them; None before a first fit.

        One customer on the hot path of every score: plain float arithmetic, the same
        features as :func:`horizon_features`.
        """
        if self._linear is None:
            return None
        logit, means, slopes = self._linear
        row = (
            _logit_one(bgnbd_purchase),
            _logit_one(alive),
            math.log1p(x),
            math.log1p(age),
            math.log(max(weeks, 1.0 / 7.0)),
            math.log1p(max(age - t_x, 0.0)),
            math.log1p(t_x),
        )
        for value, centre, slope in zip(row, means, slopes, strict=True):
            logit += slope * (value - centre)
        return 1.0 / (1.0 + math.exp(-max(min(logit, 35.0), -35.0)))


def _without(snapshot: Snapshot, key: np.uint64) -> Snapshot:
    keep = snapshot.keys != key
    if keep.all():
        return snapshot
    return Snapshot(
        as_of=snapshot.as_of,
        params=snapshot.params,
        keys=snapshot.keys[keep],
        x=snapshot.x[keep],
        t_x=snapshot.t_x[keep],
        age=snapshot.age[keep],
    )
