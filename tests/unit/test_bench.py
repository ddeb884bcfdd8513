"""The benchmark's arithmetic: sustained rates and percentiles from raw samples."""

from __future__ import annotations

import pytest

from streamcrm.bench.harness import percentiles, sustained_rate
from streamcrm.bench.pipeline import BenchReport, format_report
from streamcrm.bench.soak import soak_figures


def test_the_sustained_rate_ignores_start_up_and_the_tail() -> None:
    # A slow start (group join) and a slow tail: only the middle 80 % counts.
    samples = [(0.0, 0), (5.0, 0), (6.0, 100), (7.0, 500), (8.0, 900), (20.0, 1000)]
    assert sustained_rate(samples, 1000) == pytest.approx(800 / 2.0)


def test_a_stream_never_finished_has_no_sustained_rate() -> None:
    with pytest.raises(ValueError, match="never reach"):
        sustained_rate([(0.0, 0), (1.0, 50)], 1000)


def test_percentiles_take_the_nearest_rank() -> None:
    assert percentiles([5.0, 1.0, 3.0, 2.0, 4.0]) == {"p50": 2.0, "p95": 5.0, "p99": 5.0}
    assert percentiles(range(1, 11), (0.5, 0.9)) == {"p50": 5, "p90": 9}


def test_the_report_states_every_ratio_against_the_same_run() -> None:
    report = BenchReport(
        events=10,
        customers=2,
        pipeline_events_per_s=500.0,
        passthrough_events_per_s=4000.0,
        ceiling_events_per_s=1000.0,
    )
    assert report.ratios() == {
        "pipeline / ceiling": 0.5,
        "pipeline / Faust pass-through": 0.125,
    }
    assert "pipeline / Faust pass-through" in format_report(report)


def test_a_groups_progress_is_the_sum_of_each_workers_latest_count() -> None:
    from datetime import UTC, datetime

    from streamcrm.bench.harness import GroupProgress
    from streamcrm.core.scoring import ScoringConfig
    from streamcrm.store import InMemoryStateStore
    from streamcrm.worker.pipeline import ScoringPipeline

    def report(worker: str, scored: int, duplicates: int = 0) -> bytes:
        pipeline = ScoringPipeline(InMemoryStateStore(), ScoringConfig())
        pipeline.outcomes.update({"scored": scored, "duplicate": duplicates, "rewinds": 7})
        metrics = pipeline.model_metrics(worker, datetime(2026, 1, 1, tzinfo=UTC))
        return metrics.model_dump_json().encode()

    progress = GroupProgress()

    assert progress(report("a", 10)) == 10
    assert progress(report("b", 5, duplicates=1)) == 16
    assert progress(report("a", 30)) == 36  # a's newer report replaces its older one


def test_scaling_is_reported_as_a_ratio_to_one_worker() -> None:
    report = BenchReport(
        events=10,
        customers=2,
        pipeline_events_per_s=500.0,
        ceiling_events_per_s=1000.0,
        scaling_workers=2,
        scaling_events_per_s=800.0,
    )
    assert report.ratios()["2 workers / 1 worker"] == pytest.approx(1.6)
    assert "streamcrm pipeline, 2 workers" in format_report(report)


def test_the_quix_streams_baseline_is_a_ratio_too_when_it_was_measured() -> None:
    measured = BenchReport(
        events=10,
        customers=2,
        pipeline_events_per_s=500.0,
        ceiling_events_per_s=1000.0,
        quix_events_per_s=20_000.0,
    )
    not_measured = BenchReport(
        events=10, customers=2, pipeline_events_per_s=500.0, ceiling_events_per_s=1000.0
    )

    assert measured.ratios()["pipeline / Quix Streams pass-through"] == pytest.approx(0.025)
    assert "Quix Streams pass-through (decode" in format_report(measured)
    assert "Quix Streams pass-through (decode" not in format_report(not_measured)


def test_memory_that_only_falls_after_warm_up_is_flat() -> None:
    # Start-up peaks, then a worker that holds 200 MiB within a few MiB for ten minutes.
    samples = [(t, (260.0 if t < 30 else 200.0) + (t % 20) / 10) for t in range(0, 601, 5)]

    figures = soak_figures(samples, 10, 400.0, 240_000, 240_000)

    assert abs(figures.growth) < 0.02
    assert figures.spread < 0.02


