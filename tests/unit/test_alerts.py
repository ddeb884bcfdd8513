"""Alert rules: what a customer's scores raise, once, and when they may raise it again.

Every rule runs in event time (the score's ``as_of``): replaying the events gives the same
alerts with the same ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamcrm.core.alerts import (
    AlertMemory,
    AlertRules,
    drift_alert,
    evaluate_alerts,
    privacy_failure_alert,
)
from streamcrm.core.events import CancellationEvent, FeedbackEvent, PurchaseEvent
from streamcrm.core.records import Alert, ChurnDriver, CustomerScore, DeadLetter, ModelMetrics
from streamcrm.core.scoring import ScoringConfig, score_event
from streamcrm.core.state import SCORE_HISTORY_LENGTH, CustomerState
from streamcrm.errors import ConfigurationError
from streamcrm.models import ModelBundle
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from streamcrm.store.codec import _STATE_V1, pack, unpack

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RULES = AlertRules()  # churn 0.7 / 0.6, cooldown 7 days
DRIVERS = [
    ChurnDriver(feature="quiet_in_horizons", log_odds=0.9),
    ChurnDriver(feature="complaints", log_odds=0.4),
    ChurnDriver(feature="escalations", log_odds=0.2),
    ChurnDriver(feature="refund_rate", log_odds=0.1),
]


def score(day: float = 0.0, event_id: str | None = None, **fields: Any) -> CustomerScore:
    """A modest customer's score on ``day``: no alert of any kind unless ``fields`` say so."""
    values: dict[str, Any] = {
        "customer_id": "c1",
        "as_of": T0 + timedelta(days=day),
        "event_id": event_id or f"e-{day:g}",
        "churn_probability": 0.2,
        "cancelled": False,
        "segment_id": 1,
        "segment_name": "loyal",
        "satisfaction_mean": 0.8,
        "satisfaction_recent": 0.8,
        "csat_mean": 4.2,
        "nps": None,
        "currency": "USD",
        "customer_value": 600.0,
        "clv_simple": 480.0,
        "clv_to_acquisition_cost": None,
        "clv_discounted": 1500.0,
        "loyalty": 0.5,
        "health": 70.0,
        "recency_days": 3.0,
        "frequency": 4,
        "monetary": 200.0,
        "rfm_recency": 3,
        "rfm_frequency": 3,
        "rfm_monetary": 3,
        "population_satisfaction_mean": 0.75,
        "open_tickets": 0,
        "tickets_by_category": {},
        "escalations": 0,
        "sla_breaches": 0,
        "mean_first_response_hours": None,
        "mean_resolution_hours": None,
        "churn_drivers": DRIVERS,
        "model_version": "churn-10.segments-20.clv-1",
    }
    return CustomerScore(**{**values, **fields})


def run(
    scores: list[CustomerScore], rules: AlertRules = RULES, memory: AlertMemory | None = None
) -> list[list[Alert]]:
    """The alerts each score raised, fed one after another through the rules."""
    memory = memory or AlertMemory()
    raised = []
    for each in scores:
        memory, alerts = evaluate_alerts(memory, each, rules)
        raised.append(alerts)
    return raised


def kinds(raised: list[list[Alert]]) -> list[list[str]]:
    return [[alert.kind for alert in alerts] for alerts in raised]


# --- churn risk: hysteresis -----------------------------------------------------------------


def test_churn_alert_fires_when_risk_crosses_the_enter_threshold() -> None:
    raised = run([score(0, churn_probability=0.5), score(1, churn_probability=0.72)])

    assert kinds(raised) == [[], ["churn_risk"]]


def test_churn_alert_does_not_refire_while_risk_hovers_between_leave_and_enter() -> None:
    churn = [0.72, 0.65, 0.71, 0.61, 0.75, 0.68]
    days_apart = 10  # beyond the cooldown: only the hysteresis holds the alert back

    raised = run([score(i * days_apart, churn_probability=p) for i, p in enumerate(churn)])

    assert kinds(raised) == [["churn_risk"], [], [], [], [], []]


