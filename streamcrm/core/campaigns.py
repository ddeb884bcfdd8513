"""Campaign reports: each campaign's figures summed over the partitions, and its A/B test.

Pure: the summed :class:`~streamcrm.core.marketing.Tally` in, one
:class:`~streamcrm.core.records.CampaignMetrics` per campaign out (figures summed over
segments; money converted from integer cents of the reporting currency).

Per arm, with ``c`` conversions in ``n`` touches: the Beta-Binomial posterior of its
conversion rate (:class:`~streamcrm.core.experiments.ArmPosterior`) over the trials its
touches are worth at the watermark (a touch whose attribution window is still open counts
for the share of its conversions already due: :mod:`streamcrm.core.delayed`), its mean and 95 %
interval, P(best) and expected loss (:func:`~streamcrm.core.experiments.compare_arms`); per
campaign, the expected-loss stopping rule
(:func:`~streamcrm.core.experiments.stopping_decision`). A touch converts at most once, so
``c <= n`` always holds. Opens and clicks of touches not seen (yet) count nowhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from streamcrm.core.delayed import Counting, effective_touches
from streamcrm.core.experiments import (
    UNIFORM_PRIOR,
    ArmPosterior,
    ArmStanding,
    Prior,
    compare_arms,
    is_control,
    retention_uplift,
    stopping_decision,
    thompson_choice,
)
from streamcrm.core.interventions import RetentionTally
from streamcrm.core.marketing import DEFAULT_ATTRIBUTION_WINDOW, ArmFigures, ArmKey, Tally
from streamcrm.core.records import (
    Alert,
    ArmReport,
    CampaignMetrics,
    CustomerScore,
    UpliftMetrics,
)
from streamcrm.core.scoring import ScoredEvent


@dataclass(frozen=True)
class ABTestRules:
    """The A/B test's prior and stopping rule (settings ``ab_*``), and how touches whose
    attribution window is still open count (:mod:`streamcrm.core.delayed`)."""

    prior: Prior = UNIFORM_PRIOR
    min_touches_per_arm: int = 500
    loss_threshold: float = 0.001
    """Stop when the leader's expected loss is below this (an absolute conversion rate)."""
    attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW
    counting: Counting = "exposure"

    def posteriors(self, tally: Tally, watermark: datetime | None) -> dict[ArmKey, ArmPosterior]:
        """Each arm's (and segment's) posterior at ``watermark`` (None: every touch counts
        as a trial).

        >>> from datetime import UTC
        >>> tally = Tally({ArmKey("c", "A"): ArmFigures(touches=10, conversions=3)})
        >>> ABTestRules().posteriors(tally, None)[ArmKey("c", "A")].beta
        8.0
        """
        trials = effective_touches(tally, watermark, self.attribution_window, self.counting)
        return {
            key: ArmPosterior(
                successes=max(0, min(figures.conversions, figures.touches)),
                trials=max(0.0, trials[key]),
                alpha0=self.prior[0],
                beta0=self.prior[1],
            )
            for key, figures in tally.arms.items()
        }


