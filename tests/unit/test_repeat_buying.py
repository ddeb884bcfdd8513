"""BG/NBD and Gamma-Gamma: the published figures, agreement with lifetimes, the sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter

from streamcrm.cli.evaluation import cdnow_sample_path, default_cutoff, read_cdnow
from streamcrm.models.repeat_buying import (
    BgNbdParams,
    RepeatBuying,
    RepeatBuyingModel,
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
    probability_of_purchase,
    sample_key,
)

PAPER = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
"""Fader, Hardie & Lee (2005), fitted on all 23,570 CDNOW customers."""

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def cdnow_calibration() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T, transactions, mean spend) of the CDNOW sample at the 39-week cut-off."""
    events = list(read_cdnow(cdnow_sample_path()))
    cutoff = default_cutoff(events, timedelta(weeks=39))
    days: dict[str, dict[datetime, float]] = {}
    for e in events:
        if e.occurred_at < cutoff:
            per_day = days.setdefault(e.customer_id, {})
            per_day[e.occurred_at] = per_day.get(e.occurred_at, 0.0) + e.amount
    rows = []
    for per_day in days.values():
        first, last = min(per_day), max(per_day)
        week = timedelta(weeks=1)
        rows.append(
            (
                len(per_day) - 1,
                (last - first) / week,
                (cutoff - first) / week,
                len(per_day),
                sum(per_day.values()) / len(per_day),
            )
        )
    x, t_x, age, n, m = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    return x, t_x, age, n, m


def test_expected_purchases_reproduce_the_papers_worked_example() -> None:
    # Fader, Hardie & Lee (2005), section 5: x = 2, t_x = 30.43, T = 38.86 → 1.226 in 39 weeks.
    assert expected_purchases(PAPER, 2, 30.43, 38.86, 39.0) == pytest.approx(1.226, abs=5e-4)


def test_a_customer_who_never_repurchased_is_alive_and_one_overdue_probably_not() -> None:
    assert probability_alive(PAPER, 0, 0.0, 30.0) == 1.0
    assert probability_alive(PAPER, 10, 5.0, 38.0) < 0.05 < probability_alive(PAPER, 10, 37.0, 38.0)


def test_purchase_probability_grows_with_the_horizon_and_stays_below_alive() -> None:
    short, long = (float(probability_of_purchase(PAPER, 3, 20.0, 30.0, w)) for w in (4.0, 52.0))
    assert 0 < short < long < float(probability_alive(PAPER, 3, 20.0, 30.0))


def test_fitted_bgnbd_matches_lifetimes_on_the_cdnow_sample(cdnow_calibration) -> None:
    x, t_x, age, _, _ = cdnow_calibration
    ours = fit_bgnbd(x, t_x, age)
    theirs = BetaGeoFitter().fit(x, t_x, age)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(ours, name) == pytest.approx(theirs.params_[name], rel=2e-3)
    np.testing.assert_allclose(
        expected_purchases(ours, x, t_x, age, 39.0),
        theirs.conditional_expected_number_of_purchases_up_to_time(39.0, x, t_x, age),
        atol=2e-3,
    )
    np.testing.assert_allclose(
        probability_alive(ours, x, t_x, age),
        theirs.conditional_probability_alive(x, t_x, age),
        atol=1e-3,
    )


def test_fitted_gamma_gamma_matches_lifetimes_and_shrinks_towards_the_population(
    cdnow_calibration,
) -> None:
    _, _, _, n, m = cdnow_calibration
    paying = m > 0
    ours = fit_gamma_gamma(n, m)
    theirs = GammaGammaFitter().fit(n[paying], m[paying])
    assert (ours.p, ours.q, ours.gamma) == pytest.approx(
        tuple(theirs.params_[k] for k in ("p", "q", "v")), rel=1e-2
    )
    one_big_order = float(expected_spend(ours, 1, 500.0))
    many_big_orders = float(expected_spend(ours, 20, 500.0))
    assert one_big_order < many_big_orders < 500.0


def _stats(first_day: int, last_day: int, transactions: int) -> RepeatBuying:
    return RepeatBuying(
        first_purchase_at=T0 + timedelta(days=first_day),
        last_purchase_at=T0 + timedelta(days=last_day),
        transactions=transactions,
        mean_spend=20.0,
    )


def test_the_population_sample_keeps_the_smallest_hashes_whatever_the_arrival_order() -> None:
    ids = [f"c{i}" for i in range(300)]
    forwards, backwards = RepeatBuyingModel(capacity=50), RepeatBuyingModel(capacity=50)
    for cid in ids:
        forwards.observe(cid, _stats(0, 10, 2))
    for cid in reversed(ids):
        backwards.observe(cid, _stats(0, 10, 2))
    expected = set(sorted(ids, key=sample_key)[:50])
    assert set(forwards.sample) == set(backwards.sample) == expected


def test_a_customer_in_the_sample_is_replaced_by_their_newest_statistics() -> None:
    model = RepeatBuyingModel(capacity=10)
    model.observe("c1", _stats(0, 10, 2))
    model.observe("c1", _stats(0, 40, 5))
    assert model.sample["c1"][1].transactions == 5