def test_churn_alert_rearms_once_risk_falls_below_the_leave_threshold() -> None:
    churn = [0.72, 0.55, 0.73]

    raised = run([score(i * 10, churn_probability=p) for i, p in enumerate(churn)])

    assert kinds(raised) == [["churn_risk"], [], ["churn_risk"]]


def test_the_cooldown_suppresses_a_refire_within_it_in_event_time() -> None:
    # Down below the leave line and up again, but only 3 days after the first alert.
    raised = run(
        [
            score(0, churn_probability=0.72),
            score(1, churn_probability=0.5),
            score(3, churn_probability=0.8),
        ]
    )

    assert kinds(raised) == [["churn_risk"], [], []]


def test_the_cooldown_allows_a_refire_after_it() -> None:
    raised = run(
        [
            score(0, churn_probability=0.72),
            score(1, churn_probability=0.5),
            score(7, churn_probability=0.8),  # exactly the 7-day cooldown later
        ]
    )

    assert kinds(raised) == [["churn_risk"], [], ["churn_risk"]]


def test_a_crossing_held_back_by_the_cooldown_is_alerted_after_it_if_risk_is_still_high() -> None:
    raised = run(
        [
            score(0, churn_probability=0.72),
            score(1, churn_probability=0.5),
            score(3, churn_probability=0.8),  # within the cooldown: held back
            score(8, churn_probability=0.78),  # still high once the cooldown is over
            score(9, churn_probability=0.79),  # and now alerted: no repeat
        ]
    )

    assert kinds(raised) == [["churn_risk"], [], [], ["churn_risk"], []]


def test_the_cooldown_is_event_time_so_a_replay_gives_the_same_alerts() -> None:
    history = [score(i * 2, churn_probability=p) for i, p in enumerate([0.8, 0.5, 0.8, 0.5, 0.8])]

    first, second = run(history), run(history)

    assert first == second
    assert [a.alert_id for alerts in first for a in alerts] == ["e-0:churn_risk", "e-8:churn_risk"]


def test_churn_alert_carries_the_customer_scores_thresholds_drivers_and_model_version() -> None:
    [alerts] = run([score(4, event_id="p-17", churn_probability=0.74, health=31.5)])

    [alert] = alerts
    assert alert.alert_id == "p-17:churn_risk"
    assert (alert.customer_id, alert.event_id) == ("c1", "p-17")
    assert alert.raised_at == T0 + timedelta(days=4)
    assert alert.severity == "warning"
    assert alert.scores["churn_probability"] == 0.74
    assert (alert.scores["churn_enter"], alert.scores["churn_leave"]) == (0.7, 0.6)
    assert alert.scores["health"] == 31.5
    assert alert.churn_drivers == DRIVERS[:3]
    assert alert.model_version == "churn-10.segments-20.clv-1"
    assert "0.74" in alert.message and "quiet_in_horizons" in alert.message


def test_churn_alert_is_critical_at_the_critical_threshold() -> None:
    [[alert]] = run([score(0, churn_probability=0.93)])

    assert alert.severity == "critical"


# --- cancellation ----------------------------------------------------------------------------


def cancelled(day: float, **fields: Any) -> CustomerScore:
    return score(day, churn_probability=1.0, cancelled=True, churn_drivers=[], **fields)


def test_a_cancellation_raises_one_critical_alert_even_right_after_a_churn_alert() -> None:
    raised = run([score(0, churn_probability=0.75), cancelled(1)])

    assert kinds(raised) == [["churn_risk"], ["churn_risk"]]
    alert = raised[1][0]
    assert alert.severity == "critical"
    assert alert.scores["reason"] == "cancellation"
    assert "cancelled" in alert.message


def test_a_cancelled_customer_gets_nothing_more_while_cancelled() -> None:
    later = [
        cancelled(20, sla_breaches=1),
        cancelled(40, segment_id=3, segment_name="hibernating"),
        cancelled(60, satisfaction_recent=0.2),
    ]

    raised = run([cancelled(0), *later])

    assert kinds(raised) == [["churn_risk"], [], [], []]


