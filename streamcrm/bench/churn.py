"""The churn model against its ceiling: one simulated history through the pure scoring core.

:func:`record_tape` replays a seeded simulation in event time through ``score_event`` and
``sweep_customer`` with in-memory state (no broker, no Redis), as a worker would: the
watermark trails the newest event by the allowed lateness, quiet customers are swept as it
passes their due time (label ledger, heartbeats, as-of re-scores), and the run ends with a
sweep to the last event. Every settled label is recorded with its customer and snapshot time.
:func:`play` then asks a churn model for its progressive prediction of each label (made just
before it is learned), and :func:`churn_figures` scores those and the oracle's
(:mod:`streamcrm.sim.oracle`) on exactly the same labels:

- ``progressive_auc``: exact ROC AUC of the model's progressive predictions,
- ``oracle_auc``: the same for :func:`~streamcrm.sim.oracle.oracle_churn_probability`,
- ``last_auc``: ROC AUC of each customer's last published churn probability (re-scores
  included) against the simulator's truth (``churns``), as the demo's summary prints it.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from streamcrm.core.events import PurchaseEvent
from streamcrm.core.labels import LabelledExample
from streamcrm.core.records import CustomerScore
from streamcrm.core.scoring import ScoringConfig, score_event, sweep_customer
from streamcrm.core.state import CustomerState
from streamcrm.models import BuyingObservation, ModelBundle
from streamcrm.models.churn import ChurnModel
from streamcrm.models.metrics import roc_auc
from streamcrm.sim.oracle import SIMPLE_TRUTH_SCORES, oracle_churn_probability
from streamcrm.sim.simulator import Simulation


@dataclass(frozen=True)
class SettledLabel:
    """One label the churn model learned: whose, the snapshot's time and features, the outcome."""

    customer_id: str
    scored_at: datetime
    churned: bool
    features: Mapping[str, float]


@dataclass
class ChurnTape:
    """What the churn model was asked during a replay, in order: labels to learn (predicting
    each first) and predictions to make, with each customer's last published score.

    The churn probability feeds no state, snapshot or label, so every candidate model sees the
    same questions: the replay is done once, then played to each candidate (:func:`play`)."""

    labels: list[SettledLabel] = field(default_factory=list)
    predictions: list[Mapping[str, float]] = field(default_factory=list)
    steps: list[tuple[bool, int]] = field(default_factory=list)
    """(True, label index) to learn, (False, prediction index) to predict, in order."""
    last_scores: dict[str, int | None] = field(default_factory=dict)
    """Each customer's last published score: its prediction index (None: cancelled, P = 1)."""


class _TapeChurn:
    """Stands in for the churn model during the recording: notes each question, answers ½."""

    def __init__(self, tape: ChurnTape) -> None:
        self.tape = tape
        self.n_learned = 0

    def predict_proba_one(self, features: Mapping[str, float]) -> float:
        self.tape.steps.append((False, len(self.tape.predictions)))
        self.tape.predictions.append(dict(features))
        return 0.5

    def explain_one(self, features: Mapping[str, float], top: int = 3) -> list[tuple[str, float]]:
        return []

    def predict_and_explain(
        self, features: Mapping[str, float], top: int = 3
    ) -> tuple[float, list[tuple[str, float]]]:
        return self.predict_proba_one(features), self.explain_one(features, top)


class _TapeLearner:
    """Notes each label where it is learned; the segments, population and CLV models learn
    as usual."""

    def __init__(self, models: ModelBundle, tape: ChurnTape) -> None:
        self.models = models
        self.tape = tape
        self.pending: list[tuple[Mapping[str, float], bool]] = []

    def learn_labelled(self, features: Mapping[str, float], churned: bool) -> None:
        # Learned where it comes (before the step's own prediction); filed under its customer
        # and snapshot time once the step returns them (:meth:`settle`).
        self.tape.steps.append((True, len(self.tape.labels) + len(self.pending)))
        self.pending.append((dict(features), churned))

    def learn_scored(
        self,
        features: Mapping[str, float],
        satisfaction: float | None,
        buying: BuyingObservation | None = None,
    ) -> None:
        self.models.learn_scored(features, satisfaction, buying)

    def settle(self, customer_id: str, settled: tuple[LabelledExample, ...]) -> None:
        """File the labels of one step under their customer and snapshot time."""
        for (features, churned), example in zip(self.pending, settled, strict=True):
            assert example.scored_at is not None
            self.tape.labels.append(SettledLabel(customer_id, example.scored_at, churned, features))
        self.pending = []