def test_refits_are_versioned_and_wait_for_enough_customers_and_the_interval() -> None:
    model = RepeatBuyingModel(min_customers=20, refit_interval=timedelta(days=7))
    rng = np.random.default_rng(3)
    for i in range(10):
        model.observe(f"c{i}", _stats(0, int(rng.integers(0, 60)), int(rng.integers(1, 6))))
    assert model.refit(T0 + timedelta(days=90)) is False and model.fits == 0
    for i in range(10, 200):
        model.observe(f"c{i}", _stats(0, int(rng.integers(0, 60)), int(rng.integers(1, 6))))
    assert model.refit(T0 + timedelta(days=90)) and model.fits == 1
    assert not model.due(T0 + timedelta(days=96)) and model.due(T0 + timedelta(days=97))
    forecast = model.forecast(_stats(0, 80, 4), T0 + timedelta(days=90), timedelta(days=90))
    assert forecast is not None
    assert 0 < forecast.probability_of_purchase <= forecast.probability_alive <= 1
    assert forecast.expected_value == forecast.expected_purchases * forecast.expected_spend


def test_a_forgotten_customer_leaves_the_sample() -> None:
    from streamcrm.models.repeat_buying import RepeatBuyingModel

    model = RepeatBuyingModel(capacity=10)
    first = datetime(2026, 1, 1, tzinfo=UTC)
    stats = RepeatBuying(first, first + timedelta(days=30), transactions=3, mean_spend=20.0)
    model.observe("c1", stats)
    model.observe("c2", stats)

    assert model.forget("c1") and not model.forget("c1")
    assert list(model.sample) == ["c2"]


def test_the_scalar_forecasts_of_the_hot_path_equal_the_array_formulas() -> None:
    from streamcrm.models.repeat_buying import (
        BgNbdParams,
        GammaGammaParams,
        RepeatBuyingModel,
        expected_purchases,
        expected_spend,
        probability_alive,
        probability_of_purchase,
    )

    model = RepeatBuyingModel()
    model.counts = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    model.spend = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
    first = datetime(2026, 1, 1, tzinfo=UTC)
    as_of = first + timedelta(weeks=40)
    horizons = (timedelta(days=90), timedelta(days=365 * 5))
    for transactions, last_week in [(1, 0), (2, 3), (5, 30), (12, 39), (40, 2)]:
        stats = RepeatBuying(first, first + timedelta(weeks=last_week), transactions, 31.5)
        x, t_x, age = stats.summary(as_of)
        forecasts = model.forecasts(stats, as_of, horizons)
        assert forecasts is not None
        for horizon, forecast in zip(horizons, forecasts, strict=True):
            weeks = horizon.total_seconds() / (7 * 86_400)
            params = model.counts
            assert forecast.probability_alive == pytest.approx(
                float(probability_alive(params, x, t_x, age)), rel=1e-12
            )
            assert forecast.probability_of_purchase == pytest.approx(
                float(probability_of_purchase(params, x, t_x, age, weeks)), rel=1e-12
            )
            assert forecast.expected_purchases == pytest.approx(
                float(expected_purchases(params, x, t_x, age, weeks)), rel=1e-12
            )
            assert forecast.expected_spend == pytest.approx(
                float(expected_spend(model.spend, transactions, 31.5)), rel=1e-12
            )


def test_a_pickled_model_keeps_its_sample_exactly_and_loads_without_unpacking_it() -> None:
    import pickle

    model = RepeatBuyingModel(capacity=100, min_customers=5)
    for n in range(40):
        first = T0 + timedelta(days=n, microseconds=n * 7919)
        model.observe(
            f"c{n}",
            RepeatBuying(first, first + timedelta(days=3 * n, seconds=n), n + 1, 10.0 + n / 3),
        )
    assert model.refit(T0 + timedelta(days=200))

    loaded = pickle.loads(pickle.dumps(model))

    assert loaded._sample is None  # a scoring worker never pays for the sample
    assert loaded.forecast(model.sample["c3"][1], T0, timedelta(days=30)) == model.forecast(
        model.sample["c3"][1], T0, timedelta(days=30)
    )
    assert loaded.sample == model.sample
    assert pickle.loads(pickle.dumps(loaded)).sample == model.sample  # unpacked, then again
    assert loaded.refit(T0 + timedelta(days=200)) and loaded.counts == model.counts


def test_the_sample_stays_the_smallest_hashes_through_forgetting_and_coming_back() -> None:
    model = RepeatBuyingModel(capacity=10)
    stats = RepeatBuying(T0, T0 + timedelta(days=5), 2, 30.0)
    ids = [f"c{n}" for n in range(60)]
    for customer_id in ids:
        model.observe(customer_id, stats)
    kept = sorted(ids, key=sample_key)[:10]
    for customer_id in kept[:4]:
        model.forget(customer_id)
    model.observe(kept[0], stats)  # erased, then consented and bought again
    for customer_id in ids:  # everyone again, in another order
        model.observe(customer_id, stats)

    assert set(model.sample) == set(kept)


def test_a_checkpoint_of_the_earlier_sample_layout_still_loads() -> None:
    stats = RepeatBuying(T0, T0 + timedelta(days=5), 2, 30.0)
    earlier = RepeatBuyingModel(capacity=3)
    state = dict(earlier.__dict__)
    for name in ("_sample", "_packed_sample", "_by_key"):
        del state[name]
    state["sample"] = {"a": (sample_key("a"), stats), "b": (sample_key("b"), stats)}
    state["_largest_key"] = max(sample_key("a"), sample_key("b"))

    loaded = RepeatBuyingModel.__new__(RepeatBuyingModel)
    loaded.__setstate__(state)
    loaded.observe("c", stats)
    loaded.observe("d", stats)

    smallest = sorted("abcd", key=sample_key)[:3]
    assert set(loaded.sample) == set(smallest)
