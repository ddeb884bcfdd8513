"""Campaign reports (streamcrm.core.campaigns): figures in money and each arm's A/B standing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.core.campaigns import ABTestRules, RetentionPlan, campaign_metrics
from streamcrm.core.experiments import JEFFREYS_PRIOR
from streamcrm.core.marketing import (
    WEEK,
    ArmFigures,
    ArmKey,
    Tally,
    bucket_start,
    delay_bin,
    touch_bucket,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_each_campaign_gets_one_report_with_its_arms_summed_over_segments() -> None:
    tally = Tally(
        {
            ArmKey("spring", "A", "loyal"): ArmFigures(10, 4, 2, 1, 5_000, 250),
            ArmKey("spring", "A", "new"): ArmFigures(10, 1, 0, 1, 2_000, 250),
            ArmKey("spring", "B", "new"): ArmFigures(20, 0, 0, 0, 0, 1_000),
            ArmKey("winback", "discount", ""): ArmFigures(5, 0, 0, 2, 9_000, 500),
        }
    )

    reports = campaign_metrics(tally, NOW, ABTestRules())

    assert [r.campaign_id for r in reports] == ["spring", "winback"]
    arm_a = next(arm for arm in reports[0].arms if arm.arm == "A")
    assert (arm_a.touches, arm_a.opens, arm_a.clicks, arm_a.conversions) == (20, 5, 2, 2)
    assert (arm_a.attributed_revenue, arm_a.cost, arm_a.effect) == (70.0, 5.0, 65.0)
    assert arm_a.effect_per_touch == 3.25 and arm_a.roi == 13.0
    assert arm_a.conversion_rate == (2 + 1) / (20 + 2)
    low, high = arm_a.conversion_interval
    assert low < arm_a.conversion_rate < high
    assert abs(sum(arm.probability_best for arm in reports[0].arms) - 1) < 1e-6


def test_a_test_stops_on_a_clear_winner_with_enough_touches_and_not_before() -> None:
    def report(touches: int) -> tuple[str, bool]:
        tally = Tally(
            {
                ArmKey("c", "A"): ArmFigures(touches=touches, conversions=touches * 2 // 100),
                ArmKey("c", "B"): ArmFigures(touches=touches, conversions=touches * 8 // 100),
            }
        )
        (made,) = campaign_metrics(tally, NOW, ABTestRules(min_touches_per_arm=500))
        return made.leader, made.stop

    assert report(400) == ("B", False)  # clear, but under the minimum
    assert report(2_000) == ("B", True)


def test_the_prior_is_a_rule() -> None:
    tally = Tally({ArmKey("c", "A"): ArmFigures(touches=2, conversions=1)})

    (uniform,) = campaign_metrics(tally, NOW, ABTestRules())
    (jeffreys,) = campaign_metrics(tally, NOW, ABTestRules(prior=JEFFREYS_PRIOR))

    assert uniform.arms[0].conversion_rate == jeffreys.arms[0].conversion_rate == 0.5
    assert uniform.arms[0].conversion_interval != jeffreys.arms[0].conversion_interval


def fresh_touches(arm: str, touches: int, conversions: int, sent_at: datetime) -> Tally:
    """``touches`` of ``arm`` sent in one touch-time bucket, ``conversions`` of them converted
    half a day later."""
    key, bucket = ArmKey("c", arm), touch_bucket(sent_at, WEEK)
    return Tally(
        {key: ArmFigures(touches=touches, conversions=conversions)},
        {
            (key, f"touches@{bucket}"): touches,
            (key, f"conversions@{bucket}"): conversions,
            (key, f"delay@{delay_bin(timedelta(hours=12), WEEK)}"): conversions,
        },
    )


def test_touches_whose_window_is_still_open_count_for_the_conversions_already_due() -> None:
    """Arm A's 1,000 touches have all settled (30 conversions); arm B's 700 were sent in the
    last day, 10 converted so far. Counted as received, B looks far worse; at the watermark
    each open touch counts for the share of its conversions already due (delays pooled over
    the campaign: all in the first 12 hours here), so B's rate is estimated from what is
    known. The figures themselves are reported as counted."""
    start = bucket_start(touch_bucket(NOW, WEEK), WEEK)
    settled = Tally({ArmKey("c", "A"): ArmFigures(touches=1_000, conversions=30)})
    tally = settled + fresh_touches("B", 700, 10, start)
    watermark = start + timedelta(days=1)

    (received,) = campaign_metrics(tally, NOW, ABTestRules(counting="received"), watermark)
    (as_of_now,) = campaign_metrics(tally, NOW, ABTestRules(), watermark)
    (no_watermark,) = campaign_metrics(tally, NOW, ABTestRules())

    assert received.leader == no_watermark.leader == "A"
    rates = {arm.arm: arm.conversion_rate for arm in as_of_now.arms}
    assert rates["A"] == pytest.approx(31 / 1_002)
    assert rates["B"] > 2 * next(a.conversion_rate for a in received.arms if a.arm == "B")
    assert next(arm for arm in as_of_now.arms if arm.arm == "B").touches == 700
    plan = RetentionPlan.from_tally(tally, "c", 0.0, ABTestRules(), watermark)
    assert plan.arms_by_segment[""]["B"].trials < 700


def test_the_uplift_of_acting_is_reported_per_segment_and_over_all_of_them() -> None:
    from streamcrm.core.campaigns import uplift_metrics
    from streamcrm.core.experiments import UNIFORM_PRIOR
    from streamcrm.core.interventions import RetentionFigures, RetentionKey, RetentionTally

    tally = RetentionTally(
        {
            RetentionKey("churn_risk", "loyal", "acted"): RetentionFigures(100, 60),
            RetentionKey("churn_risk", "loyal", "control"): RetentionFigures(20, 6),
            RetentionKey("churn_risk", "new", "acted"): RetentionFigures(50, 10),
        }
    )

    reports = {r.segment: r for r in uplift_metrics(tally, NOW, UNIFORM_PRIOR)}

    assert set(reports) == {"loyal", "new", ""}
    loyal, everyone = reports["loyal"], reports[""]
    assert (loyal.acted_alerts, loyal.control_alerts, loyal.control_retained) == (100, 20, 6)
    assert loyal.acted_rate == 61 / 102 and loyal.control_rate == 7 / 22
    assert loyal.uplift_interval[0] < loyal.uplift < loyal.uplift_interval[1]
    assert loyal.probability_positive > 0.95
    assert (everyone.acted_alerts, everyone.acted_retained) == (150, 70)
    assert reports["new"].control_alerts == 0  # no control yet: the prior alone
