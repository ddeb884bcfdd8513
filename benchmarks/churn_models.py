"""Which churn model? Measured against the oracle, not chosen by habit.

Run ``python benchmarks/churn_models.py [--customers 300 --days 365 --seeds 7 11 13]`` (the
demo's simulated year). Each seed's history is replayed once through the pure scoring core
(:func:`streamcrm.bench.churn.record_tape`: in-memory state, sweeps, heartbeats and as-of
re-scores as a worker makes them), then every candidate answers the same questions in the same
order (:func:`streamcrm.bench.churn.play`). Printed per candidate and seed: progressive ROC
AUC on the delayed labels, the oracle's on the same labels (:mod:`streamcrm.sim.oracle`), their
ratio, the ROC AUC of each customer's last published churn probability against the truth,
log loss, Brier score and the play time. The simpler truth-based scores are printed per seed.
``--gap-screen`` and ``--repeat-buying-screen`` add screens of features and scores the live
model does not use (progressive AUC only).
"""

from __future__ import annotations

import argparse
import math
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

from river import compose, forest, linear_model, optim, preprocessing, tree

from streamcrm.bench.churn import ChurnTape, churn_figures, play, record_tape
from streamcrm.core.events import PurchaseEvent
from streamcrm.models import BuyingObservation, ModelBundle
from streamcrm.models.churn import ChurnModel
from streamcrm.models.metrics import roc_auc
from streamcrm.models.repeat_buying import RepeatBuying
from streamcrm.settings import Settings
from streamcrm.sim.oracle import oracle_churn_probability
from streamcrm.sim.simulator import Simulation, simulate


def cadence(features: Mapping[str, float]) -> dict[str, float]:
    """The churn features plus ones relative to the customer's own cadence and trends:
    ρh (purchases the own rate expects per horizon), ln(1 + ρg) and min(ρg, 10)² (silence
    over the usual gap), recent − mean satisfaction, and whether a whole horizon is silent."""
    x = dict(features)
    x["expected_at_own_rate"] = math.exp(x["log_expected_at_own_rate"])
    x["log_silence_times_rate"] = math.log1p(x["silence_times_rate"])
    x["silence_times_rate_squared"] = min(x["silence_times_rate"], 10.0) ** 2
    x["satisfaction_trend"] = x["satisfaction_recent"] - x["satisfaction_mean"]
    x["silent_a_horizon"] = float(x["recency_in_horizons"] > 1.0)
    return x


BIN_EDGES: dict[str, tuple[float, ...]] = {
    "silence_times_rate": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "recency_in_horizons": (0.1, 0.25, 0.5, 1.0, 2.0),
    "log_expected_at_own_rate": (-1.0, 0.0, 1.0, 2.0),
    "age_in_horizons": (0.5, 1.0, 2.0, 3.0),
    "satisfaction_recent": (0.4, 0.55, 0.7, 0.8),
    "complaints": (0.5, 1.5, 2.5),
}
"""Bins of :func:`binned`: a linear model with a step function per feature."""


def binned(features: Mapping[str, float]) -> dict[str, float]:
    """:func:`cadence`, plus a one-hot bin of each of :data:`BIN_EDGES` and ρh × g/h."""
    x = cadence(features)
    for name, edges in BIN_EDGES.items():
        found = sum(x[name] > edge for edge in edges)
        for index in range(len(edges) + 1):
            x[f"{name}_bin{index}"] = float(found == index)
    x["rate_x_recency"] = x["expected_at_own_rate"] * x["recency_in_horizons"]
    return x


def _lr(rate: float, l2: float = 1e-4, adam: bool = False) -> Any:
    optimizer = optim.Adam(rate) if adam else optim.SGD(rate)
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optimizer, l2=l2
    )


CANDIDATES: dict[str, Callable[[], Any]] = {
    "LR SGD 0.01 (live)": lambda: _lr(0.01),
    "LR SGD 0.05": lambda: _lr(0.05),
    "LR SGD 0.1, L2 1e-3": lambda: _lr(0.1, 1e-3),
    "LR Adam 0.01, no L2": lambda: _lr(0.01, 0.0, adam=True),
    "cadence + LR SGD 0.01": lambda: compose.FuncTransformer(cadence) | _lr(0.01),
    "cadence + LR SGD 0.005, no L2": lambda: compose.FuncTransformer(cadence) | _lr(0.005, 0.0),
    "binned + LR SGD 0.01": lambda: compose.FuncTransformer(binned) | _lr(0.01),
    "Hoeffding adaptive tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=1),
    "ARF (10 trees)": lambda: forest.ARFClassifier(n_models=10, seed=1),
    "cadence + ARF (10 trees)": lambda: (
        compose.FuncTransformer(cadence) | forest.ARFClassifier(n_models=10, seed=1)
    ),
    "ARF (25 trees)": lambda: forest.ARFClassifier(n_models=25, seed=1),
}


