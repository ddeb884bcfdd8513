"""Probabilistic repeat buying: BG/NBD for purchase counts, Gamma-Gamma for spend.

Each customer is summarised by the literature's sufficient statistics, in weeks:

- ``x``: repeat transactions (a transaction is one customer-day; x = days with a purchase − 1),
- ``t_x``: time from the first to the last transaction ("recency" in the papers),
- ``T``: time from the first transaction to now ("age"),
- ``m``: mean spend per transaction, over ``n = x + 1`` transactions.

**BG/NBD** (Fader, Hardie & Lee 2005): while alive a customer buys at Poisson rate λ ~
Gamma(r, α); after every transaction they drop out with probability p ~ Beta(a, b).
Its log-likelihood for one customer, with B the Beta function, is

    ℓ = ln Γ(r+x) − ln Γ(r) + r ln α + ln B(a, b+x) − ln B(a, b)
        + ln[ (α+T)^−(r+x) + 1{x>0} · a/(b+x−1) · (α+t_x)^−(r+x) ]

and, conditional on (x, t_x, T):

    P(alive)        = 1 / (1 + 1{x>0} · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x))
    P(X(t) > 0)     = P(alive) · (1 − ((α+T)/(α+T+t))^(r+x))
    E[X(t)]         = P(alive) · (a+b+x−1)/(a−1)
                      · (1 − ((α+T)/(α+T+t))^(r+x) · ₂F₁(r+x, b+x; a+b+x−1; t/(α+T+t)))

**Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"): spend per transaction has mean
ν⁻¹·p with ν ~ Gamma(q, γ); the expected spend of a customer with n transactions of mean m is

    E[M | n, m] = p (γ + n m) / (p n + q − 1).

Everything here is pure NumPy/SciPy; :class:`RepeatBuyingModel` keeps a deterministic sample
of customers and refits both models on it, versioned like the other models.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

SECONDS_PER_WEEK = 7 * 86_400.0

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class BgNbdParams:
    """Population parameters of the BG/NBD model (time in weeks)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Population parameters of the Gamma-Gamma spend model."""

    p: float
    q: float
    gamma: float


@dataclass(frozen=True)
class RepeatBuying:
    """One customer's repeat-buying sufficient statistics (see the module docstring)."""

    first_purchase_at: datetime
    last_purchase_at: datetime
    transactions: int
    mean_spend: float

    def summary(self, as_of: datetime) -> tuple[float, float, float]:
        """``(x, t_x, T)`` in weeks as of ``as_of``."""
        return (
            float(self.transactions - 1),
            (self.last_purchase_at - self.first_purchase_at).total_seconds() / SECONDS_PER_WEEK,
            max((as_of - self.first_purchase_at).total_seconds(), 0.0) / SECONDS_PER_WEEK,
        )


def _arrays(*values: ArrayLike) -> list[Floats]:
    return [np.asarray(v, dtype=np.float64) for v in values]


