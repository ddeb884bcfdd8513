"""Offline evaluation: replay a purchase history to a cut-off, forecast, compare with what came.

``evaluate(purchases, cutoff, holdout)`` replays the purchases before ``cutoff`` in event
time through the same pure scoring core a worker runs (state transitions, the prediction
ledger with its delayed labels and heartbeats, the online churn model, the repeat-buying
models refitted every week of event time), then forecasts each customer at the cut-off:

- **streaming**: P(any purchase in the holdout) = 1 − the churn model asked about a
  holdout-long horizon (its features are measured in horizons, see
  :func:`streamcrm.features.churn_features`); expected purchases = that probability × the
  BG/NBD purchases expected if the customer buys at all, E[X] / P(X > 0); CLV = expected
  purchases × the Gamma-Gamma expected spend per purchase;
- **BG/NBD** fitted by ``lifetimes`` on the same calibration summary (the published
  reference, Fader, Hardie & Lee 2005), with Gamma-Gamma from ``lifetimes`` for CLV.

Both are scored against the holdout: ROC AUC and Brier score of "any purchase", RMSE and
Pearson r of per-customer purchase counts, total predicted vs actual purchases, RMSE of
holdout spend against CLV. A transaction is one customer-day, as in the paper.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from streamcrm.events import Event, PurchaseEvent
from streamcrm.features import churn_features, repeat_buying
from streamcrm.models import ModelBundle
from streamcrm.models.repeat_buying import (
    SECONDS_PER_WEEK,
    RepeatBuying,
    probability_of_purchase,
)
from streamcrm.scoring import ScoringConfig, score_event, sweep_customer
from streamcrm.state import CustomerState

EVALUATION_CONFIG = ScoringConfig(heartbeat_interval=timedelta(days=7), max_pending_snapshots=20)
"""The live defaults (churn window 90 days), with weekly heartbeats: a purchase history has no
other events, so quiet customers are snapshotted often enough to teach the model silence."""


@dataclass(frozen=True)
class Outcome:
    """What a customer actually did in the holdout: purchase days and spend."""

    purchases: int = 0
    spend: float = 0.0


@dataclass(frozen=True)
class Forecast:
    """One model's forecast for one customer over the holdout."""

    probability_of_purchase: float
    expected_purchases: float
    clv: float


@dataclass(frozen=True)
class CustomerForecasts:
    """A calibration customer's statistics at the cut-off, both forecasts and the outcome."""

    customer_id: str
    stats: RepeatBuying
    streaming: Forecast
    bgnbd: Forecast
    outcome: Outcome


@dataclass(frozen=True)
class Figures:
    """How well one model's forecasts matched the holdout."""

    roc_auc: float
    roc_auc_by_expected_purchases: float
    brier: float
    purchases_rmse: float
    purchases_pearson_r: float
    predicted_purchases: float
    actual_purchases: int
    spend_rmse: float

    @property
    def total_error(self) -> float:
        """(predicted − actual) / actual total holdout purchases."""
        return self.predicted_purchases / self.actual_purchases - 1.0


@dataclass(frozen=True)
class Target:
    """A figure the streaming model must reach, and how it compares."""

    name: str
    limit: float
    higher_is_better: bool = True
    absolute: bool = False

    def met(self, value: float) -> bool:
        value = abs(value) if self.absolute else value
        return value >= self.limit if self.higher_is_better else value <= self.limit


TARGETS: dict[str, Target] = {
    "roc_auc": Target("ROC AUC, any purchase", 0.78),
    "brier": Target("Brier score", 0.16, higher_is_better=False),
    "purchases_rmse": Target("RMSE of purchases", 1.60, higher_is_better=False),
    "purchases_pearson_r": Target("Pearson r of purchases", 0.64),
    "total_error": Target("total purchases, error", 0.08, higher_is_better=False, absolute=True),
}
"""Issue 4's targets for the CDNOW sample (BG/NBD: 0.757, 0.161, 1.61, 0.63, −12%)."""