def gap_statistics(days: Sequence[datetime], at: datetime) -> dict[str, float]:
    """Features of the gaps between the purchase days ``days`` (up to ``at``) that the
    customer state does not keep: with gaps gᵢ (days) of mean ḡ and an EWMA e (weight 0.4 on
    the newest), silence s = at − last day: ln(1 + s/ḡ), (s − ḡ) / (sd + ḡ/4 + 1), ln(e/ḡ),
    ln(g_last/ḡ), ln ḡ and 90 / max(e, ḡ); all 0 (and ``no_repeat`` 1) before two days."""
    names = (
        "log_silence_over_mean_gap",
        "silence_z",
        "log_recent_over_mean_gap",
        "log_last_gap_over_mean",
        "log_mean_gap",
        "expected_in_window",
    )
    if len(days) < 2:
        return {**dict.fromkeys(names, 0.0), "no_repeat": 1.0}
    gaps = [max((b - a).total_seconds() / 86_400, 0.5) for a, b in pairwise(days)]
    mean = sum(gaps) / len(gaps)
    spread = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    recent = gaps[0]
    for gap in gaps[1:]:
        recent = 0.6 * recent + 0.4 * gap
    silence = (at - days[-1]).total_seconds() / 86_400
    values = (
        math.log1p(silence / mean),
        (silence - mean) / (spread + mean / 4 + 1),
        math.log(recent / mean),
        math.log(gaps[-1] / mean),
        math.log(mean),
        90 / max(recent, mean),
    )
    return dict(zip(names, values, strict=True))


def screen_gap_statistics(
    simulation: Simulation, tape: ChurnTape
) -> tuple[dict[str, float], list[tuple[dict[str, float], bool]]]:
    """Progressive ROC AUC on the tape's labels with :func:`gap_statistics` added to each
    label's features, computed from the simulated purchases (a screen before adding gap
    statistics to the customer state: no last-published figure, the tape's other predictions
    carry no customer)."""
    days: dict[str, list[datetime]] = {}
    for event in simulation.events:
        if isinstance(event, PurchaseEvent):
            seen = days.setdefault(event.customer_id, [])
            if not seen or event.occurred_at.date() != seen[-1].date():
                seen.append(event.occurred_at)
    rows = []
    for label in tape.labels:
        history = days.get(label.customer_id, [])
        known = history[: bisect_right(history, label.scored_at)]
        rows.append(({**label.features, **gap_statistics(known, label.scored_at)}, label.churned))
    aucs = {}
    for name, factory in GAP_SCREEN.items():
        model = _model(factory)
        predicted = []
        for features, churned in rows:
            predicted.append(model.predict_proba_one(features))
            model.learn_one(features, churned)
        aucs[name] = roc_auc([churned for _, churned in rows], predicted)
    return aucs, rows


def batch_check(rows: Sequence[tuple[Mapping[str, float], bool]], oracle: Sequence[float]) -> str:
    """How far a *batch* model of the same features gets: logistic regression (binned +
    cadence + gap features, standardised, L2 1e-3, 500 full-batch gradient steps) fitted on
    the first half of the labels, ROC AUC on the second half, beside the oracle's there."""
    import numpy as np

    expanded = [binned(features) for features, _ in rows]
    names = sorted(expanded[0])
    x = np.array([[f.get(n, 0.0) for n in names] for f in expanded], dtype=np.float64)
    y = np.array([churned for _, churned in rows], dtype=np.float64)
    half = len(rows) // 2
    mean, std = x[:half].mean(axis=0), x[:half].std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    for _ in range(500):
        p = 1 / (1 + np.exp(-z[:half] @ w))
        w -= 0.5 * (z[:half].T @ (p - y[:half]) / half + 1e-3 * w)
    test = roc_auc(y[half:], z[half:] @ w)
    train = roc_auc(y[:half], z[:half] @ w)
    return (
        f"batch LR, fitted on the first half: AUC {train:.3f} on it, {test:.3f} on the second"
        f" half (oracle there {roc_auc(y[half:], np.asarray(oracle[half:])):.3f})"
    )


GAP_SCREEN: dict[str, Callable[[], Any]] = {
    "gap statistics + cadence + LR SGD 0.01": lambda: compose.FuncTransformer(cadence) | _lr(0.01),
    "gap statistics + ARF (25 trees)": lambda: forest.ARFClassifier(n_models=25, seed=1),
}


def oracle_scores(simulation: Simulation, tape: ChurnTape) -> list[float]:
    """The oracle's probability of each of the tape's labels."""
    purchases: dict[str, list[datetime]] = {}
    for event in simulation.events:
        if isinstance(event, PurchaseEvent):
            purchases.setdefault(event.customer_id, []).append(event.occurred_at)
    window = Settings().scoring.churn_window
    scores = []
    for label in tape.labels:
        times = purchases.get(label.customer_id, [])
        index = bisect_right(times, label.scored_at)
        last = times[index - 1] if index else None
        truth = simulation.truth[label.customer_id]
        scores.append(oracle_churn_probability(truth, last, label.scored_at, window))
    return scores


