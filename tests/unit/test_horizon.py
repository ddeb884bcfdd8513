"""The purchase-horizon model: P(any purchase within h) learned from windows closed in event
time, correcting BG/NBD where its story is wrong and agreeing with it where it is right."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from streamcrm.models import BuyingObservation, ModelBundle, QueuedUpdates
from streamcrm.models.horizon import FEATURES, PurchaseHorizonModel, horizon_features
from streamcrm.models.metrics import roc_auc
from streamcrm.models.repeat_buying import (
    BgNbdParams,
    RepeatBuying,
    probability_alive,
    probability_of_purchase,
    sample_key,
)

T0 = datetime(2026, 1, 5, tzinfo=UTC)
WEEK = timedelta(weeks=1)
PARAMS = BgNbdParams(r=0.5, alpha=4.0, a=0.8, b=2.5)


def simulate_purchase_weeks(
    customers: int, weeks: float, seed: int, slowing: float = 0.0
) -> dict[str, list[float]]:
    """Purchase times (weeks after T0) of a cohort acquired over 12 weeks, buying as BG/NBD
    says (gamma rates, a beta dropout chance after each repeat purchase); with ``slowing`` > 0
    each customer's rate also decays, λ(t) = λ · exp(−slowing · t since acquisition), which
    BG/NBD cannot express."""
    rng = np.random.default_rng(seed)
    histories: dict[str, list[float]] = {}
    for n in range(customers):
        rate = rng.gamma(PARAMS.r, 1.0 / PARAMS.alpha)
        dropout = rng.beta(PARAMS.a, PARAMS.b)
        first = rng.uniform(0.0, 12.0)
        times, t = [first], first
        while True:
            # Thinning: candidate gaps at the initial rate, kept with the decayed share.
            t += rng.exponential(1.0 / rate)
            if t > weeks:
                break
            if rng.random() > math.exp(-slowing * (t - first)):
                continue
            times.append(t)
            if rng.random() < dropout:
                break
        histories[f"c{n}"] = times
    return histories


def stats_as_of(times: list[float], as_of: float) -> RepeatBuying | None:
    seen = [t for t in times if t < as_of]
    if not seen:
        return None
    return RepeatBuying(T0 + seen[0] * WEEK, T0 + seen[-1] * WEEK, len(seen), 20.0)


def learned_bundle(histories: dict[str, list[float]], until: float) -> ModelBundle:
    """A bundle that saw the cohort's purchases up to ``until`` in event time, each as the
    learner sees it: the customer's statistics just after it."""
    bundle = ModelBundle()
    purchases = sorted(
        (t, customer_id) for customer_id, times in histories.items() for t in times if t < until
    )
    for t, customer_id in purchases:
        stats = stats_as_of(histories[customer_id], math.nextafter(t, math.inf))
        assert stats is not None
        bundle.observe_buying(BuyingObservation(customer_id, stats, T0 + t * WEEK))
    return bundle


def holdout_check(
    histories: dict[str, list[float]], bundle: ModelBundle, at: float, horizon: float
) -> tuple[float, float, float, float]:
    """(realised share who bought in (at, at + horizon], mean forecast of the bundle, mean
    forecast of BG/NBD alone, ROC AUC of the bundle's forecast)."""
    bought, ours, theirs = [], [], []
    for times in histories.values():
        stats = stats_as_of(times, at)
        if stats is None:
            continue
        forecasts = bundle.forecasts(stats, T0 + at * WEEK, (horizon * WEEK,))
        plain = bundle.repeat_buying.forecasts(stats, T0 + at * WEEK, (horizon * WEEK,))
        assert forecasts is not None and plain is not None
        bought.append(any(at <= t < at + horizon for t in times))
        ours.append(forecasts[0].probability_of_purchase)
        theirs.append(plain[0].probability_of_purchase)
    return (
        float(np.mean(bought)),
        float(np.mean(ours)),
        float(np.mean(theirs)),
        roc_auc(np.array(bought, dtype=float), np.array(ours)),
    )


