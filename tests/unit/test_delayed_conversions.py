"""Touches whose attribution window is still open (streamcrm.core.delayed): how many trials an
arm's touches are worth at a watermark, and the delay distribution that says so."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.core.delayed import DelayDistribution, effective_touches, estimate_delays
from streamcrm.core.marketing import (
    WEEK,
    ArmFigures,
    ArmKey,
    Tally,
    bucket_start,
    delay_bin,
    touch_bucket,
)

DAY = timedelta(days=1)
KEY = ArmKey("spring", "A")
# The start of a touch-time bucket, so that a bucket's touches are all of one known age span.
T0 = bucket_start(touch_bucket(datetime(2026, 3, 1, tzinfo=UTC), WEEK), WEEK)


def sent(touches: int, conversions: int, at: datetime, delays: tuple[timedelta, ...] = ()) -> Tally:
    """``touches`` sent in the bucket of ``at``, ``conversions`` of them converted (after
    ``delays``, one per conversion, when given)."""
    bucket = touch_bucket(at, WEEK)
    timing = {(KEY, f"touches@{bucket}"): touches}
    if conversions:
        timing[(KEY, f"conversions@{bucket}")] = conversions
    for delay in delays:
        where = (KEY, f"delay@{delay_bin(delay, WEEK)}")
        timing[where] = timing.get(where, 0) + 1
    return Tally({KEY: ArmFigures(touches=touches, conversions=conversions)}, timing)


def test_without_a_watermark_or_counted_as_received_every_touch_is_a_trial() -> None:
    tally = sent(100, 3, T0)

    assert effective_touches(tally, None, WEEK) == {KEY: 100.0}
    assert effective_touches(tally, T0 + DAY, WEEK, "received") == {KEY: 100.0}


@pytest.mark.parametrize("counting", ["received", "censored", "exposure"])
def test_touches_whose_window_has_closed_count_fully_whatever_the_counting(counting: str) -> None:
    tally = sent(100, 3, T0) + sent(50, 1, T0 + 3 * DAY)

    assert effective_touches(tally, T0 + 3 * WEEK, WEEK, counting) == {KEY: 150.0}  # type: ignore[arg-type]


def test_censored_counts_an_open_touch_only_once_it_has_converted() -> None:
    tally = sent(100, 3, T0 - 2 * WEEK) + sent(40, 2, T0)

    assert effective_touches(tally, T0 + 2 * DAY, WEEK, "censored") == {KEY: 100.0 + 2}


def test_exposure_counts_an_open_touch_for_the_share_of_the_delays_already_passed() -> None:
    """With delays uniform over the week (no conversion seen yet: the default), a touch half
    a week old counts half a trial; its converted touches count fully."""
    width = WEEK / 8
    tally = sent(80, 0, T0)
    halfway = T0 + width / 2 + WEEK / 2  # the bucket's touches are on average half a week old

    (trials,) = effective_touches(tally, halfway, WEEK).values()

    assert trials == pytest.approx(40, abs=0.01)
    converted = sent(80, 8, T0)
    (with_conversions,) = effective_touches(converted, halfway, WEEK).values()
    assert with_conversions == pytest.approx(8 + 72 / 2, abs=0.01)


def test_an_arm_is_never_worth_fewer_trials_than_its_conversions_nor_more_than_its_touches() -> (
    None
):
    tally = sent(10, 10, T0)

    assert effective_touches(tally, T0, WEEK) == {KEY: 10.0}
    assert effective_touches(sent(10, 0, T0), T0, WEEK) == {KEY: 0.0}


def test_the_delay_distribution_is_not_biased_short_by_touches_too_recent_to_show_long_delays() -> (
    None
):
    """Touches flow evenly for ten days; every one converts after a delay uniform over the
    week, seen only once it has come. The delays seen so far are mostly short (the recent
    touches can only show short ones), yet the estimate weighs each delay bin by the touches
    that had the time to show it, and finds the uniform distribution again."""
    rng = random.Random(1)
    watermark = T0 + 10 * DAY
    tally = Tally()
    seen: list[timedelta] = []
    for n in range(4000):
        at = T0 + (watermark - T0) * (n / 4000)
        delay = WEEK * rng.random()
        shown = at + delay <= watermark
        tally = tally + sent(1, int(shown), at, (delay,) if shown else ())
        if shown:
            seen.append(delay)

    estimated = estimate_delays(tally, "spring", watermark, WEEK)

    assert sum(delay < WEEK / 2 for delay in seen) / len(seen) > 0.6  # what was seen: short
    for days in (1, 2, 3.5, 5, 6):
        assert estimated.cdf(days * DAY) == pytest.approx(days / 7, abs=0.04)


def test_no_conversion_yet_gives_uniform_delays() -> None:
    assert estimate_delays(sent(10, 0, T0), "spring", T0 + DAY, WEEK) == (
        DelayDistribution.uniform(WEEK)
    )


def test_dropping_the_figures_of_buckets_closed_long_ago_changes_nothing() -> None:
    """What bounds the stored fields: the bucket figures only matter while a window is open,
    the arm's totals carry the rest."""
    old, recent = sent(500, 20, T0 - 4 * WEEK), sent(60, 2, T0 + 5 * DAY, (DAY, 2 * DAY))
    watermark = T0 + 6 * DAY
    totals_only = Tally({KEY: (old + recent).arms[KEY]}, recent.timing)

    assert effective_touches(old + recent, watermark, WEEK) == effective_touches(
        totals_only, watermark, WEEK
    )