@dataclass
class EvaluationReport:
    """Both models' forecasts and figures for one calibration / holdout split."""

    cutoff: datetime
    holdout: timedelta
    customers: list[CustomerForecasts]
    streaming: Figures
    bgnbd: Figures
    calibration_events: int
    labelled_examples: int
    model_version: str
    notes: list[str] = field(default_factory=list)


def read_cdnow(path: Path) -> Iterator[PurchaseEvent]:
    """Purchases from a CDNOW file (``lifetimes/datasets/CDNOW_*.txt``).

    Each line holds: customer id, (in the sample files) a sample id, date ``YYYYMMDD``, CDs
    bought, dollars; a header line is skipped. One line becomes one purchase at midnight UTC.
    """
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or not fields[0].isdigit():
                continue
            if len(fields) not in (4, 5):
                raise ValueError(f"{path}:{number}: expected 4 or 5 fields, got {len(fields)}")
            customer, day, cds, dollars = fields[0], *fields[-3:]
            yield PurchaseEvent(
                event_id=f"cdnow-{number}",
                customer_id=f"cdnow-{customer}",
                order_id=f"cdnow-{number}",
                occurred_at=datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC),
                amount=float(dollars),
                items=max(int(cds), 1),
                channel="web",
            )


def cdnow_sample_path(name: str = "CDNOW_sample.txt") -> Path:
    """Where the ``lifetimes`` package keeps a CDNOW file."""
    import lifetimes  # the evaluation extra: only needed to compare with BG/NBD

    return Path(lifetimes.__file__).parent / "datasets" / name


def read_evaluation_history(path: Path) -> list[Event]:
    """Events of a history to evaluate on: a CDNOW file (``.txt``: see :func:`read_cdnow`) or
    a streamcrm history (JSON lines or CSV, as ``streamcrm replay`` reads). A name that is
    not a file but names one of ``lifetimes``' CDNOW files (``CDNOW_sample.txt``,
    ``CDNOW_master.txt``) reads that one.

    Raises ValueError when the file has lines that are not valid events.
    """
    if not path.exists() and path.name.startswith("CDNOW_") and path.parent == Path("."):
        path = cdnow_sample_path(path.name)
    if path.suffix.lower() == ".txt":
        return list(read_cdnow(path))
    from streamcrm.replay import read_history

    history = read_history(path)
    if history.rejections:
        first, count = history.rejections[0], len(history.rejections)
        raise ValueError(
            f"{path.name}: {count} line{'s are' if count > 1 else ' is'} not a valid event"
            f" (line {first.line}: {first.reason})"
        )
    return list(history.events)