@pytest.fixture(scope="module")
def bgnbd_world() -> tuple[dict[str, list[float]], ModelBundle]:
    histories = simulate_purchase_weeks(3_000, 70.0, seed=3)
    return histories, learned_bundle(histories, 40.0)


@pytest.fixture(scope="module")
def slowing_world() -> tuple[dict[str, list[float]], ModelBundle]:
    histories = simulate_purchase_weeks(3_000, 70.0, seed=5, slowing=0.04)
    return histories, learned_bundle(histories, 40.0)


def test_a_window_is_labelled_bought_when_repeat_purchases_grew_between_snapshots() -> None:
    model = PurchaseHorizonModel(min_windows=1)
    model.observe("buyer", RepeatBuying(T0, T0, 1, 10.0), T0)
    model.observe("buyer", RepeatBuying(T0, T0 + 2 * WEEK, 2, 10.0), T0 + 2 * WEEK)
    model.observe("quiet", RepeatBuying(T0, T0, 1, 10.0), T0)
    model.take_snapshot(T0 + 4 * WEEK, PARAMS)
    model.observe("buyer", RepeatBuying(T0, T0 + 6 * WEEK, 3, 10.0), T0 + 6 * WEEK)
    model.observe("newcomer", RepeatBuying(T0 + 7 * WEEK, T0 + 7 * WEEK, 1, 5.0), T0 + 7 * WEEK)
    model.take_snapshot(T0 + 8 * WEEK, PARAMS)

    x, t_x, age, known = model.snapshot(T0 + 4 * WEEK)
    assert known.tolist() == [True, True, False]  # the newcomer had not bought yet
    assert (x[:2].tolist(), t_x[:2].tolist(), age[:2].tolist()) == ([1, 0], [2, 0], [4, 4])

    features, labels = model.windows()

    # One window per customer known at its start: the buyer bought again within it.
    assert labels.tolist() == [1.0, 0.0]
    assert features.shape == (2, len(FEATURES))
    assert np.allclose(features[:, FEATURES.index("log_horizon")], math.log(4.0))


def test_a_customer_who_joins_with_purchases_already_made_opens_no_window_before_it() -> None:
    model = PurchaseHorizonModel(min_windows=1)
    model.take_snapshot(T0 + 4 * WEEK, PARAMS)
    # Seen first with 5 purchase days, the last in week 6: their days before are unknown.
    model.observe("veteran", RepeatBuying(T0, T0 + 6 * WEEK, 5, 10.0), T0 + 7 * WEEK)
    model.take_snapshot(T0 + 8 * WEEK, PARAMS)
    model.observe("veteran", RepeatBuying(T0, T0 + 9 * WEEK, 6, 10.0), T0 + 9 * WEEK)
    model.take_snapshot(T0 + 10 * WEEK, PARAMS)

    assert model.snapshot(T0 + 4 * WEEK)[3].tolist() == [False]
    _, labels = model.windows()
    assert labels.tolist() == [1.0]  # only week 8 -> week 10, in which they bought


def test_an_unfitted_horizon_model_leaves_the_bgnbd_forecasts_untouched() -> None:
    bundle = ModelBundle()
    histories = simulate_purchase_weeks(300, 3.0, seed=1)
    for customer_id, times in histories.items():
        stats = stats_as_of(times, 3.0)
        if stats is not None:
            bundle.observe_buying(BuyingObservation(customer_id, stats, T0 + 3 * WEEK))
    assert bundle.repeat_buying.fits == 1  # one grid point: no closed window yet
    assert not bundle.horizon.fitted

    stats = RepeatBuying(T0, T0 + WEEK, 2, 10.0)
    horizons = (timedelta(days=90),)
    assert bundle.forecasts(stats, T0 + 3 * WEEK, horizons) == bundle.repeat_buying.forecasts(
        stats, T0 + 3 * WEEK, horizons
    )


