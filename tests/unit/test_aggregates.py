"""Population aggregates over customers' latest scores."""

from __future__ import annotations

import pytest

from streamcrm.core.aggregates import format_summary, summarise
from streamcrm.sim.simulator import simulate
from tests.unit.test_replay_determinism import final_scores


def test_an_empty_population_is_summarised_as_such() -> None:
    assert summarise([]).customers == 0
    assert format_summary(summarise([])) == "no customers scored yet"


def test_the_summary_counts_segments_cancellations_and_distributions() -> None:
    latest = list(final_scores(list(simulate(customers=40, days=200, seed=3).events)).values())

    summary = summarise(latest)

    assert summary.customers == 40
    assert summary.cancelled == sum(s.cancelled for s in latest)
    assert sum(summary.segment_shares.values()) == pytest.approx(1.0)
    monetary = sorted(s.monetary for s in latest)
    assert summary.distributions["monetary"].median == pytest.approx(
        (monetary[19] + monetary[20]) / 2
    )
    rated = [s.satisfaction_mean for s in latest if s.satisfaction_mean is not None]
    assert summary.distributions["satisfaction_mean"].count == len(rated)
    assert summary.distributions["satisfaction_mean"].mean == pytest.approx(sum(rated) / len(rated))
    assert "customers 40" in format_summary(summary)