def default_cutoff(events: Sequence[Event], calibration: timedelta) -> datetime:
    """The first event's UTC day plus the calibration period.

    >>> from streamcrm.events import PurchaseEvent
    >>> first = PurchaseEvent(event_id="e", customer_id="c", order_id="o", amount=1.0, items=1,
    ...     channel="web", occurred_at=datetime(1997, 1, 1, 15, tzinfo=UTC))
    >>> default_cutoff([first], timedelta(weeks=39))
    datetime.datetime(1997, 10, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    first = min(event.occurred_at for event in events)
    return datetime.combine(first.date(), datetime.min.time(), UTC) + calibration


def replay_calibration(
    events: Sequence[Event], cutoff: datetime, config: ScoringConfig
) -> tuple[dict[str, CustomerState], ModelBundle, int]:
    """Stream the events before ``cutoff`` through the scoring core, in event time.

    The watermark follows the newest event; every customer whose ledger falls due (a label
    window closing, a heartbeat owed) is swept as it passes, as the worker's sweep timer does.
    Returns the states, the models as they stand at the cut-off, and the events replayed.
    """
    models = ModelBundle()
    states: dict[str, CustomerState] = {}
    due: list[tuple[datetime, str]] = []
    replayed = 0

    def sweep_until(watermark: datetime) -> None:
        while due and due[0][0] <= watermark:
            at, customer_id = heapq.heappop(due)
            state = states[customer_id]
            swept = sweep_customer(state, watermark, models, config)
            states[customer_id] = swept.state
            if swept.due_at is not None:
                heapq.heappush(due, (swept.due_at, customer_id))

    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        if event.occurred_at >= cutoff:
            break
        sweep_until(event.occurred_at)
        scored = score_event(
            states.get(event.customer_id), event, models, config, watermark=event.occurred_at
        )
        states[event.customer_id] = scored.state
        replayed += 1
        if scored.due_at is not None:
            heapq.heappush(due, (scored.due_at, event.customer_id))
    sweep_until(cutoff)
    models.repeat_buying.refit(cutoff)
    return states, models, replayed


def holdout_outcomes(
    events: Iterable[Event], cutoff: datetime, holdout: timedelta
) -> dict[str, Outcome]:
    """Purchase days and spend per customer in ``[cutoff, cutoff + holdout)`` (amounts as
    given: a history in several currencies should be converted first)."""
    days: dict[str, set[date]] = {}
    spend: dict[str, float] = {}
    for event in events:
        if isinstance(event, PurchaseEvent) and cutoff <= event.occurred_at < cutoff + holdout:
            days.setdefault(event.customer_id, set()).add(event.occurred_at.date())
            spend[event.customer_id] = spend.get(event.customer_id, 0.0) + event.amount
    return {cid: Outcome(len(d), spend[cid]) for cid, d in days.items()}


def streaming_forecast(
    state: CustomerState, models: ModelBundle, cutoff: datetime, holdout: timedelta
) -> Forecast:
    """The streaming models' forecast of one customer over the holdout (module docstring)."""
    stats = repeat_buying(state)
    assert stats is not None, "only customers who purchased are forecast"
    buys = 1.0 - models.churn.predict_proba_one(churn_features(state, cutoff, holdout))
    counts = models.repeat_buying.forecast(stats, cutoff, holdout)
    assert counts is not None, "the repeat-buying models are fitted at the cut-off"
    per_buyer = (
        counts.expected_purchases / counts.probability_of_purchase
        if counts.probability_of_purchase > 1e-12
        else 1.0
    )
    expected = buys * per_buyer
    return Forecast(buys, expected, expected * counts.expected_spend)


REFERENCE_PENALIZERS = (0.0, 0.001, 0.01)
"""L2 penalties tried in turn when ``lifetimes``' maximum likelihood does not converge (small
or synthetic histories): unpenalised first, as the published reference is."""


def bgnbd_forecasts(
    stats: Sequence[RepeatBuying],
    cutoff: datetime,
    holdout: timedelta,
    notes: list[str] | None = None,
) -> list[Forecast]:
    """The reference: BG/NBD and Gamma-Gamma fitted by ``lifetimes`` on the calibration data.

    When a fit does not converge it is retried with the next of ``REFERENCE_PENALIZERS``, and
    the penalty used is added to ``notes``.
    """
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    x, t_x, age = np.array([s.summary(cutoff) for s in stats], dtype=np.float64).T
    weeks = holdout.total_seconds() / SECONDS_PER_WEEK
    counts = _fit_converged(BetaGeoFitter, "BG/NBD", notes, x, t_x, age)
    expected = np.asarray(
        counts.conditional_expected_number_of_purchases_up_to_time(weeks, x, t_x, age)
    )
    from streamcrm.models.repeat_buying import BgNbdParams

    params = BgNbdParams(*(float(counts.params_[k]) for k in ("r", "alpha", "a", "b")))
    buys = probability_of_purchase(params, x, t_x, age, weeks)
    transactions = np.array([s.transactions for s in stats], dtype=np.float64)
    mean_spend = np.array([s.mean_spend for s in stats], dtype=np.float64)
    paying = mean_spend > 0
    spend_model = _fit_converged(
        GammaGammaFitter, "Gamma-Gamma", notes, transactions[paying], mean_spend[paying]
    )
    spend = np.asarray(
        spend_model.conditional_expected_average_profit(transactions, np.maximum(mean_spend, 1e-9))
    )
    return [
        Forecast(float(p), float(e), float(e * m))
        for p, e, m in zip(buys, expected, spend, strict=True)
    ]


