"""Retention after alerts, acted on or held out (streamcrm.core.interventions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streamcrm.core.interventions import (
    AlertOutcomes,
    AlertSent,
    RetentionFigures,
    RetentionKey,
    RetentionTally,
    record_alert,
    record_purchase,
    settle,
    summed,
)

DAY = timedelta(days=1)
WINDOW = 30 * DAY
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def alert(alert_id: str, day: float, control: bool = False, segment: str = "loyal") -> AlertSent:
    return AlertSent(alert_id, "churn_risk", segment, T0 + day * DAY, control)


def settled_at(memory: AlertOutcomes, day: float) -> tuple[AlertOutcomes, RetentionTally]:
    at = T0 + day * DAY
    return settle(memory, at, WINDOW, at)


def test_an_alert_counts_as_retained_only_for_a_purchase_after_it_within_the_window() -> None:
    memory = AlertOutcomes()
    for sent in (alert("a1", 0), alert("a2", 100), alert("a3", 200)):
        memory = record_alert(memory, sent)
    for day in (0, 15, 131, 230):  # a1: day 15 (not day 0); a2: none (131 is too late)
        memory = record_purchase(memory, T0 + day * DAY)

    _, tally = settled_at(memory, 400)

    assert tally.groups == {RetentionKey("churn_risk", "loyal", "acted"): RetentionFigures(3, 2)}


def test_an_alert_is_counted_once_its_window_has_closed_and_not_before() -> None:
    memory = record_alert(AlertOutcomes(), alert("a1", 0))

    memory, early = settled_at(memory, 29)
    memory = record_purchase(memory, T0 + 29.5 * DAY)  # arrives before the window closes
    memory, closed = settled_at(memory, 30)
    _, again = settled_at(memory, 60)

    assert early == RetentionTally() == again
    assert closed.groups[RetentionKey("churn_risk", "loyal", "acted")] == RetentionFigures(1, 1)


def test_acted_and_control_alerts_are_kept_apart_per_kind_and_segment() -> None:
    memory = AlertOutcomes()
    for sent in (
        alert("a1", 0),
        alert("a2", 0, control=True),
        alert("a3", 0, segment="new"),
        alert("a4", 0, control=True, segment="new"),
    ):
        memory = record_alert(memory, sent)
    memory = record_purchase(memory, T0 + DAY)

    _, tally = settled_at(memory, 40)

    assert tally.acted_and_control("churn_risk") == (RetentionFigures(2, 2), RetentionFigures(2, 2))
    assert tally.acted_and_control("churn_risk", "new") == (
        RetentionFigures(1, 1),
        RetentionFigures(1, 1),
    )
    assert RetentionFigures(4, 1).rate == 0.25 and RetentionFigures().rate is None


events = st.lists(
    st.one_of(
        st.tuples(st.just("alert"), st.integers(0, 60), st.booleans()),
        st.tuples(st.just("purchase"), st.integers(0, 120), st.just(False)),
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(events, st.randoms(use_true_random=False))
def test_the_settled_figures_do_not_depend_on_the_order_events_arrived_in(
    history: list[tuple[str, int, bool]], rng: object
) -> None:
    """Everything arrives before the watermark passes it (what the allowed lateness is for);
    settling every ten days as the watermark moves on gives the same sums in any order."""

    def run(arrival: list[tuple[str, int, bool]]) -> RetentionTally:
        memory, parts = AlertOutcomes(), []
        by_day = sorted(arrival, key=lambda e: e[1])
        for day in range(0, 200, 10):
            for n, (kind, at, control) in enumerate(arrival):
                if by_day and at < day + 10 and (kind, at, control) in by_day:
                    by_day.remove((kind, at, control))
                    if kind == "alert":
                        memory = record_alert(memory, alert(f"a{at}-{n}", at, control))
                    else:
                        memory = record_purchase(memory, T0 + at * DAY)
            # Everything up to day + 10 is in: the watermark is at day.
            memory, part = settle(memory, T0 + day * DAY, WINDOW, T0 + day * DAY)
            parts.append(part)
        return summed(parts)

    shuffled = list(history)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    purchases = [at for kind, at, _ in history if kind == "purchase"]
    expected: dict[RetentionKey, RetentionFigures] = {}
    for kind, at, control in history:
        if kind == "alert" and at + 30 <= 190:  # settled by the last watermark
            key = alert("", at, control).key
            retained = any(at < bought <= at + 30 for bought in purchases)
            expected[key] = expected.get(key, RetentionFigures()) + RetentionFigures(
                1, int(retained)
            )

    assert run(history) == run(shuffled) == RetentionTally(expected)


# --- in the scoring core ---------------------------------------------------------------------


def test_a_churn_alert_is_settled_retained_once_the_watermark_passes_its_window() -> None:
    """score_event and sweep_customer keep the customer's churn alerts pending and count
    each, acted on or held out, once its window has closed."""
    from streamcrm.core.events import CancellationEvent, PurchaseEvent
    from streamcrm.core.experiments import is_control
    from streamcrm.core.scoring import ScoringConfig, score_event, sweep_customer
    from streamcrm.models import ModelBundle

    config, models = ScoringConfig(alert_control_share=0.5), ModelBundle()

    def order(n: int, day: float) -> PurchaseEvent:
        return PurchaseEvent(
            event_id=f"p{n}",
            customer_id="c1",
            order_id=f"o{n}",
            amount=20.0,
            items=1,
            channel="web",
            occurred_at=T0 + day * DAY,
        )

    state = score_event(None, order(0, 0), models, config).state
    cancel = CancellationEvent(event_id="x1", customer_id="c1", occurred_at=T0 + DAY)
    cancelled = score_event(state, cancel, models, config)
    (alert,) = [a for a in cancelled.alerts if a.kind == "churn_risk"]
    assert cancelled.score is not None
    back = score_event(cancelled.state, order(1, 11), models, config, watermark=T0 + 11 * DAY)
    assert back.retention == RetentionTally()  # the window is still open

    swept = sweep_customer(back.state, T0 + 100 * DAY, models, config)

    group = "control" if is_control("c1", alert.alert_id, 0.5) else "acted"
    key = RetentionKey("churn_risk", cancelled.score.segment_name, group)
    assert swept.retention == RetentionTally({key: RetentionFigures(1, 1)})
    assert swept.state.alert_outcomes.pending == ()


def test_a_cancelled_customer_who_never_comes_back_is_swept_when_their_alert_settles() -> None:
    """A cancellation ends the customer's re-scores and heartbeats, yet their churn alert is
    still owed a count: the sweep is due when its window closes, and that sweep counts it
    (not retained); nothing more is due after."""
    from streamcrm.core.events import CancellationEvent, PurchaseEvent
    from streamcrm.core.scoring import ScoringConfig, score_event, sweep_customer
    from streamcrm.models import ModelBundle

    config, models = ScoringConfig(alert_control_share=0.0), ModelBundle()
    first = PurchaseEvent(
        event_id="p0",
        customer_id="c1",
        order_id="o0",
        amount=20.0,
        items=1,
        channel="web",
        occurred_at=T0,
    )
    state = score_event(None, first, models, config).state
    cancel = CancellationEvent(event_id="x1", customer_id="c1", occurred_at=T0 + DAY)
    cancelled = score_event(state, cancel, models, config)
    (alert,) = [a for a in cancelled.alerts if a.kind == "churn_risk"]
    assert cancelled.score is not None

    assert cancelled.due_at == alert.raised_at + config.churn_window
    early = sweep_customer(cancelled.state, alert.raised_at + DAY, models, config)
    assert early.retention == RetentionTally()
    assert early.due_at == cancelled.due_at

    swept = sweep_customer(cancelled.state, cancelled.due_at, models, config)

    key = RetentionKey("churn_risk", cancelled.score.segment_name, "acted")
    assert swept.retention == RetentionTally({key: RetentionFigures(1, 0)})
    assert swept.due_at is None
