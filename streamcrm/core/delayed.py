"""Conversions still to come: how many trials an arm's touches are worth at a watermark.

A touch converts when a purchase follows it within the attribution window, so its outcome is
known only once the window has closed. Counting every touch as a trial from the moment it is
sent (and an open one not converted yet as a failure) biases an arm's rate low, and the
more so the more of its touches are recent: the arm Thompson sampling has just started to
favour, which slows the move to the best arm. Pure; event time only (the caller's
watermark: the event time up to which events are in), no clock.

Three ways to count, from the tally's figures by touch-time bucket
(:mod:`streamcrm.core.marketing`), with ``W`` the watermark and ``a = W − touch time`` the
age of a touch:

``"received"``
    every touch is one trial (the figures as they are).
``"censored"``
    a touch whose window is still open counts only once it has converted: trials are the
    touches whose window has closed plus the converted open ones.
``"exposure"`` (the default)
    an open touch not converted yet counts ``F(a)`` of a trial, ``F`` the distribution
    function of the delay from a touch to its conversion (given that it converts within the
    window); a converted one counts one. This is the censored likelihood: an open touch not
    converted yet has probability ``1 − p·F(a) ≈ (1 − p)^F(a)``, so the Beta posterior
    ``Beta(α₀ + s, β₀ + n_eff − s)`` with ``n_eff = closed + converted open + Σ F(a)`` over
    the unconverted open touches (exact as ``p → 0``; Vernade, Cappé & Perchet 2017 discount
    pending conversions the same way).

``F`` is estimated per campaign (its arms and segments pooled: the delay is taken to depend
on the customer, not the arm) from the conversions per delay bin ``D_k`` over the touches
that have had the time to show a delay in that bin (``R_k``, each touch weighted by the
share of the bin its age covers), so recent touches, which can only have shown short delays,
do not bias it short: ``f_k ∝ (D_k + ½) / R_k`` (half a conversion per bin keeps it near
uniform while there are few), linear within a bin. Bins no touch has reached yet take the
mean of the others; with no conversion at all, ``F`` is uniform.

Within a touch-time bucket touches are taken to be spread evenly in time; the weight of the
bucket's touches is the average over it (16 points). Buckets older than a window count
fully, so figures of old buckets may be dropped from the store without changing anything.

>>> from datetime import UTC, datetime, timedelta
>>> from streamcrm.core.marketing import ArmFigures, ArmKey, Tally, touch_bucket, WEEK
>>> at = datetime(2026, 3, 1, tzinfo=UTC)
>>> key = ArmKey("c", "A")
>>> bucket = touch_bucket(at, WEEK)
>>> tally = Tally({key: ArmFigures(touches=100, conversions=2)},
...               {(key, f"touches@{bucket}"): 100, (key, f"conversions@{bucket}"): 2})
>>> received = effective_touches(tally, at + WEEK * 2, WEEK)[key]  # all closed: 100
>>> fresh = effective_touches(tally, at + timedelta(days=1), WEEK)[key]
>>> censored = effective_touches(tally, at + timedelta(days=1), WEEK, "censored")[key]
>>> received, round(fresh, 1), censored
(100.0, 15.1, 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from streamcrm.core.marketing import (
    DELAY_BINS,
    TOUCH_BUCKETS_PER_WINDOW,
    ArmKey,
    Tally,
    bucket_start,
)

Counting = Literal["received", "censored", "exposure"]
"""How a touch whose window is still open counts (see the module docstring)."""
COUNTINGS: tuple[Counting, ...] = ("received", "censored", "exposure")

_POINTS = 16
"""Points at which a bucket's weight is averaged (its touches spread evenly in time)."""
_SMOOTHING = 0.5
"""Conversions added to each delay bin (see the module docstring)."""

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class DelayDistribution:
    """The delay from a touch to its conversion, given that it converts within ``window``:
    a mass per bin of ``window / DELAY_BINS``, uniform within each bin.

    >>> uniform = DelayDistribution.uniform(timedelta(days=8))
    >>> uniform.cdf(timedelta(days=2)), uniform.cdf(timedelta(days=9))
    (0.25, 1.0)
    """

    window: timedelta
    masses: tuple[float, ...]

    @classmethod
    def uniform(cls, window: timedelta) -> DelayDistribution:
        return cls(window, (1.0 / DELAY_BINS,) * DELAY_BINS)

    def cdf(self, age: timedelta) -> float:
        """``F(age)``: the share of conversions that come within ``age`` of their touch."""
        seconds = np.array([age.total_seconds()])
        return float(self.cdf_seconds(seconds)[0])

    def cdf_seconds(self, ages: FloatArray) -> FloatArray:
        """:meth:`cdf` of ages in seconds, elementwise."""
        bins = ages / (self.window.total_seconds() / DELAY_BINS)
        cumulative = np.concatenate(([0.0], np.cumsum(self.masses)))
        cumulative /= cumulative[-1]
        return np.asarray(np.interp(bins, np.arange(DELAY_BINS + 1), cumulative), np.float64)