def _fit_converged(fitter: type, name: str, notes: list[str] | None, *data: np.ndarray) -> Any:
    from lifetimes.utils import ConvergenceError

    for penalizer in REFERENCE_PENALIZERS:
        try:
            fitted = fitter(penalizer_coef=penalizer).fit(*data)
        except ConvergenceError:
            continue
        if penalizer and notes is not None:
            notes.append(
                f"lifetimes' {name} fit did not converge unpenalised; fitted with penalizer "
                f"{penalizer:g}"
            )
        return fitted
    raise RuntimeError(f"lifetimes' {name} fit did not converge, even penalised")


def figures(forecasts: Sequence[Forecast], outcomes: Sequence[Outcome]) -> Figures:
    """Score forecasts against outcomes (see :class:`Figures`)."""
    bought = np.array([o.purchases > 0 for o in outcomes], dtype=np.float64)
    purchases = np.array([o.purchases for o in outcomes], dtype=np.float64)
    spend = np.array([o.spend for o in outcomes], dtype=np.float64)
    p = np.array([f.probability_of_purchase for f in forecasts])
    expected = np.array([f.expected_purchases for f in forecasts])
    clv = np.array([f.clv for f in forecasts])
    return Figures(
        roc_auc=roc_auc(bought, p),
        roc_auc_by_expected_purchases=roc_auc(bought, expected),
        brier=float(np.mean((p - bought) ** 2)),
        purchases_rmse=float(np.sqrt(np.mean((expected - purchases) ** 2))),
        purchases_pearson_r=float(np.corrcoef(expected, purchases)[0, 1]),
        predicted_purchases=float(expected.sum()),
        actual_purchases=int(purchases.sum()),
        spend_rmse=float(np.sqrt(np.mean((clv - spend) ** 2))),
    )