def test_memory_that_keeps_growing_shows_as_growth() -> None:
    samples = [(t, 200.0 + t / 10) for t in range(0, 601, 5)]  # +6 MiB a minute

    figures = soak_figures(samples, 10, 400.0, 240_000, 240_000)

    assert figures.growth == pytest.approx((200 + 57.5) / (200 + 8.75) - 1, rel=0.01)
    assert figures.spread > 0.10


def test_a_soak_shorter_than_its_warm_up_is_refused() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        soak_figures([(0.0, 100.0), (30.0, 100.0)], 0.5, 400.0, 10, 10)


def test_the_soak_is_reported_when_it_was_run() -> None:
    report = BenchReport(events=10, customers=2, ceiling_events_per_s=1000.0)
    assert "soak: 10 minutes" not in format_report(report)

    report.soak = {
        "minutes": 10,
        "offered events/s": 400.0,
        "events sent": 240_000,
        "events scored": 239_990,
        "RSS after warm-up MiB": 200.0,
        "RSS last minute MiB": 204.0,
        "RSS min MiB": 198.0,
        "RSS max MiB": 210.0,
        "RSS growth": 0.02,
        "RSS spread": 12 / 198,
    }

    report.soak_event_time = "wall"

    assert "soak: 10 minutes at 400 events/s, wall event time" in format_report(report)
    assert "growth +2.0%" in format_report(report)


def test_a_marketing_event_is_set_against_an_input_event_of_the_same_run() -> None:
    report = BenchReport(
        events=10,
        customers=2,
        pipeline_events_per_s=900.0,
        ceiling_events_per_s=3_000.0,
        component_us={"validate (decode_event)": 10.0, "scoring core + models": 290.0},
        marketing_us={"marketing event: decode + apply_marketing": 60.0},
    )

    lines = format_report(report).splitlines()

    assert any("an input event: decode + score_event" in line and "300.0" in line for line in lines)
    assert any("marketing event / input event" in line and "0.20" in line for line in lines)


def test_the_marketing_component_applies_a_touch_an_open_and_a_click_per_customer() -> None:
    from datetime import UTC, datetime

    from streamcrm.bench.pipeline import measure_marketing
    from streamcrm.core.scoring import ScoringConfig
    from streamcrm.core.state import CustomerState

    at = datetime(2026, 3, 1, tzinfo=UTC)
    states = {c: CustomerState(customer_id=c, first_seen_at=at, last_event_at=at) for c in "ab"}

    (cost,) = measure_marketing(states, ScoringConfig()).values()

    assert cost > 0


def test_every_target_is_reported_met_not_met_or_not_measured() -> None:
    report = BenchReport(
        events=10,
        customers=2,
        pipeline_events_per_s=1_200.0,
        passthrough_events_per_s=3_000.0,
        ceiling_events_per_s=2_000.0,
        component_us={
            "scoring core + models (score_event)": 45.0,
            "Redis load + atomic save + outbox, batches of 500": 120.0,
        },
        latency_offered_per_s=600.0,
        steady_latency_ms={"p50": 40.0, "p99": 250.0},
        catch_up_latency_ms={"p50": 4_000.0, "p99": 9_000.0},
        scaling_workers=2,
        scaling_events_per_s=2_000.0,
        redis_bytes_per_customer=900.0,
    )

    verdicts = {target.name: target.met for target in report.targets()}
    assert verdicts["pipeline / Faust pass-through"] is False
    assert verdicts["pipeline, events/s a worker"] is False
    assert verdicts["scoring core, µs an event"] is True
    assert verdicts["Redis, µs an event"] is False
    assert verdicts["p99 ms at 600 events/s, steady state"] is False
    assert verdicts["  (p99 ms at 600 events/s, catching up)"] is None
    assert verdicts["2 workers / one"] is True  # 1.67x
    assert verdicts["Redis bytes a customer"] is True
    assert verdicts["moonshot: pipeline / Quix Streams pass-through"] is None
    assert verdicts["soak: share of what was sent that was scored"] is None
    table = format_report(report)
    assert "scoring core, µs an event" in table and "NOT met" in table
    assert "not measured" in table
    catching_up = next(line for line in table.splitlines() if "catching up)" in line)
    assert "9,000" in catching_up and "not a target" in catching_up
