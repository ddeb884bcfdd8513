"""The churn ceiling: the oracle, the replay tape, and the demo line that compares them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.bench.churn import churn_figures, play, record_tape
from streamcrm.cli.demo import ceiling_line
from streamcrm.core.scoring import ScoringConfig
from streamcrm.models.churn import ChurnModel
from streamcrm.sim.oracle import oracle_churn_probability
from streamcrm.sim.simulator import CustomerTruth, simulate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = timedelta(days=90)


def truth(churns: bool, gap: float = 20.0, until_day: int = 365) -> CustomerTruth:
    return CustomerTruth(
        customer_id="c",
        persona="regular",
        churns=churns,
        drift_starts_at=T0 + timedelta(days=100) if churns else None,
        churned_at=T0 + timedelta(days=until_day) if churns else None,
        cancelled=False,
        days_between_purchases=gap,
        first_purchase_at=T0 + timedelta(days=10),
        active_until=T0 + timedelta(days=until_day),
    )


def test_oracle_of_a_steady_customer_is_the_chance_of_a_whole_window_without_an_order() -> None:
    at = T0 + timedelta(days=50)
    assert oracle_churn_probability(truth(False), T0 + timedelta(days=40), at, W) == pytest.approx(
        2.718281828 ** (-90 / 20)
    )


def test_oracle_is_certain_once_activity_has_stopped() -> None:
    leaver = truth(True, until_day=200)
    assert oracle_churn_probability(leaver, T0 + timedelta(days=150), T0 + timedelta(days=201), W)
    assert oracle_churn_probability(
        leaver, T0 + timedelta(days=150), T0 + timedelta(days=201), W
    ) == pytest.approx(1.0)


def test_oracle_knows_when_the_first_order_comes() -> None:
    before_first = T0 + timedelta(days=1)
    assert oracle_churn_probability(truth(False), None, before_first, W) == 0.0
    assert oracle_churn_probability(truth(False), None, before_first, timedelta(days=5)) == 1.0


def test_a_drifting_customer_is_riskier_than_before_the_drift() -> None:
    leaver = truth(True, until_day=300)
    before = oracle_churn_probability(leaver, T0 + timedelta(days=90), T0 + timedelta(days=95), W)
    during = oracle_churn_probability(leaver, T0 + timedelta(days=250), T0 + timedelta(days=255), W)
    assert before < during


@pytest.fixture(scope="module")
def replayed():
    simulation = simulate(customers=40, days=200, seed=3)
    config = ScoringConfig()
    return simulation, config, record_tape(simulation, config)


def test_certain_oracle_scores_match_their_labels(replayed) -> None:
    simulation, config, tape = replayed
    assert tape.labels
    for label in tape.labels:
        last = max(
            (
                e.occurred_at
                for e in simulation.events
                if e.customer_id == label.customer_id
                and e.type == "purchase"
                and e.occurred_at <= label.scored_at
            ),
            default=None,
        )
        p = oracle_churn_probability(
            simulation.truth[label.customer_id], last, label.scored_at, config.churn_window
        )
        if p in (0.0, 1.0):
            assert label.churned == (p == 1.0)


def test_every_candidate_answers_every_label_and_every_customers_last_score(replayed) -> None:
    simulation, config, tape = replayed
    model = ChurnModel()
    played = play(tape, model)
    assert len(played.label_probabilities) == len(tape.labels) == model.n_learned
    assert set(played.last_probabilities) == set(simulation.truth)
    figures = churn_figures(simulation, tape, played, config.churn_window)
    assert figures.oracle_auc >= max(figures.simple_truth_aucs.values())
    assert figures.ratio == pytest.approx(figures.progressive_auc / figures.oracle_auc)


def test_demo_sets_the_model_against_the_oracle() -> None:
    line = ceiling_line(0.75, 1000, 0.8, 990)
    assert "progressive ROC AUC 0.750" in line
    assert "oracle 0.800" in line
    assert "ratio 0.94" in line
    assert "ratio n/a" in ceiling_line(None, 0, 0.8, 990)