def roc_auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Exact ROC AUC: the chance a random positive outranks a random negative (ties: ½).

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1], [0.5, 0.5])
    0.5
    """
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def evaluate(
    events: Sequence[Event],
    cutoff: datetime,
    holdout: timedelta,
    config: ScoringConfig = EVALUATION_CONFIG,
) -> EvaluationReport:
    """Replay to ``cutoff``, forecast every customer who purchased before it, compare."""
    states, models, replayed = replay_calibration(events, cutoff, config)
    outcomes = holdout_outcomes(events, cutoff, holdout)
    customers = sorted(
        (state for state in states.values() if repeat_buying(state) is not None),
        key=lambda s: s.customer_id,
    )
    stats = [repeat_buying(state) for state in customers]
    notes: list[str] = []
    reference = bgnbd_forecasts([s for s in stats if s is not None], cutoff, holdout, notes)
    rows = [
        CustomerForecasts(
            customer_id=state.customer_id,
            stats=customer_stats,
            streaming=streaming_forecast(state, models, cutoff, holdout),
            bgnbd=baseline,
            outcome=outcomes.get(state.customer_id, Outcome()),
        )
        for state, customer_stats, baseline in zip(customers, stats, reference, strict=True)
        if customer_stats is not None
    ]
    newcomers = sum(1 for cid in outcomes if cid not in states)
    if newcomers:
        notes.append(f"{newcomers} customers first seen in the holdout are not forecast")
    return EvaluationReport(
        cutoff=cutoff,
        holdout=holdout,
        customers=rows,
        streaming=figures([r.streaming for r in rows], [r.outcome for r in rows]),
        bgnbd=figures([r.bgnbd for r in rows], [r.outcome for r in rows]),
        calibration_events=replayed,
        labelled_examples=models.churn.n_learned,
        model_version=models.version,
        notes=notes,
    )


def format_report(report: EvaluationReport) -> str:
    """Both models side by side, with issue 4's targets for the streaming model."""
    s, b = report.streaming, report.bgnbd
    rows = [
        ("ROC AUC, any purchase", s.roc_auc, b.roc_auc, TARGETS["roc_auc"], "{:.3f}"),
        (
            "ROC AUC, by expected purchases",
            s.roc_auc_by_expected_purchases,
            b.roc_auc_by_expected_purchases,
            None,
            "{:.3f}",
        ),
        ("Brier score, any purchase", s.brier, b.brier, TARGETS["brier"], "{:.4f}"),
        (
            "RMSE, purchases per customer",
            s.purchases_rmse,
            b.purchases_rmse,
            TARGETS["purchases_rmse"],
            "{:.3f}",
        ),
        (
            "Pearson r, purchases",
            s.purchases_pearson_r,
            b.purchases_pearson_r,
            TARGETS["purchases_pearson_r"],
            "{:.3f}",
        ),
        ("total purchases, error", s.total_error, b.total_error, TARGETS["total_error"], "{:+.1%}"),
        ("RMSE, holdout spend vs CLV", s.spend_rmse, b.spend_rmse, None, "{:.2f}"),
    ]
    weeks = report.holdout.total_seconds() / SECONDS_PER_WEEK
    lines = [
        f"cut-off {report.cutoff:%Y-%m-%d}, holdout {weeks:g} weeks; "
        f"{len(report.customers)} customers, {report.calibration_events} calibration events, "
        f"{report.labelled_examples} labelled snapshots learned (models {report.model_version})",
        f"actual holdout purchases: {s.actual_purchases} "
        f"(streaming predicts {s.predicted_purchases:.0f}, BG/NBD {b.predicted_purchases:.0f})",
        "",
        f"{'figure':<32}{'streaming':>11}{'BG/NBD':>11}   target",
    ]
    for name, ours, theirs, target, fmt in rows:
        verdict = ""
        if target is not None:
            bound = ("≥ " if target.higher_is_better else "≤ ") + (
                f"±{target.limit:.0%}" if target.absolute else f"{target.limit:g}"
            )
            verdict = f"{bound:<8} {'met' if target.met(ours) else 'NOT met'}"
        lines.append(f"{name:<32}{fmt.format(ours):>11}{fmt.format(theirs):>11}   {verdict}")
    lines += report.notes
    return "\n".join(lines)


def write_predictions(path: Path, report: EvaluationReport) -> int:
    """One CSV row per customer: statistics at the cut-off, both forecasts, the outcome."""
    import csv

    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "customer_id",
                "repeat_transactions",
                "recency_weeks",
                "age_weeks",
                "mean_spend",
                "streaming_p_purchase",
                "streaming_expected_purchases",
                "streaming_clv",
                "bgnbd_p_purchase",
                "bgnbd_expected_purchases",
                "bgnbd_clv",
                "actual_purchases",
                "actual_spend",
            ]
        )
        for row in report.customers:
            x, t_x, age = row.stats.summary(report.cutoff)
            writer.writerow(
                [
                    row.customer_id,
                    int(x),
                    f"{t_x:.4f}",
                    f"{age:.4f}",
                    f"{row.stats.mean_spend:.4f}",
                    f"{row.streaming.probability_of_purchase:.6f}",
                    f"{row.streaming.expected_purchases:.6f}",
                    f"{row.streaming.clv:.4f}",
                    f"{row.bgnbd.probability_of_purchase:.6f}",
                    f"{row.bgnbd.expected_purchases:.6f}",
                    f"{row.bgnbd.clv:.4f}",
                    row.outcome.purchases,
                    f"{row.outcome.spend:.2f}",
                ]
            )
    return len(report.customers)