@dataclass(frozen=True)
class _Recent:
    """An arm's touches whose window may still be open, by touch-time bucket."""

    sent: FloatArray
    converted: FloatArray
    ages: FloatArray
    """(bucket, point): the ages in seconds at the watermark of evenly spread touches."""


def effective_touches(
    tally: Tally,
    watermark: datetime | None,
    window: timedelta,
    counting: Counting = "exposure",
) -> dict[ArmKey, float]:
    """How many trials each arm's touches are worth at ``watermark`` (see the module
    docstring): ``touches − Σ (touches − conversions) · (1 − F(age))`` over its buckets,
    ``F ≡ 1`` for ``"received"`` (also when the watermark is unknown), the step at the window
    for ``"censored"``, the estimated delay distribution for ``"exposure"``. Never fewer than
    the arm's conversions, never more than its touches."""
    if counting not in COUNTINGS:
        raise ValueError(f"counting must be one of {COUNTINGS}, not {counting!r}")
    touches = {key: float(figures.touches) for key, figures in tally.arms.items()}
    if watermark is None or counting == "received":
        return touches
    recent = _recent(tally, watermark, window)
    distributions: dict[str, DelayDistribution] = {}
    out = {}
    seconds = window.total_seconds()
    for key, figures in tally.arms.items():
        arm = recent.get(key)
        if arm is None:
            out[key] = touches[key]
            continue
        if counting == "censored":
            shown = np.zeros_like(arm.ages)
        else:
            if key.campaign_id not in distributions:
                distributions[key.campaign_id] = _estimate(tally, recent, key.campaign_id, window)
            shown = distributions[key.campaign_id].cdf_seconds(arm.ages)
        unseen = np.where(arm.ages < seconds, 1.0 - shown, 0.0).mean(axis=1)
        deficit = float(np.dot(arm.sent - arm.converted, unseen))
        low = max(0, min(figures.conversions, figures.touches))
        out[key] = min(touches[key], max(float(low), touches[key] - deficit))
    return out


def estimate_delays(
    tally: Tally, campaign_id: str, watermark: datetime, window: timedelta
) -> DelayDistribution:
    """The delay distribution of ``campaign_id``'s conversions (arms and segments pooled),
    corrected for the touches too recent to have shown long delays (module docstring)."""
    return _estimate(tally, _recent(tally, watermark, window), campaign_id, window)


def _estimate(
    tally: Tally, recent: dict[ArmKey, _Recent], campaign_id: str, window: timedelta
) -> DelayDistribution:
    arms = [key for key in tally.arms if key.campaign_id == campaign_id]
    conversions = np.zeros(DELAY_BINS)
    for (key, name), count in tally.timing.items():
        figure, _, where = name.partition("@")
        if figure == "delay" and key.campaign_id == campaign_id:
            conversions[int(where)] += count
    if not conversions.any():
        return DelayDistribution.uniform(window)
    width = window.total_seconds() / DELAY_BINS
    at_risk = np.full(DELAY_BINS, float(sum(tally.arms[key].touches for key in arms)))
    bins = np.arange(DELAY_BINS)
    for key in arms:
        arm = recent.get(key)
        if arm is None:
            continue
        # The share of bin k a touch of age a has had the time to show: clip(a/width − k).
        shown = np.clip(arm.ages[:, :, None] / width - bins, 0.0, 1.0).mean(axis=1)
        at_risk -= arm.sent @ (1.0 - shown)
    known = at_risk >= 1.0
    if not known.any():
        return DelayDistribution.uniform(window)
    rates = np.where(known, (conversions + _SMOOTHING) / np.maximum(at_risk, 1.0), 0.0)
    rates = np.where(known, rates, rates[known].mean())
    return DelayDistribution(window, tuple(float(rate) for rate in rates / rates.sum()))


def _recent(tally: Tally, watermark: datetime, window: timedelta) -> dict[ArmKey, _Recent]:
    """Per arm, its buckets whose touches may still have their window open at ``watermark``."""
    width = window / TOUCH_BUCKETS_PER_WINDOW
    oldest = (watermark - window - bucket_start(0, window)) // width - 1
    figures: dict[ArmKey, dict[int, list[int]]] = {}
    for (key, name), count in tally.timing.items():
        figure, _, where = name.partition("@")
        if figure not in ("touches", "conversions") or int(where) < oldest:
            continue
        pair = figures.setdefault(key, {}).setdefault(int(where), [0, 0])
        pair[figure == "conversions"] += count
    points = (np.arange(_POINTS) + 0.5) / _POINTS * width.total_seconds()
    recent = {}
    for key, buckets in figures.items():
        order = sorted(buckets)
        starts = np.array([(watermark - bucket_start(b, window)).total_seconds() for b in order])
        recent[key] = _Recent(
            sent=np.array([buckets[b][0] for b in order], np.float64),
            converted=np.array([buckets[b][1] for b in order], np.float64),
            ages=np.maximum(starts[:, None] - points[None, :], 0.0),
        )
    return recent