def test_a_cancellation_keeps_the_other_raised_kinds_raised() -> None:
    rules = AlertRules(value_at_risk_enter=1000.0, value_at_risk_leave=800.0)
    # Value at risk raised before the cancellation (0.5 × 2274), still over its leave line
    # when the customer comes back: not alerted a second time.
    raised = run(
        [score(0, churn_probability=0.5), cancelled(1), score(30, churn_probability=0.45)], rules
    )

    assert kinds(raised) == [["value_at_risk"], ["churn_risk"], []]


def test_a_customer_who_comes_back_is_alerted_on_a_new_cancellation() -> None:
    raised = run(
        [
            cancelled(0, sla_breaches=1),
            score(30, churn_probability=0.3, sla_breaches=1),  # back: nothing stale is raised
            cancelled(60, sla_breaches=1),
        ]
    )

    assert kinds(raised) == [["churn_risk"], [], ["churn_risk"]]


# --- the other kinds -------------------------------------------------------------------------


def test_value_at_risk_is_churn_times_the_clv_the_customer_brings_if_retained() -> None:
    rules = AlertRules(value_at_risk_enter=2000.0, value_at_risk_leave=1500.0)
    clv_if_retained = 600.0 * sum(1 / 1.1**t for t in range(1, 6))  # yearly value 600, 5 years

    [alerts] = run([score(0, churn_probability=0.9)], rules)

    [alert] = [a for a in alerts if a.kind == "value_at_risk"]
    assert alert.scores["clv_if_retained"] == pytest.approx(clv_if_retained)
    assert alert.scores["value_at_risk"] == pytest.approx(0.9 * clv_if_retained)
    assert (alert.scores["value_at_risk_enter"], alert.scores["currency"]) == (2000.0, "USD")
    assert alert.churn_drivers == DRIVERS[:3]
    assert alert.alert_id == "e-0:value_at_risk"


def test_value_at_risk_has_its_own_hysteresis() -> None:
    rules = AlertRules(
        churn_enter=1.0, churn_leave=1.0, value_at_risk_enter=1000.0, value_at_risk_leave=800.0
    )
    # CLV if retained is 600 × 3.79 = 2274: at risk 1137, 910 (hovering), 682 (out), 1137.
    churn = [0.5, 0.4, 0.3, 0.5]

    raised = run([score(i * 10, churn_probability=p) for i, p in enumerate(churn)], rules)

    assert kinds(raised) == [["value_at_risk"], [], [], ["value_at_risk"]]


def test_satisfaction_drop_fires_when_recent_falls_below_the_mean_by_the_margin() -> None:
    raised = run(
        [
            score(0, satisfaction_mean=0.8, satisfaction_recent=0.7),  # 0.10 below: not yet
            score(10, satisfaction_mean=0.78, satisfaction_recent=0.6),  # 0.18 below
            score(20, satisfaction_mean=0.77, satisfaction_recent=0.7),  # 0.07: still raised
            score(30, satisfaction_mean=0.77, satisfaction_recent=0.75),  # closed: re-armed
            score(40, satisfaction_mean=0.76, satisfaction_recent=0.5),
        ]
    )

    assert kinds(raised) == [[], ["satisfaction_drop"], [], [], ["satisfaction_drop"]]
    alert = raised[1][0]
    assert alert.scores["drop"] == pytest.approx(0.18)
    assert (alert.scores["satisfaction_recent"], alert.scores["satisfaction_mean"]) == (0.6, 0.78)
    assert alert.scores["satisfaction_drop_enter"] == 0.15
    assert alert.model_version == "churn-10.segments-20.clv-1"


def test_no_satisfaction_alert_before_any_rating() -> None:
    raised = run([score(0, satisfaction_mean=None, satisfaction_recent=None)])

    assert kinds(raised) == [[]]