def test_where_bgnbd_is_the_truth_the_learned_probability_stays_calibrated(bgnbd_world) -> None:
    histories, bundle = bgnbd_world
    assert bundle.horizon.fitted and bundle.horizon.windows_learned >= 10_000
    share, ours, theirs, auc = holdout_check(histories, bundle, at=40.0, horizon=20.0)
    assert ours == pytest.approx(share, abs=0.03)
    assert theirs == pytest.approx(share, abs=0.03)  # the control: BG/NBD is right here
    assert auc > 0.75


def test_where_customers_slow_down_it_corrects_bgnbds_overforecast(slowing_world) -> None:
    histories, bundle = slowing_world
    share, ours, theirs, _ = holdout_check(histories, bundle, at=40.0, horizon=20.0)
    assert theirs - share > 0.04  # BG/NBD, whose rates never change, expects too much
    assert abs(ours - share) < 0.7 * abs(theirs - share)  # closer, if not all the way


def test_expected_purchases_follow_the_learned_probability(slowing_world) -> None:
    _, bundle = slowing_world
    as_of, horizons = T0 + 40 * WEEK, (timedelta(days=90), timedelta(days=365))
    for stats in (
        RepeatBuying(T0, T0 + 39 * WEEK, 9, 10.0),  # busy and recent
        RepeatBuying(T0, T0 + 5 * WEEK, 6, 10.0),  # busy, then silent for 35 weeks
        RepeatBuying(T0 + 30 * WEEK, T0 + 30 * WEEK, 1, 10.0),  # one order, 10 weeks ago
    ):
        ours = bundle.forecasts(stats, as_of, horizons)
        plain = bundle.repeat_buying.forecasts(stats, as_of, horizons)
        assert ours is not None and plain is not None
        for mine, theirs in zip(ours, plain, strict=True):
            p, q = mine.probability_of_purchase, theirs.probability_of_purchase
            assert 0.0 < p < 1.0
            assert mine.expected_purchases >= p  # a buyer buys at least once
            if p <= q:  # fewer buyers than BG/NBD expects: its count scaled down
                assert mine.expected_purchases == pytest.approx(
                    theirs.expected_purchases * p / q, rel=1e-9
                )
            else:  # more: BG/NBD's count plus the extra buyers
                assert mine.expected_purchases >= theirs.expected_purchases + (p - q)
            assert (mine.probability_alive, mine.expected_spend) == (
                theirs.probability_alive,
                theirs.expected_spend,
            )


def test_the_hot_path_prediction_equals_the_regression_on_the_array_features(
    slowing_world,
) -> None:
    _, bundle = slowing_world
    model, params = bundle.horizon, bundle.repeat_buying.counts
    assert params is not None and model.weights is not None
    assert model.mean is not None and model.scale is not None
    for x, t_x, age, weeks in [(0, 0.0, 3.0, 13.0), (4, 20.0, 38.0, 52.0), (15, 37.5, 39.0, 1.0)]:
        arrays = [np.array([float(v)]) for v in (x, t_x, age)]
        buys = probability_of_purchase(params, *arrays, weeks)
        alive = probability_alive(params, *arrays)
        row = horizon_features(buys, alive, *arrays, np.array([weeks]))[0]
        logit = model.weights[0] + ((row - model.mean) / model.scale) @ model.weights[1:]
        expected = 1.0 / (1.0 + math.exp(-logit))
        assert model.predict_one(
            float(buys[0]), float(alive[0]), x, t_x, age, weeks
        ) == pytest.approx(expected, rel=1e-9)


def test_an_erased_customer_leaves_the_purchase_days_and_every_window(bgnbd_world) -> None:
    histories, bundle = bgnbd_world
    model = pickle.loads(pickle.dumps(bundle.horizon))
    erased = next(c for c in histories if sample_key(c) in model.histories)
    windows_before = model.windows()[1].size

    model.forget(erased)

    assert sample_key(erased) not in model.histories
    assert all(len(known) == len(model.histories) for *_, known in [model.snapshot(T0)])
    assert model.windows()[1].size <= windows_before


