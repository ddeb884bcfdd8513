"""`streamcrm evaluate`: the streaming models against BG/NBD on real purchase histories."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from streamcrm.cli.evaluation import (
    Comparison,
    EvaluationReport,
    Forecast,
    Outcome,
    cdnow_sample_path,
    default_cutoff,
    evaluate,
    figures,
    format_report,
    holdout_outcomes,
    paretonbd_posterior_mean,
    paretonbd_probability_of_purchase,
    read_cdnow,
    write_predictions,
)
from streamcrm.cli.main import main
from streamcrm.cli.replay import write_history
from streamcrm.core.events import FeedbackEvent, PurchaseEvent
from streamcrm.sim.simulator import simulate

HOLDOUT = timedelta(weeks=39)


@pytest.fixture(scope="module")
def cdnow_report() -> EvaluationReport:
    events = list(read_cdnow(cdnow_sample_path()))
    return evaluate(events, default_cutoff(events, timedelta(weeks=39)), HOLDOUT)


def test_cdnow_lines_become_purchases_at_midnight_utc(tmp_path: Path) -> None:
    sample = tmp_path / "cdnow.txt"
    sample.write_text(" 00004 0001 19970101  2   29.33\n 00004 0001 19970118  0    0.00\n")
    first, second = read_cdnow(sample)
    assert (first.customer_id, first.occurred_at, first.amount, first.items) == (
        "cdnow-00004",
        datetime(1997, 1, 1, tzinfo=UTC),
        29.33,
        2,
    )
    assert (second.amount, second.items) == (0.0, 1)  # a free item still is a purchase


def test_the_master_files_header_is_skipped_and_its_four_columns_read(tmp_path: Path) -> None:
    master = tmp_path / "master.txt"
    master.write_text(
        " customer_id  date number_of_cds  dollar_value\r\n 00001 19970101  1   11.77\r\n"
    )
    (only,) = read_cdnow(master)
    assert (only.customer_id, only.amount) == ("cdnow-00001", 11.77)


def _purchase(customer: str, day: int, amount: float, n: int) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"e{n}",
        customer_id=customer,
        order_id=f"o{n}",
        amount=amount,
        items=1,
        channel="web",
        occurred_at=datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(days=day),
    )


def test_holdout_outcomes_count_purchase_days_and_sum_spend_within_the_holdout() -> None:
    cutoff = datetime(2026, 1, 11, tzinfo=UTC)
    events = [
        _purchase("a", 5, 10.0, 1),  # calibration: not counted
        _purchase("a", 12, 10.0, 2),
        _purchase("a", 12, 5.0, 3),  # same day: one transaction, both amounts
        _purchase("a", 15, 1.0, 4),
        _purchase("b", 40, 7.0, 5),  # after the holdout
    ]
    outcomes = holdout_outcomes(events, cutoff, timedelta(days=20))
    assert outcomes == {"a": Outcome(purchases=2, spend=16.0)}


def test_figures_are_the_textbook_definitions() -> None:
    forecasts = [Forecast(0.9, 3.0, 30.0), Forecast(0.2, 0.5, 5.0), Forecast(0.4, 1.0, 10.0)]
    outcomes = [Outcome(2, 20.0), Outcome(0, 0.0), Outcome(1, 15.0)]
    got = figures(forecasts, outcomes)
    assert got.roc_auc == 1.0
    assert got.brier == pytest.approx((0.1**2 + 0.2**2 + 0.6**2) / 3)
    assert got.purchases_rmse == pytest.approx(((1.0 + 0.25 + 0.0) / 3) ** 0.5)
    assert (got.predicted_purchases, got.actual_purchases) == (4.5, 3)
    assert got.total_error == pytest.approx(0.5)
    assert got.spend_rmse == pytest.approx(((100 + 25 + 25) / 3) ** 0.5)


def test_bgnbd_on_the_cdnow_sample_reproduces_the_published_reference(cdnow_report) -> None:
    # Issue 4 / Fader, Hardie & Lee (2005) on the 1/10 sample, 39 + 39 weeks.
    bgnbd = cdnow_report.bgnbd
    assert len(cdnow_report.customers) == 2357
    assert bgnbd.actual_purchases == 1882
    assert bgnbd.roc_auc == pytest.approx(0.757, abs=0.002)
    assert bgnbd.roc_auc_by_expected_purchases == pytest.approx(0.773, abs=0.002)
    assert bgnbd.brier == pytest.approx(0.161, abs=0.001)
    assert bgnbd.purchases_rmse == pytest.approx(1.61, abs=0.005)
    assert bgnbd.purchases_pearson_r == pytest.approx(0.63, abs=0.006)


def test_paretonbd_posterior_rates_reproduce_lifetimes_expected_purchases(cdnow_report) -> None:
    # The posterior behind P(any purchase) must give lifetimes' own E[X(t)]:
    # P(alive) * E[lambda / mu * (1 - exp(-mu t)) | alive].
    from lifetimes import ParetoNBDFitter

    x, t_x, age = np.array([r.stats.summary(cdnow_report.cutoff) for r in cdnow_report.customers]).T
    fitted = ParetoNBDFitter().fit(x, t_x, age)
    params = tuple(float(fitted.params_[k]) for k in ("r", "alpha", "s", "beta"))
    alive = np.asarray(fitted.conditional_probability_alive(x, t_x, age))
    ours = alive * paretonbd_posterior_mean(
        lambda lam, mu: lam / mu * (1.0 - np.exp(-mu * 39.0)), x, age, params
    )
    theirs = np.asarray(
        fitted.conditional_expected_number_of_purchases_up_to_time(39.0, x, t_x, age)
    )
    assert np.allclose(ours, theirs, rtol=0.01, atol=1e-3)

    buys = paretonbd_probability_of_purchase(alive, x, age, 39.0, params)
    assert np.all((buys >= 0.0) & (buys <= alive))
    assert np.all(buys <= ours + 1e-9)  # P(X > 0) <= E[X]


def test_paretonbd_is_a_second_reference_beside_bgnbd(cdnow_report) -> None:
    pareto, bgnbd = cdnow_report.paretonbd, cdnow_report.bgnbd
    assert pareto.actual_purchases == bgnbd.actual_purchases == 1882
    # Two fits of the same summary: they rank buyers alike and forecast similar totals.
    assert pareto.roc_auc == pytest.approx(bgnbd.roc_auc, abs=0.02)
    assert pareto.total_error == pytest.approx(bgnbd.total_error, abs=0.05)
    assert pareto.actual_share == pytest.approx(
        sum(r.outcome.purchases > 0 for r in cdnow_report.customers) / 2357
    )


def test_the_streaming_model_ranks_and_calibrates_buyers_better_than_both_references(
    cdnow_report,
) -> None:
    # The 1/10 sample is too small to separate purchase counts (RMSE, r) by a few
    # thousandths; ranking, calibration and the total it does separate.
    streaming = cdnow_report.streaming
    references = (cdnow_report.bgnbd, cdnow_report.paretonbd)
    assert cdnow_report.labelled_examples > 10 * len(cdnow_report.customers)
    for attribute, better in (("roc_auc", "higher"), ("brier", "lower")):
        ours, theirs = getattr(streaming, attribute), [getattr(r, attribute) for r in references]
        assert Comparison(attribute, better).beats(ours, theirs), (attribute, ours, theirs)
    assert Comparison("total_error", "nearer_zero").beats(
        streaming.total_error, [r.total_error for r in references]
    )
    assert abs(streaming.mean_probability / streaming.actual_share - 1.0) <= 0.10


def test_predictions_file_has_one_row_per_customer_with_both_forecasts(
    cdnow_report, tmp_path: Path
) -> None:
    path = tmp_path / "predictions.csv"
    assert write_predictions(path, cdnow_report) == 2357
    rows = list(csv.DictReader(path.open()))
    known = next(r for r in rows if r["customer_id"] == "cdnow-00004")
    assert (known["repeat_transactions"], known["actual_purchases"]) == ("2", "1")
    assert float(known["recency_weeks"]) == pytest.approx(30.43, abs=0.01)
    assert sum(int(r["actual_purchases"]) for r in rows) == 1882
    assert sum(float(r["streaming_expected_purchases"]) for r in rows) == pytest.approx(
        cdnow_report.streaming.predicted_purchases, rel=1e-4
    )


def test_the_report_prints_all_three_models_and_a_verdict_per_compared_figure(
    cdnow_report,
) -> None:
    text = format_report(cdnow_report)
    assert "streaming" in text and "BG/NBD" in text and "Pareto/NBD" in text
    assert text.count("beats both") + text.count("does NOT beat both") == 5
    assert "of actual" in text and "±10%" in text  # the mean probability's verdict


def test_a_figure_is_won_only_when_better_than_both_references() -> None:
    higher = Comparison("roc_auc", "higher")
    assert higher.beats(0.77, [0.75, 0.76])
    assert not higher.beats(0.76, [0.75, 0.76])  # a tie is not a win
    assert Comparison("purchases_rmse", "lower").beats(1.72, [1.73, 1.74])
    assert not Comparison("purchases_rmse", "lower").beats(1.735, [1.73, 1.74])
    assert Comparison("total_error", "nearer_zero").beats(-0.05, [0.10, -0.15])
    assert not Comparison("total_error", "nearer_zero").beats(0.05, [0.009, -0.03])


def test_evaluate_command_reads_a_streamcrm_history_with_all_event_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.jsonl"
    events = simulate(customers=150, days=240, seed=5).events
    assert any(isinstance(e, FeedbackEvent) for e in events)
    write_history(history, events)
    predictions = tmp_path / "predictions.csv"

    code = main(
        [
            "evaluate",
            str(history),
            "--calibration-weeks",
            "20",
            "--holdout-weeks",
            "14",
            "--predictions",
            str(predictions),
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "holdout 14 weeks" in out and "ROC AUC, any purchase" in out
    assert len(list(csv.DictReader(predictions.open()))) > 100


def test_evaluate_command_names_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "history.jsonl"
    bad.write_text('{"type": "purchase"}\n')
    assert main(["evaluate", str(bad)]) == 2
    assert "1 line is not a valid event" in capsys.readouterr().err