def test_an_sla_breach_fires_when_the_breach_count_goes_up() -> None:
    raised = run(
        [
            score(0, sla_breaches=0),
            score(1, sla_breaches=1, open_tickets=1, mean_first_response_hours=30.0),
            score(2, sla_breaches=1, open_tickets=0),
            score(12, sla_breaches=3),
        ]
    )

    assert kinds(raised) == [[], ["sla_breach"], [], ["sla_breach"]]
    first, later = raised[1][0], raised[3][0]
    assert first.scores["sla_breaches"] == 1
    assert first.scores["mean_first_response_hours"] == 30.0
    assert later.scores["previous_sla_breaches"] == 1
    assert "2 more support tickets" in later.message


def test_a_second_sla_breach_within_the_cooldown_is_not_alerted_later() -> None:
    raised = run([score(0, sla_breaches=1), score(2, sla_breaches=2), score(10, sla_breaches=2)])

    assert kinds(raised) == [["sla_breach"], [], []]


def test_the_first_score_never_raises_a_segment_change() -> None:
    raised = run([score(0, segment_id=2, segment_name="champions")])

    assert kinds(raised) == [[]]


def test_a_segment_change_fires_once_the_new_segment_held_for_the_confirming_scores() -> None:
    rules = AlertRules(segment_confirm_scores=3)
    raised = run(
        [
            score(0, segment_id=1, segment_name="loyal"),
            score(1, segment_id=0, segment_name="champions"),
            score(2, segment_id=0, segment_name="champions"),
            score(3, segment_id=0, segment_name="champions"),
            score(4, segment_id=0, segment_name="champions"),
        ],
        rules,
    )

    assert kinds(raised) == [[], [], [], ["segment_change"], []]
    alert = raised[3][0]
    assert alert.severity == "info"
    assert alert.scores["previous_segment_name"] == "loyal"
    assert alert.scores["segment_name"] == "champions"
    assert "from segment loyal to champions" in alert.message


def test_a_customer_flipping_between_segments_raises_no_segment_change() -> None:
    flips = [
        score(day, segment_id=day % 2, segment_name=("loyal", "champions")[day % 2])
        for day in range(12)
    ]

    assert kinds(run(flips, AlertRules(segment_confirm_scores=2))) == [[]] * 12


def test_a_move_back_before_it_is_confirmed_starts_the_count_again() -> None:
    rules = AlertRules(segment_confirm_scores=2)
    raised = run(
        [
            score(0, segment_name="loyal"),
            score(1, segment_name="at_risk"),
            score(2, segment_name="loyal"),
            score(3, segment_name="at_risk"),
            score(4, segment_name="at_risk"),
        ],
        rules,
    )

    assert kinds(raised) == [[], [], [], [], ["segment_change"]]


def test_moving_into_a_declining_segment_is_a_warning() -> None:
    rules = AlertRules(segment_confirm_scores=1)
    raised = run([score(0), score(1, segment_id=3, segment_name="at_risk")], rules)

    assert raised[1][0].severity == "warning"


def test_a_confirmed_move_within_the_cooldown_is_alerted_after_it_if_it_still_holds() -> None:
    rules = AlertRules(segment_confirm_scores=1, cooldown=timedelta(days=7))
    raised = run(
        [
            score(0, segment_name="loyal"),
            score(1, segment_name="at_risk"),
            score(2, segment_name="hibernating"),
            score(9, segment_name="hibernating"),
        ],
        rules,
    )

    assert kinds(raised) == [[], ["segment_change"], [], ["segment_change"]]
    assert raised[3][0].scores["previous_segment_name"] == "at_risk"


def test_a_new_segment_id_under_the_same_name_is_not_a_change_to_act_on() -> None:
    raised = run([score(0, segment_id=1, segment_name="loyal"), score(1, segment_id=2)])

    assert kinds(raised) == [[], []]


def test_one_score_can_raise_several_kinds_in_a_fixed_order() -> None:
    rules = AlertRules(segment_confirm_scores=1)
    raised = run(
        [
            score(0),
            score(
                1,
                churn_probability=0.95,
                customer_value=5000.0,
                satisfaction_recent=0.5,
                sla_breaches=1,
                segment_id=3,
                segment_name="at_risk",
            ),
        ],
        rules,
    )

    assert kinds(raised)[1] == [
        "churn_risk",
        "value_at_risk",
        "satisfaction_drop",
        "sla_breach",
        "segment_change",
    ]
    assert len({alert.alert_id for alert in raised[1]}) == 5