def test_a_checkpoint_packs_the_purchase_days_and_loads_them_exactly(bgnbd_world) -> None:
    _, bundle = bgnbd_world
    model = bundle.horizon
    loaded = pickle.loads(pickle.dumps(model))

    assert loaded._histories is None  # a scoring worker never pays for the purchase days
    assert loaded.predict_one(0.3, 0.8, 2.0, 10.0, 20.0, 13.0) == model.predict_one(
        0.3, 0.8, 2.0, 10.0, 20.0, 13.0
    )
    assert {k: vars_of(h) for k, h in loaded.histories.items()} == {
        k: vars_of(h) for k, h in model.histories.items()
    }
    for point in model.grid:
        for mine, theirs in zip(
            loaded.snapshot(point.as_of), model.snapshot(point.as_of), strict=True
        ):
            assert np.array_equal(mine, theirs)


def vars_of(history: object) -> tuple[object, ...]:
    return tuple(getattr(history, name) for name in type(history).__slots__)  # type: ignore[attr-defined]


def test_old_grid_points_are_dropped_and_the_purchase_days_before_them_folded() -> None:
    model = PurchaseHorizonModel(max_horizon=timedelta(weeks=10))
    purchases = 1
    model.observe("c", RepeatBuying(T0, T0, 1, 1.0), T0)
    for week in range(1, 30):
        if week % 3 == 0:
            purchases += 1
            stats = RepeatBuying(T0, T0 + (week - 0.5) * WEEK, purchases, 1.0)
            model.observe("c", stats, T0 + week * WEEK)
        before = [model.snapshot(p.as_of)[:3] for p in model.grid]
        model.take_snapshot(T0 + week * WEEK, PARAMS)
        after = [model.snapshot(p.as_of)[:3] for p in model.grid[:-1]]
        # Folding keeps every snapshot still on the grid exactly as it was.
        assert [tuple(a.tolist() for a in s) for s in after] == [
            tuple(a.tolist() for a in s) for s in before[len(before) - len(after) :]
        ]
    assert [p.as_of for p in model.grid] == [T0 + w * WEEK for w in range(19, 30)]
    (history,) = model.histories.values()
    assert history.earlier == 6 and len(history.times) == 3  # days 3..18 folded, 21..27 kept


def test_a_checkpoint_from_before_the_horizon_model_loads_unfitted() -> None:
    bundle = ModelBundle()
    state = dict(bundle.__dict__)
    del state["horizon"]
    old = ModelBundle.__new__(ModelBundle)
    old.__setstate__(state)
    assert not old.horizon.fitted


def test_live_scores_carry_the_corrected_forecasts(slowing_world) -> None:
    from streamcrm.core.events import PurchaseEvent
    from streamcrm.core.features import repeat_buying
    from streamcrm.core.scoring import ScoringConfig, score_event

    _, bundle = slowing_world
    config = ScoringConfig()
    state = None
    for week in (0, 1, 2, 3, 4):  # busy at first, then asked about after a long silence
        event = PurchaseEvent(
            event_id=f"e{week}",
            customer_id="live",
            order_id=f"o{week}",
            occurred_at=T0 + week * WEEK,
            amount=20.0,
            items=1,
            channel="web",
        )
        state = score_event(state, event, bundle, config, learner=QueuedUpdates()).state
    assert state is not None
    as_of = T0 + 40 * WEEK
    late = PurchaseEvent(
        event_id="late",
        customer_id="live",
        order_id="late",
        occurred_at=as_of,
        amount=20.0,
        items=1,
        channel="web",
    )
    scored = score_event(state, late, bundle, config, learner=QueuedUpdates())
    assert scored.score is not None
    stats = repeat_buying(scored.state)
    assert stats is not None
    ours = bundle.forecasts(stats, as_of, (config.churn_window, config.clv_horizon))
    plain = bundle.repeat_buying.forecasts(stats, as_of, (config.churn_window,))
    assert ours is not None and plain is not None
    assert scored.score.expected_purchases == pytest.approx(ours[0].expected_purchases)
    assert scored.score.clv_expected == pytest.approx(ours[1].expected_value)
    assert ours[0].expected_purchases != pytest.approx(plain[0].expected_purchases, rel=1e-3)