def record_tape(simulation: Simulation, config: ScoringConfig) -> ChurnTape:
    """Replay ``simulation`` through the scoring core (module docstring), noting what the
    churn model is asked."""
    tape = ChurnTape()
    models = ModelBundle(churn=_TapeChurn(tape))  # type: ignore[arg-type]
    learner = _TapeLearner(models, tape)
    states: dict[str, CustomerState] = {}
    due: list[tuple[datetime, str]] = []

    def note_last(customer_id: str, score: CustomerScore, predicted_before: int) -> None:
        made = len(tape.predictions) > predicted_before
        tape.last_scores[customer_id] = (
            None if score.cancelled or not made else len(tape.predictions) - 1
        )

    def sweep_until(watermark: datetime) -> None:
        while due and due[0][0] <= watermark:
            _, customer_id = heapq.heappop(due)
            before = len(tape.predictions)
            swept = sweep_customer(states[customer_id], watermark, models, config, learner)
            learner.settle(customer_id, swept.labelled)
            states[customer_id] = swept.state
            if swept.score is not None:
                note_last(customer_id, swept.score, before)
            if swept.due_at is not None:
                heapq.heappush(due, (swept.due_at, customer_id))

    lateness = config.rules.allowed_lateness
    newest: datetime | None = None
    for event in simulation.events:
        newest = event.occurred_at if newest is None else max(newest, event.occurred_at)
        sweep_until(newest - lateness)
        before = len(tape.predictions)
        scored = score_event(
            states.get(event.customer_id), event, models, config, newest - lateness, learner
        )
        learner.settle(event.customer_id, scored.labelled)
        states[event.customer_id] = scored.state
        if scored.outputs:
            note_last(event.customer_id, scored.outputs[-1][0], before)
        if scored.due_at is not None:
            heapq.heappush(due, (scored.due_at, event.customer_id))
    if newest is not None:
        sweep_until(newest)
    return tape


@dataclass(frozen=True)
class ChurnFigures:
    """How one churn model did on one simulated history, against the oracle."""

    labels: int
    churned: int
    progressive_auc: float
    oracle_auc: float
    last_auc: float
    log_loss: float
    brier: float
    simple_truth_aucs: dict[str, float] = field(default_factory=dict)
    """Progressive ROC AUC of each of :data:`~streamcrm.sim.oracle.SIMPLE_TRUTH_SCORES`."""

    @property
    def ratio(self) -> float:
        """progressive_auc / oracle_auc."""
        return self.progressive_auc / self.oracle_auc


@dataclass(frozen=True)
class Played:
    """A candidate's answers to a tape: its progressive prediction of each label, in order,
    and each customer's last published churn probability."""

    label_probabilities: list[float]
    last_probabilities: dict[str, float]


def play(tape: ChurnTape, model: ChurnModel) -> Played:
    """Ask ``model`` the tape's questions in order: each label predicted, then learned; the
    predictions that became a customer's last published score answered as they came."""
    wanted = {index for index in tape.last_scores.values() if index is not None}
    answers: dict[int, float] = {}
    learned: list[float] = []
    for is_label, index in tape.steps:
        if is_label:
            label = tape.labels[index]
            learned.append(model.predict_proba_one(label.features))
            model.learn_one(label.features, label.churned)
        elif index in wanted:
            answers[index] = model.predict_proba_one(tape.predictions[index])
    last = {
        customer_id: 1.0 if index is None else answers[index]
        for customer_id, index in tape.last_scores.items()
    }
    return Played(learned, last)


def churn_figures(
    simulation: Simulation, tape: ChurnTape, played: Played, window: timedelta
) -> ChurnFigures:
    """The figures of a played tape (module docstring)."""
    purchases: dict[str, list[datetime]] = {}
    for event in simulation.events:
        if isinstance(event, PurchaseEvent):
            purchases.setdefault(event.customer_id, []).append(event.occurred_at)

    def last_purchase(customer_id: str, at: datetime) -> datetime | None:
        times = purchases.get(customer_id, [])
        index = bisect_right(times, at)
        return times[index - 1] if index else None

    labels = tape.labels
    churned = [label.churned for label in labels]
    model = played.label_probabilities
    context = [
        (simulation.truth[label.customer_id], last_purchase(label.customer_id, label.scored_at))
        for label in labels
    ]
    oracle = [
        oracle_churn_probability(truth, last, label.scored_at, window)
        for (truth, last), label in zip(context, labels, strict=True)
    ]
    simple = {
        name: roc_auc(
            churned,
            [
                score(truth, last, label.scored_at, window)
                for (truth, last), label in zip(context, labels, strict=True)
            ],
        )
        for name, score in SIMPLE_TRUTH_SCORES.items()
    }
    last = [
        (probability, simulation.truth[customer_id].churns)
        for customer_id, probability in played.last_probabilities.items()
    ]
    eps = 1e-15
    return ChurnFigures(
        labels=len(labels),
        churned=sum(churned),
        progressive_auc=roc_auc(churned, model),
        oracle_auc=roc_auc(churned, oracle),
        last_auc=roc_auc([y for _, y in last], [p for p, _ in last]),
        log_loss=_mean(
            [
                -math.log(min(max(p if y else 1 - p, eps), 1.0))
                for p, y in zip(model, churned, strict=True)
            ]
        ),
        brier=_mean([(p - y) ** 2 for p, y in zip(model, churned, strict=True)]),
        simple_truth_aucs=simple,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def oracle_auc(simulation: Simulation, config: ScoringConfig) -> tuple[float, int]:
    """The oracle's progressive ROC AUC on the labels of an in-process replay of
    ``simulation``, and how many labels that is (what the demo sets the live model against)."""
    tape = record_tape(simulation, config)
    figures = churn_figures(
        simulation, tape, Played([0.5] * len(tape.labels), {}), config.churn_window
    )
    return figures.oracle_auc, figures.labels
