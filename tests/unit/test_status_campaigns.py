"""What ``streamcrm status`` shows of campaigns and of the uplift of acting on alerts: the
newest record of each key of their compacted topics, and how it is laid out (no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime

from streamcrm.cli.status import format_status, latest_by_key
from streamcrm.core.records import ArmReport, CampaignMetrics, UpliftMetrics
from streamcrm.services.kafka import Record

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC)


def arm(name: str, **fields: object) -> ArmReport:
    values: dict[str, object] = {
        "arm": name,
        "touches": 2_000,
        "opens": 600,
        "clicks": 200,
        "conversions": 160,
        "attributed_revenue": 9_000.0,
        "cost": 200.0,
        "effect": 8_800.0,
        "effect_per_touch": 4.4,
        "roi": 44.0,
        "conversion_rate": 0.0804,
        "conversion_interval": (0.0689, 0.0929),
        "probability_best": 0.9991,
        "expected_loss": 0.00001,
    }
    return ArmReport.model_validate(values | fields)


def campaign(campaign_id: str = "spring", at: datetime = T0, **fields: object) -> CampaignMetrics:
    values: dict[str, object] = {
        "campaign_id": campaign_id,
        "published_at": at,
        "arms": [
            arm(
                "A",
                conversions=40,
                effect=4_800.0,
                roi=24.0,
                conversion_rate=0.0204,
                conversion_interval=(0.0147, 0.0272),
                probability_best=0.0009,
                expected_loss=0.0599,
            ),
            arm("B"),
        ],
        "leader": "B",
        "stop": True,
        "decision": "stop: choose 'B', expected loss 1e-05 < threshold 0.001",
    }
    return CampaignMetrics.model_validate(values | fields)


def uplift(
    segment: str, kind: str = "churn_risk", at: datetime = T0, **fields: object
) -> UpliftMetrics:
    values: dict[str, object] = {
        "kind": kind,
        "segment": segment,
        "published_at": at,
        "acted_alerts": 100,
        "acted_retained": 60,
        "control_alerts": 20,
        "control_retained": 6,
        "acted_rate": 0.598,
        "control_rate": 0.318,
        "uplift": 0.280,
        "uplift_interval": (0.056, 0.478),
        "probability_positive": 0.993,
    }
    return UpliftMetrics.model_validate(values | fields)


def record(key: str | None, value: CampaignMetrics | UpliftMetrics | bytes | None) -> Record:
    raw = (
        value.model_dump_json().encode()
        if isinstance(value, CampaignMetrics | UpliftMetrics)
        else value
    )
    return Record("crm.campaign-metrics", 0, 0, None if key is None else key.encode(), raw)


# --- the newest record of each key ---------------------------------------------------------


def test_the_newest_record_of_each_key_is_kept() -> None:
    records = [
        record("spring", campaign(at=T0)),
        record("winback", campaign("winback")),
        record("spring", campaign(at=T1)),
    ]

    latest = latest_by_key(records, CampaignMetrics)

    assert sorted(latest) == ["spring", "winback"]
    assert latest["spring"].published_at == T1


def test_a_tombstone_deletes_its_key_until_a_newer_record_comes() -> None:
    gone = [record("spring", campaign()), record("spring", None)]
    back = [*gone, record("spring", campaign(at=T1))]

    assert latest_by_key(gone, CampaignMetrics) == {}
    assert latest_by_key(back, CampaignMetrics)["spring"].published_at == T1


def test_an_unreadable_or_keyless_record_is_skipped_and_the_key_keeps_its_last_good_one() -> None:
    records = [
        record("spring", campaign(at=T0)),
        record("spring", b"{not json"),
        record("spring", uplift("")),  # another topic's record: not a campaign report
        record(None, campaign("keyless", at=T1)),
    ]

    latest = latest_by_key(records, CampaignMetrics)

    assert list(latest) == ["spring"] and latest["spring"].published_at == T0


def test_uplift_records_are_kept_by_their_kind_and_segment_key() -> None:
    records = [record("churn_risk|loyal", uplift("loyal")), record("churn_risk|", uplift(""))]

    assert sorted(latest_by_key(records, UpliftMetrics)) == ["churn_risk|", "churn_risk|loyal"]


# --- the campaigns section ------------------------------------------------------------------


def rows(text: str) -> list[list[str]]:
    """The cells of every table row of ``text``."""
    return [
        [cell.strip() for cell in line.strip("│ ").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def row(text: str, first_cell: str) -> list[str]:
    """The cells of the first table row whose first cell starts with ``first_cell``."""
    for cells in rows(text):
        if cells[0].startswith(first_cell):
            return cells
    raise AssertionError(f"no row starting {first_cell!r} in\n{text}")


def test_status_shows_each_arm_of_a_campaign_with_its_rate_interval_money_and_standing() -> None:
    text = format_status({}, campaigns={"spring": campaign()}, uplift={})

    assert "campaign spring (reported 2026-03-01 12:00:00Z)" in text
    assert row(text, "A") == [
        "A",
        "2,000",  # touches
        "40",  # conversions
        "2.0%",  # conversion rate: the posterior mean
        "[1.5%, 2.7%]",  # its 95 % interval
        "4,800.00",  # effect: attributed revenue − cost
        "+2,400%",  # ROI: effect / cost
        "0.1%",  # P(best)
        "0.0599",  # expected loss, in conversion rate
    ]
    assert row(text, "B")[3:5] == ["8.0%", "[6.9%, 9.3%]"]


def test_status_marks_the_chosen_arm_and_says_why_the_test_stops() -> None:
    text = format_status({}, campaigns={"spring": campaign()}, uplift={})

    assert row(text, "B")[0] == "B (chosen)"
    assert "stop: choose 'B', expected loss 1e-05 < threshold 0.001" in text


def test_status_marks_the_leader_of_a_test_that_goes_on() -> None:
    going_on = campaign(
        stop=False, decision="continue: arm 'A' has 40 trials, fewer than the minimum 500"
    )

    text = format_status({}, campaigns={"spring": going_on}, uplift={})

    assert row(text, "B")[0] == "B (leader)" and "chosen" not in text
    assert "continue: arm 'A' has 40 trials, fewer than the minimum 500" in text


def test_an_arm_with_nothing_spent_has_no_roi() -> None:
    free = campaign(arms=[arm("call", cost=0.0, roi=None)], leader="call", stop=False)

    assert row(format_status({}, campaigns={"c": free}, uplift={}), "call")[6] == "–"


def test_status_lists_campaigns_by_id() -> None:
    text = format_status(
        {}, campaigns={"winback": campaign("winback"), "spring": campaign()}, uplift={}
    )

    assert text.index("campaign spring") < text.index("campaign winback")


# --- the uplift section --------------------------------------------------------------------


def test_status_shows_the_uplift_of_acting_with_both_groups_and_its_interval() -> None:
    text = format_status({}, campaigns={}, uplift={"churn_risk|loyal": uplift("loyal")})

    assert "uplift of acting on alerts" in text
    assert row(text, "churn_risk") == [
        "churn_risk",
        "loyal",
        "59.8% (60 / 100)",  # acted on: retention (posterior mean), retained / alerts
        "31.8% (6 / 20)",  # control
        "+28.0 pp",  # uplift: acted-on minus control retention, in percentage points
        "[+5.6, +47.8]",  # its 95 % interval
        "99.3%",  # P(uplift > 0)
    ]


def test_status_shows_each_kinds_segments_by_name_then_all_segments() -> None:
    reports = {
        "churn_risk|": uplift(""),
        "churn_risk|new": uplift("new", uplift=-0.288, uplift_interval=(-0.784, 0.206)),
        "churn_risk|loyal": uplift("loyal"),
        "big_spender|": uplift("", kind="big_spender"),
    }

    text = format_status({}, campaigns={}, uplift=reports)

    shown = [cells[:2] for cells in rows(text) if cells[0] in ("churn_risk", "big_spender")]
    assert shown == [
        ["big_spender", "(all)"],
        ["churn_risk", "loyal"],
        ["churn_risk", "new"],
        ["churn_risk", "(all)"],
    ]
    assert row(text, "churn_risk")[4:6] == ["+28.0 pp", "[+5.6, +47.8]"]  # loyal
    assert ["-28.8 pp", "[-78.4, +20.6]"] in [cells[4:6] for cells in rows(text)]  # new


# --- nothing published yet ------------------------------------------------------------------


def test_status_says_when_no_campaign_or_uplift_has_been_published() -> None:
    text = format_status({}, campaigns={}, uplift={})

    assert "no campaign reports published yet" in text
    assert "uplift of acting on alerts: none published yet" in text


def test_status_shows_campaigns_and_uplift_between_the_workers_and_the_alerts() -> None:
    from tests.unit.test_status import WORKER, alert, report

    text = format_status(
        {WORKER: report()},
        [alert("c-42", "c-42 crossed churn risk 0.70")],
        campaigns={"spring": campaign()},
        uplift={"churn_risk|": uplift("")},
    )

    assert text.index("ROC AUC") < text.index("campaign spring")
    assert text.index("campaign spring") < text.index("uplift of acting on alerts")
    assert text.index("uplift of acting on alerts") < text.index("latest alerts")


def test_sections_not_read_are_left_out() -> None:
    text = format_status({})

    assert "campaign" not in text and "uplift" not in text