def bgnbd_log_likelihood(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, age: ArrayLike
) -> Floats:
    """Per-customer BG/NBD log-likelihood ℓ (module docstring)."""
    x, t_x, age = _arrays(x, t_x, age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    shared = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + betaln(a, b + x) - betaln(a, b)
    still_alive = -(r + x) * np.log(alpha + age)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return np.asarray(shared + np.logaddexp(still_alive, dropped), dtype=np.float64)


def _alive_odds_against(params: BgNbdParams, x: Floats, t_x: Floats, age: Floats) -> Floats:
    """1{x>0} · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x): the odds of having dropped out."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        odds = a / (b + x - 1) * np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + t_x)))
    return np.where(x > 0, odds, 0.0)


def probability_alive(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, age: ArrayLike) -> Floats:
    """P(alive | x, t_x, T).

    >>> params = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    >>> float(probability_alive(params, 0, 0.0, 30.0))
    1.0
    >>> float(probability_alive(params, 5, 10.0, 38.0)) < 0.5
    True
    """
    x, t_x, age = _arrays(x, t_x, age)
    return np.asarray(1.0 / (1.0 + _alive_odds_against(params, x, t_x, age)))


def probability_of_purchase(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, age: ArrayLike, weeks: float
) -> Floats:
    """P(at least one transaction in the next ``weeks`` | x, t_x, T)."""
    x, t_x, age = _arrays(x, t_x, age)
    quiet_if_alive = np.exp(
        (params.r + x) * (np.log(params.alpha + age) - np.log(params.alpha + age + weeks))
    )
    return np.asarray(probability_alive(params, x, t_x, age) * (1.0 - quiet_if_alive))


def expected_purchases(
    params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, age: ArrayLike, weeks: float
) -> Floats:
    """E[transactions in the next ``weeks`` | x, t_x, T] (Fader, Hardie & Lee 2005, eq. 10).

    >>> params = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    >>> round(float(expected_purchases(params, 2, 30.43, 38.86, 39.0)), 3)  # the paper: 1.226
    1.226
    """
    x, t_x, age = _arrays(x, t_x, age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    ratio = np.exp((r + x) * (np.log(alpha + age) - np.log(alpha + age + weeks)))
    series = hyp2f1(r + x, b + x, a + b + x - 1, weeks / (alpha + age + weeks))
    a_minus_one = a - 1 if abs(a - 1) > 1e-9 else 1e-9  # the formula's removable pole at a = 1
    if_alive = (a + b + x - 1) / a_minus_one * (1.0 - ratio * series)
    return np.asarray(probability_alive(params, x, t_x, age) * if_alive)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, age: ArrayLike) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters (L-BFGS over log-parameters)."""
    x, t_x, age = _arrays(x, t_x, age)

    def negative_log_likelihood(log_params: Floats) -> float:
        params = BgNbdParams(*np.exp(log_params))
        total = float(np.sum(bgnbd_log_likelihood(params, x, t_x, age)))
        return -total if math.isfinite(total) else 1e300

    start = np.zeros(4)
    result = minimize(negative_log_likelihood, start, method="L-BFGS-B", bounds=[(-10.0, 10.0)] * 4)
    return BgNbdParams(*(float(v) for v in np.exp(result.x)))


def gamma_gamma_log_likelihood(
    params: GammaGammaParams, transactions: ArrayLike, mean_spend: ArrayLike
) -> Floats:
    """Per-customer Gamma-Gamma log-likelihood of a mean spend ``m`` over ``n`` transactions."""
    n, m = _arrays(transactions, mean_spend)
    p, q, g = params.p, params.q, params.gamma
    return np.asarray(
        gammaln(p * n + q)
        - gammaln(p * n)
        - gammaln(q)
        + q * math.log(g)
        + (p * n - 1) * np.log(m)
        + p * n * np.log(n)
        - (p * n + q) * np.log(g + n * m)
    )


def fit_gamma_gamma(transactions: ArrayLike, mean_spend: ArrayLike) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from customers with a positive mean spend."""
    n, m = _arrays(transactions, mean_spend)
    keep = m > 0
    n, m = n[keep], m[keep]

    def negative_log_likelihood(log_params: Floats) -> float:
        total = float(
            np.sum(gamma_gamma_log_likelihood(GammaGammaParams(*np.exp(log_params)), n, m))
        )
        return -total if math.isfinite(total) else 1e300

    start = np.log([1.0, 2.0, max(float(np.mean(m)), 1.0)])
    result = minimize(
        negative_log_likelihood,
        start,
        method="L-BFGS-B",
        bounds=[(-10.0, 10.0), (math.log(1.0001), 10.0), (-10.0, 20.0)],
    )
    return GammaGammaParams(*(float(v) for v in np.exp(result.x)))


def expected_spend(
    params: GammaGammaParams, transactions: ArrayLike, mean_spend: ArrayLike
) -> Floats:
    """E[spend per transaction | n, m] = p (γ + n m) / (p n + q − 1) (0 transactions: prior)."""
    n, m = _arrays(transactions, mean_spend)
    p, q, g = params.p, params.q, params.gamma
    return np.asarray(p * (g + n * m) / (p * n + q - 1))


def sample_key(customer_id: str) -> int:
    """A stable 64-bit hash of a customer id: the population sample keeps the smallest."""
    return int.from_bytes(hashlib.blake2b(customer_id.encode(), digest_size=8).digest(), "big")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PackedSample:
    """A repeat-buying sample as arrays: ids, sample keys, and per customer the first and
    last purchase (µs since the epoch, exact), transactions and mean spend."""

    customer_ids: list[str]
    keys: NDArray[np.uint64]
    times_and_counts: NDArray[np.int64]
    mean_spend: Floats

    @classmethod
    def pack(cls, sample: dict[str, tuple[int, RepeatBuying]]) -> PackedSample:
        entries = sample.values()
        return cls(
            customer_ids=list(sample),
            keys=np.fromiter((key for key, _ in entries), dtype=np.uint64, count=len(sample)),
            times_and_counts=np.array(
                [
                    (_micros(s.first_purchase_at), _micros(s.last_purchase_at), s.transactions)
                    for _, s in entries
                ],
                dtype=np.int64,
            ).reshape(len(sample), 3),
            mean_spend=np.fromiter(
                (s.mean_spend for _, s in entries), dtype=np.float64, count=len(sample)
            ),
        )

    def unpack(self) -> dict[str, tuple[int, RepeatBuying]]:
        rows = zip(
            self.customer_ids,
            self.keys.tolist(),
            self.times_and_counts.tolist(),
            self.mean_spend.tolist(),
            strict=True,
        )
        return {
            customer_id: (
                key,
                RepeatBuying(
                    first_purchase_at=EPOCH + timedelta(microseconds=first),
                    last_purchase_at=EPOCH + timedelta(microseconds=last),
                    transactions=transactions,
                    mean_spend=mean_spend,
                ),
            )
            for customer_id, key, (first, last, transactions), mean_spend in rows
        }


def _micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class RepeatBuyingForecast:
    """What the probabilistic models say about one customer over a horizon."""

    probability_alive: float
    probability_of_purchase: float
    expected_purchases: float
    expected_spend: float

    @property
    def expected_value(self) -> float:
        """Expected purchases × expected spend per purchase (undiscounted)."""
        return self.expected_purchases * self.expected_spend

    @property
    def purchases_if_buying(self) -> float:
        """E[X] / P(X > 0): the purchases of a customer who buys at all (1 where P is 0)."""
        if self.probability_of_purchase <= 1e-12:
            return 1.0
        return self.expected_purchases / self.probability_of_purchase


class RepeatBuyingModel:
    """BG/NBD + Gamma-Gamma population parameters, refitted on a sample of customers.

    The sample is the ``capacity`` customers with the smallest :func:`sample_key`: the same
    customers whatever order they arrive in, and a uniform sample of the population. Each
    customer's newest statistics replace their older ones. :meth:`refit` fits both models
    on the sample as of an event time; ``fits`` versions the parameters.
    """

    def __init__(
        self,
        capacity: int = 20_000,
        refit_interval: timedelta = timedelta(days=7),
        min_customers: int = 50,
    ) -> None:
        self.capacity = capacity
        self.refit_interval = refit_interval
        self.min_customers = min_customers
        self._sample: dict[str, tuple[int, RepeatBuying]] | None = {}
        self._packed_sample: PackedSample | None = None
        self._by_key: list[tuple[int, str]] | None = []
        """Max-heap of the sample's (−key, id), rebuilt from the sample after a load; may hold
        customers forgotten since (dropped when they come to the top)."""
        self.counts: BgNbdParams | None = None
        self.spend: GammaGammaParams | None = None
        self.fitted_at: datetime | None = None
        self.fits = 0

    @property
    def sample(self) -> dict[str, tuple[int, RepeatBuying]]:
        """customer id → (sample key, newest statistics), unpacked on first use after a load."""
        if self._sample is None:
            assert self._packed_sample is not None, "a loaded model has its packed sample"
            self._sample = self._packed_sample.unpack()
            self._packed_sample = None
        return self._sample

    def __getstate__(self) -> dict[str, object]:
        """Pickle the sample as arrays, not as 20,000 objects: unpickling those took 0.8 s,
        and every scoring worker loads each checkpoint while it scores (it never reads the
        sample; only a learner that resumes from the checkpoint unpacks it)."""
        state = dict(self.__dict__)
        if self._sample is not None:
            state["_packed_sample"] = PackedSample.pack(self._sample)
        state["_sample"] = None
        state["_by_key"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        if "sample" in state:  # a checkpoint of an earlier version: the sample as objects
            state["_sample"] = state.pop("sample")
            state.setdefault("_packed_sample", None)
        state.pop("_largest_key", None)
        state["_by_key"] = None
        self.__dict__.update(state)

    def _heap(self) -> list[tuple[int, str]]:
        if self._by_key is None:
            self._by_key = [(-key, customer_id) for customer_id, (key, _) in self.sample.items()]
            heapq.heapify(self._by_key)
        return self._by_key

    def _largest_key(self) -> int:
        """The largest sample key (−1 for an empty sample), dropping forgotten customers."""
        heap, sample = self._heap(), self.sample
        while heap and heap[0][1] not in sample:
            heapq.heappop(heap)
        return -heap[0][0] if heap else -1

    def observe(self, customer_id: str, stats: RepeatBuying) -> None:
        """Keep (or forget) one customer's newest statistics in the sample."""
        if customer_id in self.sample:
            self.sample[customer_id] = (self.sample[customer_id][0], stats)
            return
        key = sample_key(customer_id)
        if len(self.sample) >= self.capacity and key >= self._largest_key():
            return
        self.sample[customer_id] = (key, stats)
        heapq.heappush(self._heap(), (-key, customer_id))
        if len(self.sample) > self.capacity:
            self._largest_key()  # drops forgotten customers from the top of the heap
            _, evicted = heapq.heappop(self._heap())
            del self.sample[evicted]

    def forget(self, customer_id: str) -> bool:
        """Drop an erased customer from the sample; True if they were in it."""
        if self.sample.pop(customer_id, None) is None:
            return False
        heap = self._heap()
        if len(heap) > 2 * self.capacity:  # too many forgotten entries: start afresh
            self._by_key = None
        return True

    def due(self, as_of: datetime) -> bool:
        """Whether event time ``as_of`` is a refit interval past the last fit."""
        return self.fitted_at is None or as_of >= self.fitted_at + self.refit_interval

    def refit(self, as_of: datetime) -> bool:
        """Fit both models on the sample as of ``as_of``; False if too few customers yet."""
        summaries = [
            (*stats.summary(as_of), stats.transactions, stats.mean_spend)
            for _, stats in self.sample.values()
            if stats.first_purchase_at < as_of
        ]
        if len(summaries) < self.min_customers:
            return False
        x, t_x, age, transactions, mean_spend = np.array(summaries).T
        self.counts = fit_bgnbd(x, t_x, age)
        self.spend = fit_gamma_gamma(transactions, mean_spend)
        self.fitted_at = as_of
        self.fits += 1
        return True

    @property
    def ready(self) -> bool:
        return self.counts is not None and self.spend is not None

    def forecast(
        self, stats: RepeatBuying, as_of: datetime, horizon: timedelta
    ) -> RepeatBuyingForecast | None:
        """The customer's forecast over ``horizon`` after ``as_of`` (None before a first fit)."""
        forecasts = self.forecasts(stats, as_of, (horizon,))
        return forecasts[0] if forecasts is not None else None

    def forecasts(
        self, stats: RepeatBuying, as_of: datetime, horizons: Sequence[timedelta]
    ) -> list[RepeatBuyingForecast] | None:
        """The customer's forecasts over each horizon (None before a first fit).

        One customer at a time, on the hot path of every score: plain float arithmetic (the
        same formulas as :func:`probability_alive`, :func:`probability_of_purchase`,
        :func:`expected_purchases` and :func:`expected_spend`, which work on arrays), with
        P(alive) computed once for all horizons.
        """
        counts, spend = self.counts, self.spend
        if counts is None or spend is None:
            return None
        x, t_x, age = stats.summary(as_of)
        r, alpha, a, b = counts.r, counts.alpha, counts.a, counts.b
        alive = 1.0
        if x > 0:
            exponent = (r + x) * (math.log(alpha + age) - math.log(alpha + t_x))
            alive = 0.0 if exponent > 700 else 1.0 / (1.0 + a / (b + x - 1) * math.exp(exponent))
        n, m = stats.transactions, stats.mean_spend
        per_transaction = spend.p * (spend.gamma + n * m) / (spend.p * n + spend.q - 1)
        a_minus_one = a - 1 if abs(a - 1) > 1e-9 else 1e-9
        out = []
        for horizon in horizons:
            weeks = horizon.total_seconds() / SECONDS_PER_WEEK
            quiet_if_alive = math.exp(
                (r + x) * (math.log(alpha + age) - math.log(alpha + age + weeks))
            )
            series = float(hyp2f1(r + x, b + x, a + b + x - 1, weeks / (alpha + age + weeks)))
            if_alive = (a + b + x - 1) / a_minus_one * (1.0 - quiet_if_alive * series)
            out.append(
                RepeatBuyingForecast(
                    probability_alive=alive,
                    probability_of_purchase=alive * (1.0 - quiet_if_alive),
                    expected_purchases=alive * if_alive,
                    expected_spend=per_transaction,
                )
            )
        return out