# --- model drift -----------------------------------------------------------------------------


def metrics(drift: bool) -> ModelMetrics:
    return ModelMetrics(
        worker="streamcrm@host:1",
        published_at=T0,
        event_time=T0,
        model_version="churn-500.segments-900.clv-3",
        labelled_examples=500,
        churned_examples=100,
        roc_auc=0.81,
        log_loss=0.45,
        brier=0.15,
        recent_brier=0.24,
        drifts_detected=2,
        model_drift=drift,
        customers_scored=900,
        segment_shares={},
        events={},
    )


def test_model_drift_raises_a_model_wide_alert() -> None:
    now = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)

    alert = drift_alert(metrics(drift=True), now)

    assert alert is not None
    assert (alert.kind, alert.customer_id, alert.event_id) == ("model_drift", None, None)
    assert alert.raised_at == now
    assert alert.alert_id == "streamcrm@host:1:2:model_drift"
    assert alert.scores["recent_brier"] == 0.24 and alert.scores["brier"] == 0.15
    assert alert.model_version == "churn-500.segments-900.clv-3"


def test_no_drift_no_alert() -> None:
    assert drift_alert(metrics(drift=False), T0) is None


# --- rules and settings ----------------------------------------------------------------------


def test_a_band_whose_leave_threshold_is_above_enter_is_refused() -> None:
    with pytest.raises(ValueError, match="churn"):
        AlertRules(churn_enter=0.6, churn_leave=0.7)
    with pytest.raises(ConfigurationError, match="value_at_risk"):
        Settings(alert_value_at_risk_enter=100.0, alert_value_at_risk_leave=200.0)


def test_the_alert_settings_reach_the_scoring_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCRM_ALERT_CHURN_ENTER", "0.8")
    monkeypatch.setenv("STREAMCRM_ALERT_CHURN_LEAVE", "0.5")
    monkeypatch.setenv("STREAMCRM_ALERT_COOLDOWN_DAYS", "1.5")
    monkeypatch.setenv("STREAMCRM_DISCOUNT_RATE", "0.2")

    rules = Settings.from_env().scoring.alerts

    assert (rules.churn_enter, rules.churn_leave) == (0.8, 0.5)
    assert rules.cooldown == timedelta(days=1.5)
    assert rules.discount_rate == 0.2  # CLV if retained is discounted as the scores are


# --- in the scoring core ---------------------------------------------------------------------


def purchase(day: float, event_id: str, customer_id: str = "c1") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id,
        customer_id=customer_id,
        occurred_at=T0 + timedelta(days=day),
        order_id=event_id,
        amount=60.0,
        items=1,
        channel="web",
    )


def test_score_event_raises_the_alerts_of_its_score_and_remembers_them() -> None:
    models, config = ModelBundle(), ScoringConfig()
    state = score_event(None, purchase(0, "p1"), models, config).state

    cancellation = CancellationEvent(
        event_id="x1", customer_id="c1", occurred_at=T0 + timedelta(days=1)
    )
    scored = score_event(state, cancellation, models, config)

    assert [(a.alert_id, a.severity) for a in scored.alerts] == [("x1:churn_risk", "critical")]
    assert scored.state.alert_memory.cancelled
    assert scored.score is not None
    assert scored.alerts[0].model_version == scored.score.model_version


def test_a_duplicate_or_late_event_raises_no_alert() -> None:
    models, config = ModelBundle(), ScoringConfig()
    state = score_event(None, purchase(10, "p1"), models, config).state
    cancellation = CancellationEvent(
        event_id="x1", customer_id="c1", occurred_at=T0 + timedelta(days=10)
    )
    state = score_event(state, cancellation, models, config).state

    duplicate = score_event(state, cancellation, models, config)
    late = score_event(
        state,
        CancellationEvent(event_id="x0", customer_id="c1", occurred_at=T0),
        models,
        config,
    )

    assert (duplicate.duplicate, duplicate.alerts) == (True, ())
    assert (late.late_by is not None, late.alerts) == (True, ())


