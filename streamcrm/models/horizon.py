"""P(any purchase within h), for any horizon h, learned from the population's own history.

BG/NBD answers "will this customer buy within h?" from (x, t_x, T) and four population
parameters, but it is a parametric story: on real data its probabilities are biased in ways
that depend on the horizon and on how long the customers have been watched (on CDNOW it
says 0.264 where 0.299 of the customers buy). The churn model learns from one window (the
churn window W) only, so asked about another horizon it extrapolates. This model learns the
question for *every* horizon from windows that have closed in event time, and corrects
BG/NBD with what actually happened:

- it keeps the purchase days of the customers in the repeat-buying sample, and at each refit
  of the repeat-buying models (weekly in event time, in the learner) the moment and the
  BG/NBD parameters fitted then: from these a **snapshot** of the sample at any refit,
  per customer (x, t_x, T) as of that moment, is rebuilt;
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
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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


@dataclass(frozen=True)
class Refit:
    """A point of the snapshot grid: when the repeat-buying models were refitted, and the
    BG/NBD parameters fitted then."""

    as_of: datetime
    params: BgNbdParams


class _History:
    """One sampled customer's purchase days, as weeks since :data:`EPOCH`: the first, the
    repeat purchases since the oldest snapshot still used (``times``, ascending), and how
    many repeat purchases came before those (``earlier``, the newest at ``earlier_last``).
    ``known_from``: before this moment the history is incomplete (a customer who joined the
    sample with repeat purchases already made), so no window may start earlier."""

    __slots__ = ("first", "earlier", "earlier_last", "times", "known_from")

    def __init__(
        self, first: float, earlier: int, earlier_last: float, times: list[float], known_from: float
    ) -> None:
        self.first = first
        self.earlier = earlier
        self.earlier_last = earlier_last
        self.times = times
        self.known_from = known_from

    @property
    def transactions(self) -> int:
        return 1 + self.earlier + len(self.times)

    @property
    def latest(self) -> float:
        return self.times[-1] if self.times else self.earlier_last


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _weeks(at: datetime) -> float:
    return (at - EPOCH).total_seconds() / SECONDS_PER_WEEK


class PurchaseHorizonModel:
    """P(any purchase within h) for any h, refitted on the windows closed between snapshots.

    It keeps the purchase days of the customers in the repeat-buying sample (:meth:`observe`,
    :meth:`keep_only`) and the refit grid (:meth:`take_snapshot`); a snapshot of the sample
    at any refit is rebuilt from those, so storage grows with purchases, not with snapshots
    × customers. ``max_horizon``: the longest window learned from (older grid points and the
    purchase days before them are folded away); ``budget``: windows sampled per refit;
    ``min_windows``: fewer labelled windows than this and the model stays unfitted
    (:meth:`predict_one` gives None).

    >>> model = PurchaseHorizonModel()
    >>> model.fitted
    False
    """

    def __init__(
        self,
        max_horizon: timedelta = timedelta(weeks=78),
        budget: int = 100_000,
        min_windows: int = 500,
    ) -> None:
        self.max_horizon = max_horizon
        self.budget = budget
        self.min_windows = min_windows
        self.grid: list[Refit] = []
        self._histories: dict[int, _History] | None = {}
        self._packed: dict[str, NDArray[Any]] | None = None
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
        return self._linear is not None

    @property
    def histories(self) -> dict[int, _History]:
        """Sample key → purchase days; unpacked on first use after a load (a scoring worker
        loads every checkpoint but never reads them)."""
        if self._histories is None:
            assert self._packed is not None, "a loaded model has its packed histories"
            self._histories = _unpack(self._packed)
            self._packed = None
        return self._histories

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if self._histories is not None:
            state["_packed"] = _pack(self._histories)
        state["_histories"] = None
        return state

    def observe(self, customer_id: str, stats: RepeatBuying, as_of: datetime) -> None:
        """Note a sampled customer's newest statistics: a purchase day more is appended at
        their last purchase. (Purchases that arrive late, on an earlier day than the last,
        are placed at the last: the statistics do not say when they were.)"""
        key = sample_key(customer_id)
        first, last = _weeks(stats.first_purchase_at), _weeks(stats.last_purchase_at)
        history = self.histories.get(key)
        if history is None or history.first != first or stats.transactions < history.transactions:
            if stats.transactions == 1:
                history = _History(first, 0, first, [], first)
            else:  # joined with repeat purchases already made: complete from the last only
                history = _History(first, stats.transactions - 1, last, [], last)
            self.histories[key] = history
            return
        for _ in range(stats.transactions - history.transactions):
            history.times.append(max(last, history.latest))

    def keep_only(self, keys: set[int]) -> None:
        """Drop the histories of customers no longer in the sample (evicted or erased)."""
        for key in [key for key in self.histories if key not in keys]:
            del self.histories[key]

    def forget(self, customer_id: str) -> None:
        """Drop an erased customer's purchase days."""
        self.histories.pop(sample_key(customer_id), None)

    def take_snapshot(self, as_of: datetime, params: BgNbdParams) -> None:
        """Add a grid point; drop those older than ``max_horizon`` and fold the purchase days
        before the oldest one left into each history's count."""
        self.grid.append(Refit(as_of, params))
        oldest = as_of - self.max_horizon
        self.grid = [point for point in self.grid if point.as_of >= oldest]
        fold_before = _weeks(self.grid[0].as_of)
        for history in self.histories.values():
            folded = 0
            while folded < len(history.times) and history.times[folded] < fold_before:
                folded += 1
            if folded:
                history.earlier += folded
                history.earlier_last = history.times[folded - 1]
                del history.times[:folded]

    def snapshot(self, at: datetime) -> tuple[Floats, Floats, Floats, NDArray[np.bool_]]:
        """Every kept customer's (x, t_x, T) in weeks as of grid point ``at``, and whether
        they are known then (first purchase before ``at``, history complete)."""
        histories = list(self.histories.values())
        s = _weeks(at)
        first = np.fromiter((h.first for h in histories), np.float64, len(histories))
        known = first < s
        known &= np.fromiter((h.known_from for h in histories), np.float64, len(histories)) < s
        counts = np.fromiter(
            (h.earlier + bisect_left(h.times, s) for h in histories), np.float64, len(histories)
        )
        last = np.fromiter((_last_before(h, s) for h in histories), np.float64, len(histories))
        return counts, last - first, np.maximum(s - first, 0.0), known

    def windows(self) -> tuple[Floats, Floats]:
        """Features and labels (1 = bought within the window) of a deterministic sample of
        the windows closed between two grid points, over the customers known at both."""
        snapshots = [self.snapshot(point.as_of) for point in self.grid]
        pairs = [(i, j) for i in range(len(self.grid)) for j in range(i + 1, len(self.grid))]
        total = sum(int(snapshots[i][3].sum()) for i, _ in pairs)
        keep_share = min(1.0, self.budget / total) if total else 0.0
        rng = np.random.default_rng(len(self.grid))
        blocks, labels = [], []
        for i, j in pairs:
            x, t_x, age, known = snapshots[i]
            chosen = np.flatnonzero(known)
            chosen = chosen[rng.random(len(chosen)) < keep_share]
            if not len(chosen):
                continue
            older = self.grid[i]
            weeks = (self.grid[j].as_of - older.as_of).total_seconds() / SECONDS_PER_WEEK
            x, t_x, age = x[chosen], t_x[chosen], age[chosen]
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
            labels.append((snapshots[j][0][chosen] > x).astype(np.float64))
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


def _last_before(history: _History, at: float) -> float:
    index = bisect_left(history.times, at)
    return history.times[index - 1] if index else history.earlier_last


def _pack(histories: dict[int, _History]) -> dict[str, NDArray[Any]]:
    """The histories as a few arrays (pickling 20,000 small objects is slow)."""
    rows = list(histories.items())
    return {
        "keys": np.array([key for key, _ in rows], dtype=np.uint64),
        "numbers": np.array(
            [(h.first, h.earlier, h.earlier_last, h.known_from, len(h.times)) for _, h in rows],
            dtype=np.float64,
        ).reshape(len(rows), 5),
        "times": np.array([t for _, h in rows for t in h.times], dtype=np.float64),
    }


def _unpack(packed: dict[str, NDArray[Any]]) -> dict[int, _History]:
    keys = packed["keys"].tolist()
    times = packed["times"].tolist()
    histories, at = {}, 0
    for key, (first, earlier, earlier_last, known_from, n) in zip(
        keys, packed["numbers"].tolist(), strict=True
    ):
        count = int(n)
        histories[key] = _History(
            first, int(earlier), earlier_last, times[at : at + count], known_from
        )
        at += count
    return histories
