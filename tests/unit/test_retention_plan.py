"""What churn alerts carry: the control mark and the recommended retention arm
(streamcrm.core.campaigns.RetentionPlan)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from streamcrm.core.campaigns import RetentionPlan
from streamcrm.core.experiments import ArmPosterior
from streamcrm.core.marketing import ArmFigures, ArmKey, Tally
from streamcrm.core.records import Alert

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def alert(n: int, kind: str = "churn_risk") -> Alert:
    return Alert(
        alert_id=f"e{n}:{kind}",
        kind=kind,  # type: ignore[arg-type]
        severity="warning",
        customer_id=f"c{n}",
        raised_at=T0,
        event_id=f"e{n}",
        message="",
        scores={},
        model_version="m",
    )


def test_the_control_share_of_churn_alerts_is_held_out_and_carries_no_recommendation() -> None:
    plan = RetentionPlan(0.2, "retention", {"": {"call": ArmPosterior(5, 10)}})

    marked = [plan.annotate(alert(n), "") for n in range(20_000)]

    control = [a for a in marked if a.control]
    assert abs(len(control) / len(marked) - 0.2) < 0.01
    assert all(a.recommended_arm is None for a in control)
    assert all(a.recommended_arm == "call" for a in marked if not a.control)
    assert [plan.annotate(alert(n), "") for n in range(100)] == marked[:100]  # deterministic


def test_other_alert_kinds_are_left_as_they_are() -> None:
    plan = RetentionPlan(1.0, "retention", {"": {"call": ArmPosterior(5, 10)}})

    assert plan.annotate(alert(1, "sla_breach"), "") == alert(1, "sla_breach")


def test_the_recommended_arm_follows_the_posteriors_of_the_customers_segment() -> None:
    tally = Tally(
        {
            ArmKey("retention", "call", "loyal"): ArmFigures(touches=400, conversions=120),
            ArmKey("retention", "voucher", "loyal"): ArmFigures(touches=400, conversions=40),
            ArmKey("retention", "call", "new"): ArmFigures(touches=400, conversions=20),
            ArmKey("retention", "voucher", "new"): ArmFigures(touches=400, conversions=100),
            ArmKey("spring", "A", "new"): ArmFigures(touches=400, conversions=400),  # not it
        }
    )
    plan = RetentionPlan.from_tally(tally, "retention", 0.0)

    loyal = Counter(plan.annotate(alert(n), "loyal").recommended_arm for n in range(500))
    new = Counter(plan.annotate(alert(n), "new").recommended_arm for n in range(500))
    unseen = Counter(plan.annotate(alert(n), "champions").recommended_arm for n in range(500))

    assert loyal.most_common(1)[0][0] == "call" and loyal["call"] > 490
    assert new.most_common(1)[0][0] == "voucher" and new["voucher"] > 490
    assert set(unseen) <= {"call", "voucher"}  # all segments summed: 140 vs 140 of 800


def test_without_any_retention_arm_an_acted_alert_recommends_nothing() -> None:
    marked = RetentionPlan(0.0, "retention").annotate(alert(1), "loyal")

    assert (marked.control, marked.recommended_campaign, marked.recommended_arm) == (
        False,
        None,
        None,
    )