def test_score_event_keeps_the_newest_score_points_rounded_oldest_first() -> None:
    models, config = ModelBundle(), ScoringConfig()
    state: CustomerState | None = None
    scores: list[CustomerScore | None] = []
    for day in range(SCORE_HISTORY_LENGTH + 3):
        scored = score_event(state, purchase(day, f"p{day}"), models, config)
        state, scores = scored.state, [*scores, scored.score]

    assert state is not None
    history = state.score_history
    assert len(history) == SCORE_HISTORY_LENGTH
    assert [p.as_of for p in history] == [s.as_of for s in scores[-SCORE_HISTORY_LENGTH:] if s]
    newest, last_score = history[-1], scores[-1]
    assert last_score is not None
    assert newest.churn_probability == round(last_score.churn_probability, 4)
    assert newest.health == round(last_score.health, 2)
    assert newest.clv_discounted == round(last_score.clv_discounted, 2)
    assert newest.segment_name == last_score.segment_name
    assert set(type(newest).model_fields) == {
        "as_of",
        "churn_probability",
        "health",
        "clv_discounted",
        "segment_name",
    }


def test_a_state_stored_before_alerts_existed_still_loads() -> None:
    stored = pack(_STATE_V1)  # a state as stored before alert_memory and score_history

    state = CustomerState.model_validate_json(unpack(stored))

    assert state.alert_memory == AlertMemory()
    assert state.score_history == ()


def test_replaying_the_same_events_gives_the_same_alerts() -> None:
    events = simulate(customers=40, days=45, seed=11).events

    def alerts_of_a_run() -> list[str]:
        models, config = ModelBundle(), ScoringConfig()
        states: dict[str, CustomerState] = {}
        alerts = []
        for event in events:
            scored = score_event(states.get(event.customer_id), event, models, config)
            states[event.customer_id] = scored.state
            alerts += [alert.model_dump_json() for alert in scored.alerts]
        return alerts

    first = alerts_of_a_run()

    assert first, "the simulated stream raises alerts"
    assert alerts_of_a_run() == first


def test_feedback_that_drops_sharply_raises_a_satisfaction_alert_through_scoring() -> None:
    models, config = ModelBundle(), ScoringConfig()
    state: CustomerState | None = None
    alerts: list[Alert] = []
    # Six top ratings, then two of the lowest: after the first low one the EWMA (0.70) is
    # 0.16 below the mean (0.86); after the second the gap widens, but it is raised already.
    for day, rating in enumerate([5, 5, 5, 5, 5, 5, 1, 1]):
        feedback = FeedbackEvent(
            event_id=f"f{day}",
            customer_id="c1",
            occurred_at=T0 + timedelta(days=day),
            rating=rating,
            scale="csat",
            category="service",
        )
        scored = score_event(state, feedback, models, config)
        state, alerts = scored.state, alerts + list(scored.alerts)

    assert [a.alert_id for a in alerts if a.kind == "satisfaction_drop"] == ["f6:satisfaction_drop"]


def test_a_privacy_request_not_applied_raises_a_critical_alert_without_personal_data() -> None:
    letter = DeadLetter.of(
        b'{"type": "erasure", "customer_id": "alice"}',
        source_topic="crm.privacy",
        partition=2,
        offset=41,
        key=b"alice",
        error_type="EventValidationError",
        reason_code="schema:missing",
        reason="erasure.event_id: Field required",
    )
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    alert = privacy_failure_alert(letter, now)

    assert (alert.kind, alert.severity, alert.customer_id) == (
        "privacy_request_failed",
        "critical",
        None,
    )
    assert alert.alert_id == "crm.privacy[2]@41:privacy_request_failed"
    assert alert.scores["reason_code"] == "schema:missing"
    assert "crm.privacy:2:41" in alert.message and "re-publish" in alert.message
    assert "alice" not in alert.model_dump_json()