def screen_repeat_buying(simulation: Simulation, tape: ChurnTape) -> tuple[float, float]:
    """Progressive ROC AUC on the tape's labels of the repeat-buying models as churn scores:
    P(no purchase within W) at each label's snapshot, from BG/NBD refitted weekly on the
    purchases so far (as the learner does), alone and corrected by the purchase-horizon model.
    Each label is scored with what was known at its snapshot time, nothing later."""
    window = Settings().scoring.churn_window
    purchases = sorted(
        (e.occurred_at, e.customer_id, e.amount)
        for e in simulation.events
        if isinstance(e, PurchaseEvent)
    )
    days: dict[str, list[tuple[datetime, float]]] = {}

    def stats_at(customer_id: str, at: datetime) -> RepeatBuying | None:
        seen = [(t, amount) for t, amount in days.get(customer_id, []) if t <= at]
        distinct: list[datetime] = []
        for t, _ in seen:
            if not distinct or t.date() != distinct[-1].date():
                distinct.append(t)
        if not distinct:
            return None
        mean_spend = sum(amount for _, amount in seen) / len(distinct)
        return RepeatBuying(distinct[0], distinct[-1], len(distinct), mean_spend)

    bundle = ModelBundle()
    corrected, alone = [0.5] * len(tape.labels), [0.5] * len(tape.labels)
    fed = 0
    for index in sorted(range(len(tape.labels)), key=lambda i: tape.labels[i].scored_at):
        label = tape.labels[index]
        while fed < len(purchases) and purchases[fed][0] <= label.scored_at:
            at, customer_id, amount = purchases[fed]
            fed += 1
            days.setdefault(customer_id, []).append((at, amount))
            stats = stats_at(customer_id, at)
            assert stats is not None
            bundle.observe_buying(BuyingObservation(customer_id, stats, at))
        stats = stats_at(label.customer_id, label.scored_at)
        ours = None if stats is None else bundle.forecasts(stats, label.scored_at, (window,))
        theirs = (
            None
            if stats is None
            else bundle.repeat_buying.forecasts(stats, label.scored_at, (window,))
        )
        if ours is not None and theirs is not None:
            corrected[index] = 1.0 - ours[0].probability_of_purchase
            alone[index] = 1.0 - theirs[0].probability_of_purchase
    churned = [label.churned for label in tape.labels]
    return roc_auc(churned, alone), roc_auc(churned, corrected)


def _model(factory: Callable[[], Any]) -> ChurnModel:
    model = ChurnModel()
    model.pipeline = factory()
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 13])
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument(
        "--gap-screen", action="store_true", help="also screen gap statistics (progressive AUC)"
    )
    parser.add_argument(
        "--repeat-buying-screen",
        action="store_true",
        help="also screen BG/NBD and the purchase-horizon model as churn scores",
    )
    args = parser.parse_args(argv)
    config = Settings().scoring
    candidates = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    print(
        f"{'candidate':<32}{'seed':>5}{'prog AUC':>9}{'oracle':>8}{'ratio':>7}{'last AUC':>9}"
        f"{'logloss':>9}{'Brier':>7}{'play s':>8}"
    )
    for seed in args.seeds:
        simulation = simulate(customers=args.customers, days=args.days, seed=seed)
        started = time.perf_counter()
        tape = record_tape(simulation, config)
        replay_s = time.perf_counter() - started
        for name, factory in candidates.items():
            started = time.perf_counter()
            played = play(tape, _model(factory))
            seconds = time.perf_counter() - started
            f = churn_figures(simulation, tape, played, config.churn_window)
            print(
                f"{name:<32}{seed:>5}{f.progressive_auc:>9.3f}{f.oracle_auc:>8.3f}"
                f"{f.ratio:>7.3f}{f.last_auc:>9.3f}{f.log_loss:>9.3f}{f.brier:>7.3f}"
                f"{seconds:>8.1f}",
                flush=True,
            )
        print(
            f"  seed {seed}: {f.labels:,} labels ({f.churned:,} churned), replay {replay_s:.0f} s;"
            " simpler truth scores: "
            + ", ".join(f"{k} {v:.3f}" for k, v in f.simple_truth_aucs.items()),
            flush=True,
        )
        if args.gap_screen:
            aucs, rows = screen_gap_statistics(simulation, tape)
            for name, auc in aucs.items():
                print(f"  seed {seed}: {name}: progressive AUC {auc:.3f}", flush=True)
            print(f"  seed {seed}: {batch_check(rows, oracle_scores(simulation, tape))}")
        if args.repeat_buying_screen:
            alone, corrected = screen_repeat_buying(simulation, tape)
            print(
                f"  seed {seed}: P(no purchase within W) as churn score, progressive AUC: "
                f"BG/NBD {alone:.3f}, BG/NBD + purchase-horizon model {corrected:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
