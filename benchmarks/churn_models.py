"""Which River pipeline for the churn model? Measured, not chosen by habit.

Run ``python benchmarks/churn_models.py [--customers 600 --days 540 --seeds 7 11]``. Each
candidate replaces the churn model's pipeline; a seeded simulated history is replayed through
the real scoring pipeline in one process (in-memory store, label sweeps every 200 events),
and the model's progressive ROC AUC, log loss and Brier score on its own delayed labels are
printed with the replay time, the per-example learn/predict cost and the checkpoint size.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

from river import forest, linear_model, optim, preprocessing, tree

from streamcrm.models.churn import ChurnModel
from streamcrm.pipeline import ScoringPipeline
from streamcrm.scoring import ScoringConfig
from streamcrm.simulator import simulate
from streamcrm.store import InMemoryStateStore

CANDIDATES: dict[str, Callable[[], Any]] = {
    "scaled LR, SGD 0.05": lambda: (
        preprocessing.StandardScaler()
        | linear_model.LogisticRegression(optimizer=optim.SGD(0.05), l2=1e-4)
    ),
    "scaled LR, SGD 0.01": lambda: (
        preprocessing.StandardScaler()
        | linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4)
    ),
    "scaled LR, Adam 0.01": lambda: (
        preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.Adam(0.01))
    ),
    "Hoeffding adaptive tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=1),
    "adaptive random forest (10)": lambda: forest.ARFClassifier(n_models=10, seed=1),
}


async def replay(factory: Callable[[], Any], customers: int, days: int, seed: int) -> tuple:
    history = simulate(customers=customers, days=days, seed=seed).events
    pipeline = ScoringPipeline(InMemoryStateStore(), ScoringConfig())
    pipeline.models.churn.pipeline = factory()
    started = time.perf_counter()
    for index, event in enumerate(history):
        await pipeline.handle(event.model_dump_json().encode())
        if index % 200 == 0:
            await pipeline.sweep([0])
    churn: ChurnModel = pipeline.models.churn
    return (
        churn.roc_auc.get(),
        churn.log_loss.get(),
        churn.brier.get(),
        churn.n_learned,
        time.perf_counter() - started,
        len(pickle.dumps(churn.pipeline)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    args = parser.parse_args(argv)
    print(
        f"{'candidate':<30}{'seed':>5}{'AUC':>8}{'logloss':>9}{'Brier':>8}{'labels':>8}"
        f"{'replay s':>10}{'model kB':>10}"
    )
    for seed in args.seeds:
        baseline_s = None
        for name, factory in CANDIDATES.items():
            auc, loss, brier, labels, seconds, size = asyncio.run(
                replay(factory, args.customers, args.days, seed)
            )
            baseline_s = baseline_s or seconds
            print(
                f"{name:<30}{seed:>5}{auc:>8.3f}{loss:>9.3f}{brier:>8.3f}{labels:>8}"
                f"{seconds:>10.1f}{size / 1e3:>10.0f}   ({seconds / baseline_s:.2f}x time)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
