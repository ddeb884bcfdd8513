"""Campaign reports: each campaign's figures summed over the partitions, and its A/B test.

Pure: the summed :class:`~streamcrm.core.marketing.Tally` in, one
:class:`~streamcrm.core.records.CampaignMetrics` per campaign out (figures summed over
segments; money converted from integer cents of the reporting currency).

Per arm, with ``c`` conversions in ``n`` touches: the Beta-Binomial posterior of its
conversion rate (:class:`~streamcrm.core.experiments.ArmPosterior`), its mean and 95 %
interval, P(best) and expected loss (:func:`~streamcrm.core.experiments.compare_arms`); per
campaign, the expected-loss stopping rule
(:func:`~streamcrm.core.experiments.stopping_decision`). A touch converts at most once, so
``c <= n`` always holds. Opens and clicks of touches not seen (yet) count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from streamcrm.core.experiments import (
    UNIFORM_PRIOR,
    ArmPosterior,
    ArmStanding,
    Prior,
    compare_arms,
    stopping_decision,
)
from streamcrm.core.marketing import ArmFigures, Tally
from streamcrm.core.records import ArmReport, CampaignMetrics


@dataclass(frozen=True)
class ABTestRules:
    """The A/B test's prior and stopping rule (settings ``ab_*``)."""

    prior: Prior = UNIFORM_PRIOR
    min_touches_per_arm: int = 500
    loss_threshold: float = 0.001
    """Stop when the leader's expected loss is below this (an absolute conversion rate)."""


def campaign_metrics(tally: Tally, now: datetime, rules: ABTestRules) -> list[CampaignMetrics]:
    """One report per campaign with at least one touch, sorted by campaign id.

    >>> from datetime import UTC
    >>> from streamcrm.core.marketing import ArmKey
    >>> figures = {ArmKey("spring", "A"): ArmFigures(touches=1000, conversions=30),
    ...            ArmKey("spring", "B"): ArmFigures(touches=1000, conversions=45)}
    >>> now = datetime(2026, 3, 1, tzinfo=UTC)
    >>> (report,) = campaign_metrics(Tally(figures), now, ABTestRules())
    >>> report.leader, report.stop, round(report.arms[1].probability_best, 3)
    ('B', True, 0.961)
    """
    by_campaign: dict[str, dict[str, ArmFigures]] = {}
    for (campaign, arm), figures in sorted(tally.by_campaign_arm().items()):
        by_campaign.setdefault(campaign, {})[arm] = figures
    reports = []
    for campaign, arms in by_campaign.items():
        if sum(figures.touches for figures in arms.values()) <= 0:
            continue
        posteriors = {
            arm: ArmPosterior(
                successes=max(0, min(figures.conversions, figures.touches)),
                trials=max(0, figures.touches),
                alpha0=rules.prior[0],
                beta0=rules.prior[1],
            )
            for arm, figures in arms.items()
        }
        comparison = compare_arms(posteriors)
        decision = stopping_decision(comparison, rules.min_touches_per_arm, rules.loss_threshold)
        reports.append(
            CampaignMetrics(
                campaign_id=campaign,
                published_at=now,
                arms=[
                    _arm_report(arm, figures, posteriors[arm], comparison.arms[arm])
                    for arm, figures in arms.items()
                ],
                leader=decision.leader,
                stop=decision.stop,
                decision=decision.reason,
            )
        )
    return reports


def _arm_report(
    arm: str, figures: ArmFigures, posterior: ArmPosterior, standing: ArmStanding
) -> ArmReport:
    low, high = posterior.credible_interval(0.95)
    per_touch = figures.effect_per_touch_cents
    return ArmReport(
        arm=arm,
        touches=figures.touches,
        opens=figures.opens,
        clicks=figures.clicks,
        conversions=figures.conversions,
        attributed_revenue=figures.revenue_cents / 100,
        cost=figures.cost_cents / 100,
        effect=figures.effect_cents / 100,
        effect_per_touch=None if per_touch is None else per_touch / 100,
        roi=figures.roi,
        conversion_rate=posterior.mean,
        conversion_interval=(low, high),
        probability_best=standing.probability_best,
        expected_loss=standing.expected_loss,
    )