def campaign_metrics(
    tally: Tally, now: datetime, rules: ABTestRules, watermark: datetime | None = None
) -> list[CampaignMetrics]:
    """One report per campaign with at least one touch, sorted by campaign id; posteriors
    at ``watermark`` (:meth:`ABTestRules.posteriors`).

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
    by_arm = _summed_over_segments(rules.posteriors(tally, watermark))
    reports = []
    for campaign, arms in by_campaign.items():
        if sum(figures.touches for figures in arms.values()) <= 0:
            continue
        posteriors = {
            arm: by_arm.get((campaign, arm), ArmPosterior(0, 0, *rules.prior)) for arm in arms
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


def _summed_over_segments(
    posteriors: Mapping[ArmKey, ArmPosterior],
) -> dict[tuple[str, str], ArmPosterior]:
    summed: dict[tuple[str, str], ArmPosterior] = {}
    for key, posterior in sorted(posteriors.items()):
        where = (key.campaign_id, key.arm)
        known = summed.get(where)
        summed[where] = (
            posterior if known is None else known.updated(posterior.successes, posterior.trials)
        )
    return summed


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


@dataclass(frozen=True)
class RetentionPlan:
    """What churn alerts carry: the control share, and the retention campaign's arm
    posteriors per customer segment (a snapshot of the campaign figures)."""

    control_share: float = 0.0
    campaign_id: str = "retention"
    arms_by_segment: Mapping[str, Mapping[str, ArmPosterior]] = field(default_factory=dict)

    @classmethod
    def from_tally(
        cls,
        tally: Tally,
        campaign_id: str,
        control_share: float,
        rules: ABTestRules | None = None,
        watermark: datetime | None = None,
    ) -> RetentionPlan:
        """The posteriors of ``campaign_id``'s arms in each segment of ``tally`` at
        ``watermark`` (:meth:`ABTestRules.posteriors`)."""
        rules = ABTestRules() if rules is None else rules
        arms: dict[str, dict[str, ArmPosterior]] = {}
        posteriors = rules.posteriors(tally, watermark)
        for key, figures in sorted(tally.arms.items()):
            if key.campaign_id != campaign_id or figures.touches <= 0:
                continue
            arms.setdefault(key.segment, {})[key.arm] = posteriors[key]
        return cls(control_share, campaign_id, arms)

    def annotate(self, alert: Alert, segment: str) -> Alert:
        """A churn alert marked control or acted; an acted one with the arm recommended by
        Thompson sampling (seeded by the alert id, so a replay recommends the same arm) over
        the posteriors of the customer's segment (all segments' arms summed when the segment
        has none yet). Other alerts unchanged.

        >>> plan = RetentionPlan(0.0, "retention", {"loyal": {"call": ArmPosterior(9, 10)}})
        >>> alert = Alert(alert_id="e1:churn_risk", kind="churn_risk", severity="warning",
        ...     customer_id="c1", raised_at=datetime(2026, 3, 1), event_id="e1", message="",
        ...     scores={}, model_version="m")
        >>> marked = plan.annotate(alert, "loyal")
        >>> marked.control, marked.recommended_campaign, marked.recommended_arm
        (False, 'retention', 'call')
        """
        if alert.kind != "churn_risk" or alert.customer_id is None:
            return alert
        if is_control(alert.customer_id, alert.alert_id, self.control_share):
            return alert.model_copy(update={"control": True})
        arms = self.arms_by_segment.get(segment) or self._all_segments()
        arm = thompson_choice(arms, alert.alert_id) if arms else None
        return alert.model_copy(
            update={
                "control": False,
                "recommended_campaign": self.campaign_id if arm is not None else None,
                "recommended_arm": arm,
            }
        )

    def annotate_outputs(
        self, outputs: Sequence[tuple[CustomerScore, Sequence[Alert]]]
    ) -> list[tuple[CustomerScore, tuple[Alert, ...]]]:
        """Scores with their alerts annotated (:meth:`annotate`, the score's segment)."""
        return [
            (score, tuple(self.annotate(alert, score.segment_name) for alert in alerts))
            for score, alerts in outputs
        ]

    def annotate_scored(self, scored: ScoredEvent) -> ScoredEvent:
        """``scored`` with the alerts of its score and of its re-scores annotated."""
        if not scored.alerts and not any(rescore.alerts for rescore in scored.rescores):
            return scored  # the common case, on the per-event path: nothing to annotate
        segment = scored.score.segment_name if scored.score is not None else ""
        return replace(
            scored,
            alerts=tuple(self.annotate(alert, segment) for alert in scored.alerts),
            rescores=tuple(
                replace(
                    rescore,
                    alerts=tuple(
                        self.annotate(alert, rescore.score.segment_name) for alert in rescore.alerts
                    ),
                )
                for rescore in scored.rescores
            ),
        )

    def _all_segments(self) -> dict[str, ArmPosterior]:
        summed: dict[str, ArmPosterior] = {}
        for arms in self.arms_by_segment.values():
            for arm, posterior in arms.items():
                known = summed.get(arm)
                summed[arm] = (
                    posterior
                    if known is None
                    else known.updated(posterior.successes, posterior.trials)
                )
        return summed


def uplift_metrics(tally: RetentionTally, now: datetime, prior: Prior) -> list[UpliftMetrics]:
    """Per alert kind, in every segment and over all of them (segment ``""``), the
    retention of acted-on alerts against control alerts, with the uplift and its interval
    (:func:`streamcrm.core.experiments.retention_uplift`)."""
    reports = []
    for kind in sorted({key.kind for key in tally.groups}):
        segments = sorted({key.segment for key in tally.groups if key.kind == kind})
        for segment in (*(s for s in segments if s), ""):
            acted, control = tally.acted_and_control(kind, segment or None)
            estimate = retention_uplift(
                acted.retained, acted.alerts, control.retained, control.alerts, prior=prior
            )
            reports.append(
                UpliftMetrics(
                    kind=kind,
                    segment=segment,
                    published_at=now,
                    acted_alerts=acted.alerts,
                    acted_retained=acted.retained,
                    control_alerts=control.alerts,
                    control_retained=control.retained,
                    acted_rate=estimate.acted_rate,
                    control_rate=estimate.control_rate,
                    uplift=estimate.uplift,
                    uplift_interval=estimate.interval,
                    probability_positive=estimate.probability_positive,
                )
            )
    return reports
