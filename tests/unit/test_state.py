"""Behaviour of ``apply(state | None, event)``, the one pure step that moves a customer."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcrm.core.events import (
    CancellationEvent,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)
from streamcrm.core.state import (
    DEFAULT_RULES,
    MAX_TRACKED_TICKETS,
    RECENT_EVENT_IDS,
    SATISFACTION_EWMA_ALPHA,
    CustomerState,
    StateRules,
    Ticket,
    TicketTotals,
    apply,
)
from streamcrm.errors import EventValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ids = itertools.count()


def next_id() -> str:
    return f"e{next(_ids)}"


def purchase(
    at: datetime = T0,
    amount: float = 50.0,
    items: int = 1,
    cost: float | None = None,
    event_id: str = "",
) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=event_id or next_id(),
        customer_id="c1",
        order_id="o1",
        occurred_at=at,
        amount=amount,
        items=items,
        channel="web",
        cost=cost,
    )


def refund(at: datetime = T0, amount: float = 10.0) -> RefundEvent:
    return RefundEvent(
        event_id=next_id(), customer_id="c1", order_id="o1", occurred_at=at, amount=amount
    )


def rating(
    value: int, scale: Literal["csat", "nps"] = "csat", at: datetime = T0, event_id: str = ""
) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=event_id or next_id(),
        customer_id="c1",
        occurred_at=at,
        rating=value,
        scale=scale,
        category="service",
    )


SupportAction = Literal["opened", "first_response", "resolved", "escalated"]
SupportCategory = Literal["inquiry", "complaint", "feedback"]


def ticket(
    ticket_id: str,
    action: SupportAction,
    at: datetime = T0,
    category: SupportCategory = "complaint",
    priority: Literal["low", "normal", "high", "urgent"] = "normal",
    event_id: str | None = None,
) -> SupportEvent:
    return SupportEvent(
        event_id=event_id or next_id(),
        customer_id="c1",
        occurred_at=at,
        ticket_id=ticket_id,
        action=action,
        priority=priority,
        channel="chat",
        category=category,
    )


def cancellation(at: datetime = T0) -> CancellationEvent:
    return CancellationEvent(event_id=next_id(), customer_id="c1", occurred_at=at)


ANY_ORDER = StateRules(allowed_lateness=timedelta(days=365 * 100))
"""Rules under which no event is late, for tests about order-independence."""


def run(
    events: Iterable[Event], state: CustomerState | None = None, rules: StateRules = ANY_ORDER
) -> CustomerState:
    """Apply ``events`` in order and return the final state."""
    for event in events:
        state = apply(state, event, rules).state
    assert state is not None
    return state


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def days(n: float) -> timedelta:
    return timedelta(days=n)


# --- creation -------------------------------------------------------------------------------


def test_first_event_creates_the_state() -> None:
    event = rating(4, at=T0 + hours(3))

    transition = apply(None, event)

    assert transition.duplicate is False
    state = transition.state
    assert state.customer_id == "c1"
    assert state.first_seen_at == state.last_event_at == T0 + hours(3)
    assert state.events_applied == 1
    assert state.recent_event_ids == (event.event_id,)


def test_apply_returns_a_new_state_and_leaves_the_old_one_alone() -> None:
    before = run([purchase()])

    after = apply(before, purchase(amount=30.0)).state

    assert before.order_count == 1
    assert after.order_count == 2


def test_first_seen_and_last_event_span_every_event_time() -> None:
    state = run([rating(3, at=T0 + days(5)), refund(at=T0 + days(1)), rating(4, at=T0 + days(9))])

    assert state.first_seen_at == T0 + days(1)
    assert state.last_event_at == T0 + days(9)
    assert state.events_applied == 3


# --- purchases and refunds (RFM) -------------------------------------------------------------


def test_purchases_update_the_rfm_fields() -> None:
    state = run(
        [
            purchase(at=T0, amount=80.0, items=2),
            purchase(at=T0 + days(10), amount=20.0, items=3, cost=12.0),
        ]
    )

    assert state.order_count == 2
    assert state.gross_revenue == 100.0
    assert state.total_items == 5
    assert state.first_purchase_at == T0
    assert state.last_purchase_at == T0 + days(10)
    assert state.monetary == 100.0


def test_cost_is_summed_only_over_orders_that_report_it() -> None:
    state = run([purchase(amount=80.0), purchase(amount=20.0, cost=12.0)])

    assert state.cost_cents == 1200
    assert state.revenue_with_cost_cents == 2000


def test_refunds_reduce_monetary_but_not_gross_revenue() -> None:
    state = run([purchase(amount=100.0), refund(amount=30.0), refund(amount=5.0)])

    assert state.refund_count == 2
    assert state.refunded_amount == 35.0
    assert state.gross_revenue == 100.0
    assert state.monetary == 65.0
    assert state.order_count == 1


def test_monetary_never_goes_below_zero() -> None:
    state = run([purchase(amount=10.0), refund(amount=25.0)])

    assert state.monetary == 0.0


def test_refund_before_any_purchase_gives_zero_monetary() -> None:
    state = run([refund(amount=25.0)])

    assert state.monetary == 0.0
    assert state.order_count == 0
    assert state.first_purchase_at is None


def test_out_of_order_purchase_keeps_last_purchase_at_the_newest() -> None:
    state = run([purchase(at=T0 + days(20)), purchase(at=T0 + days(5))])

    assert state.last_purchase_at == T0 + days(20)
    assert state.first_purchase_at == T0 + days(5)
    assert state.last_event_at == T0 + days(20)


def test_purchase_days_count_each_utc_day_with_an_order_once() -> None:
    state = run(
        [
            purchase(at=T0),
            purchase(at=T0 + timedelta(hours=3)),
            purchase(at=T0 + days(1)),
            purchase(at=T0 + days(9)),
        ]
    )

    assert (state.order_count, state.purchase_days) == (4, 3)


def test_a_late_order_on_a_day_already_counted_is_not_a_new_transaction() -> None:
    rules = StateRules(allowed_lateness=days(2))
    state = run([purchase(at=T0 + days(10)), purchase(at=T0 + days(9))], rules=rules)
    state = run([purchase(at=T0 + days(10) - timedelta(hours=1))], state, rules)

    assert (state.order_count, state.purchase_days) == (3, 2)


def test_only_days_still_open_to_late_orders_are_remembered() -> None:
    rules = StateRules(allowed_lateness=days(2))
    state = run([purchase(at=T0 + days(d)) for d in (0, 5, 30, 31)], rules=rules)

    assert state.purchase_days == 4
    assert state.recent_purchase_days == tuple((T0 + days(d)).date().toordinal() for d in (30, 31))


# --- feedback --------------------------------------------------------------------------------


def test_feedback_updates_rating_count_and_normalised_sum() -> None:
    state = run([rating(5), rating(2), rating(10, "nps"), rating(3, "nps")])

    assert state.rating_count == 4
    assert state.rating_sum == pytest.approx(1.0 + 0.25 + 1.0 + 0.3)


def test_satisfaction_recent_is_the_exponentially_weighted_mean_of_ratings() -> None:
    ratings = [rating(5), rating(1), rating(4), rating(7, "nps"), rating(2)]
    normalised = [1.0, 0.0, 0.75, 0.7, 0.25]
    expected = normalised[0]
    for value in normalised[1:]:
        expected = SATISFACTION_EWMA_ALPHA * value + (1 - SATISFACTION_EWMA_ALPHA) * expected

    state = run(ratings)

    assert state.satisfaction_recent == pytest.approx(expected, abs=1e-12)


def test_first_rating_sets_satisfaction_recent_to_itself() -> None:
    state = run([purchase(), rating(4)])

    assert state.satisfaction_recent == pytest.approx(0.75)


def test_no_rating_leaves_satisfaction_recent_unknown() -> None:
    state = run([purchase()])

    assert state.satisfaction_recent is None
    assert state.rating_count == 0


def test_csat_ratings_are_summed_on_their_own_scale() -> None:
    state = run([rating(5), rating(2), rating(9, "nps")])

    assert state.csat_count == 2
    assert state.csat_sum == 7


@pytest.mark.parametrize(
    ("score", "bucket"),
    [
        (10, "nps_promoters"),
        (9, "nps_promoters"),
        (8, "nps_passives"),
        (7, "nps_passives"),
        (6, "nps_detractors"),
        (0, "nps_detractors"),
    ],
)
def test_nps_rating_lands_in_its_bucket(score: int, bucket: str) -> None:
    state = run([rating(score, "nps")])

    buckets = {
        "nps_promoters": state.nps_promoters,
        "nps_passives": state.nps_passives,
        "nps_detractors": state.nps_detractors,
    }
    assert buckets == {name: int(name == bucket) for name in buckets}
    assert state.csat_count == 0


def test_csat_ratings_never_count_as_nps() -> None:
    state = run([rating(5), rating(1)])

    assert state.nps_promoters == state.nps_passives == state.nps_detractors == 0


# --- support tickets -------------------------------------------------------------------------


def test_ticket_lifecycle_measures_response_and_resolution_hours() -> None:
    state = run(
        [
            ticket("t1", "opened", T0),
            ticket("t1", "first_response", T0 + hours(2)),
            ticket("t1", "resolved", T0 + hours(26)),
        ]
    )

    assert state.ticket_totals.opened == 1
    assert state.ticket_totals.resolved == 1
    assert state.open_tickets == 0
    assert state.ticket_totals.first_response_count == 1
    assert state.ticket_totals.first_response_seconds == 2 * 3600
    assert state.ticket_totals.resolution_count == 1
    assert state.ticket_totals.resolution_seconds == 26 * 3600


def test_open_ticket_is_tracked_until_resolved() -> None:
    state = run([ticket("t1", "opened", T0), ticket("t2", "opened", T0 + hours(1))])

    assert state.open_tickets == 2
    assert {tid for tid, t in state.tickets.items() if t.is_open} == {"t1", "t2"}
    assert state.tickets["t2"].opened_at == T0 + hours(1)
    assert state.tickets["t2"].first_response_at is None

    state = run([ticket("t1", "resolved", T0 + hours(5))], state)

    assert state.open_tickets == 1
    assert {tid for tid, t in state.tickets.items() if t.is_open} == {"t2"}


def test_only_the_first_response_is_measured() -> None:
    state = run(
        [
            ticket("t1", "opened", T0),
            ticket("t1", "first_response", T0 + hours(1)),
            ticket("t1", "first_response", T0 + hours(8)),
        ]
    )

    assert state.ticket_totals.first_response_count == 1
    assert state.ticket_totals.first_response_seconds == 3600
    assert state.tickets["t1"].first_response_at == T0 + hours(1)


def test_resolution_stamped_before_opening_counts_zero_hours() -> None:
    state = run([ticket("t1", "opened", T0 + hours(3)), ticket("t1", "resolved", T0)])

    assert state.ticket_totals.resolution_seconds == 0
    assert state.ticket_totals.resolution_count == 1


def test_response_to_an_unknown_ticket_is_not_measured() -> None:
    state = run([ticket("ghost", "first_response", T0)])

    assert state.ticket_totals.first_response_count == 0
    assert state.open_tickets == 0


def test_a_response_that_arrives_before_its_opening_is_measured_when_the_opening_comes() -> None:
    state = run([ticket("t1", "first_response", T0 + hours(3)), ticket("t1", "opened", T0)])

    assert state.ticket_totals.first_response_count == 1
    assert state.ticket_totals.first_response_seconds == 3 * 3600
    assert state.open_tickets == 1


def test_a_first_response_slower_than_its_priority_promises_is_an_sla_breach() -> None:
    state = run(
        [
            ticket("fast", "opened", T0, priority="urgent"),
            ticket("fast", "first_response", T0 + hours(0.5)),
            ticket("slow", "opened", T0, priority="urgent"),
            ticket("slow", "first_response", T0 + hours(2)),
            ticket("normal", "opened", T0, priority="normal"),
            ticket("normal", "first_response", T0 + hours(20)),
        ]
    )

    assert state.ticket_totals.sla_breaches == 1


def test_resolving_an_unknown_ticket_changes_no_counts() -> None:
    state = run([ticket("t1", "opened", T0), ticket("ghost", "resolved", T0 + hours(1))])

    assert state.ticket_totals.resolved == 0
    assert state.ticket_totals.resolution_count == 0
    assert state.open_tickets == 1


def test_resolving_a_ticket_twice_does_not_close_another() -> None:
    state = run(
        [
            ticket("t1", "opened", T0),
            ticket("t2", "opened", T0),
            ticket("t1", "resolved", T0 + hours(1)),
            ticket("t1", "resolved", T0 + hours(2)),
        ]
    )

    assert state.ticket_totals.resolved == 1
    assert {tid for tid, t in state.tickets.items() if t.is_open} == {"t2"}
    assert state.open_tickets == 1


def test_tickets_are_counted_by_category_when_opened() -> None:
    state = run(
        [
            ticket("t1", "opened", category="complaint"),
            ticket("t2", "opened", category="complaint"),
            ticket("t3", "opened", category="inquiry"),
            ticket("t3", "resolved", category="inquiry"),
        ]
    )

    assert state.ticket_totals.by_category == {"complaint": 2, "inquiry": 1}


def test_escalations_are_counted() -> None:
    state = run([ticket("t1", "opened"), ticket("t1", "escalated"), ticket("t1", "escalated")])

    assert state.escalations == 2
    assert state.open_tickets == 1


def test_open_ticket_map_is_bounded_and_forgets_the_oldest() -> None:
    opened = [ticket(f"t{i}", "opened", T0 + hours(i)) for i in range(MAX_TRACKED_TICKETS + 5)]

    state = run(opened)

    assert len(state.tickets) == MAX_TRACKED_TICKETS
    assert set(state.tickets) == {f"t{i}" for i in range(5, MAX_TRACKED_TICKETS + 5)}
    assert state.open_tickets == MAX_TRACKED_TICKETS  # the oldest are taken as abandoned


# --- cancellation ----------------------------------------------------------------------------


def test_cancellation_sets_cancelled_at() -> None:
    state = run([purchase(at=T0), cancellation(at=T0 + days(3))])

    assert state.cancelled_at == T0 + days(3)
    assert state.order_count == 1


def test_earliest_cancellation_wins() -> None:
    state = run([cancellation(at=T0 + days(3)), cancellation(at=T0 + days(1))])

    assert state.cancelled_at == T0 + days(1)


# --- idempotency -----------------------------------------------------------------------------


def test_duplicate_event_changes_nothing() -> None:
    event = purchase(amount=80.0)
    state = run([event, rating(4)])

    transition = apply(state, event)

    assert transition.duplicate is True
    assert transition.state == state


def test_same_event_id_with_different_content_is_still_a_duplicate() -> None:
    state = run([purchase(event_id="same", amount=80.0)])

    transition = apply(state, purchase(event_id="same", amount=999.0))

    assert transition.duplicate is True
    assert transition.state.gross_revenue == 80.0


def test_recent_event_ids_are_bounded_to_the_newest() -> None:
    events = [rating(3) for _ in range(RECENT_EVENT_IDS + 10)]

    state = run(events)

    assert state.recent_event_ids == tuple(e.event_id for e in events[-RECENT_EVENT_IDS:])
    assert state.events_applied == RECENT_EVENT_IDS + 10


def test_an_event_older_than_the_id_window_is_no_longer_recognised() -> None:
    first = purchase()
    state = run([first, *(rating(3) for _ in range(RECENT_EVENT_IDS))])

    assert apply(state, first).duplicate is False


def test_state_round_trips_through_json() -> None:
    state = run(
        [
            purchase(cost=3.0),
            rating(9, "nps"),
            ticket("t1", "opened"),
            ticket("t1", "first_response", T0 + hours(1)),
            cancellation(T0 + days(1)),
        ]
    )

    assert CustomerState.model_validate_json(state.model_dump_json()) == state


# --- properties ------------------------------------------------------------------------------

offsets = st.integers(min_value=0, max_value=365 * 24 * 60)
purchase_specs = st.tuples(
    st.just("purchase"), offsets, st.floats(min_value=0, max_value=10_000, allow_nan=False)
)
feedback_specs = st.tuples(st.just("feedback"), offsets, st.integers(min_value=1, max_value=5))


def build(specs: Sequence[tuple[str, int, float]]) -> list[Event]:
    """Distinct events from ``(kind, minutes after T0, amount or rating)`` specs."""
    events: list[Event] = []
    for index, (kind, minutes, value) in enumerate(specs):
        at = T0 + timedelta(minutes=minutes)
        if kind == "purchase":
            events.append(purchase(at=at, amount=value, event_id=f"p{index}"))
        else:
            events.append(rating(int(value), at=at, event_id=f"f{index}"))
    return events


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    specs=st.lists(st.one_of(purchase_specs, feedback_specs), min_size=1, max_size=20),
)
def test_aggregates_do_not_depend_on_event_order(
    data: st.DataObject, specs: list[tuple[str, int, float]]
) -> None:
    events = build(specs)
    shuffled = data.draw(st.permutations(events))

    in_order, reordered = run(events), run(shuffled)

    assert reordered.order_count == in_order.order_count
    assert reordered.purchase_days == in_order.purchase_days
    assert reordered.gross_revenue == pytest.approx(in_order.gross_revenue)
    assert reordered.rating_count == in_order.rating_count
    assert reordered.rating_sum == pytest.approx(in_order.rating_sum)
    assert reordered.first_purchase_at == in_order.first_purchase_at
    assert reordered.last_purchase_at == in_order.last_purchase_at
    assert reordered.first_seen_at == in_order.first_seen_at
    assert reordered.last_event_at == in_order.last_event_at


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(st.one_of(purchase_specs, feedback_specs), min_size=1, max_size=RECENT_EVENT_IDS)
)
def test_applying_every_event_twice_equals_applying_it_once(
    specs: list[tuple[str, int, float]],
) -> None:
    events = build(specs)
    once = run(events)

    assert run([e for e in events for _ in (0, 1)]) == once
    assert run([*events, *events]) == once


# --- order independence and lateness ---------------------------------------------------------

ticket_steps = st.tuples(
    st.integers(min_value=0, max_value=3),  # which ticket
    st.sampled_from(["opened", "first_response", "escalated", "resolved"]),
    offsets,
)
refund_amounts = st.floats(min_value=0, max_value=500, allow_nan=False)


def mixed_history(
    specs: Sequence[tuple[str, int, float]],
    steps: Sequence[tuple[int, str, int]],
    refunds: Sequence[float],
) -> list[Event]:
    """Purchases, ratings, refunds and ticket steps with distinct ids."""
    events = build(specs)
    events += [
        ticket(f"t{number}", action, T0 + timedelta(minutes=minutes), event_id=f"s{index}")  # type: ignore[arg-type]
        for index, (number, action, minutes) in enumerate(steps)
    ]
    events += [
        RefundEvent(
            event_id=f"r{index}",
            customer_id="c1",
            order_id=f"o{index}",
            amount=amount,
            currency="EUR",
            occurred_at=T0 + days(index),
        )
        for index, amount in enumerate(refunds)
    ]
    return events


def without_arrival_order(state: CustomerState) -> CustomerState:
    """The state less the one field that records arrival order (the duplicate-id window)."""
    return state.model_copy(update={"recent_event_ids": ()})


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    specs=st.lists(st.one_of(purchase_specs, feedback_specs), max_size=15),
    steps=st.lists(ticket_steps, max_size=12),
    refunds=st.lists(refund_amounts, max_size=3),
)
def test_any_order_of_the_same_events_gives_the_same_state(
    data: st.DataObject,
    specs: list[tuple[str, int, float]],
    steps: list[tuple[int, str, int]],
    refunds: list[float],
) -> None:
    events = mixed_history(specs, steps, refunds)
    if not events:
        return
    in_time_order = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    shuffled = data.draw(st.permutations(events))

    assert without_arrival_order(run(shuffled)) == without_arrival_order(run(in_time_order))


def test_money_is_converted_to_cents_of_the_reporting_currency() -> None:
    state = run(
        [
            PurchaseEvent(
                event_id="eur",
                customer_id="c1",
                order_id="o1",
                amount=10.0,
                currency="EUR",
                items=1,
                channel="web",
                occurred_at=T0,
            ),
            purchase(amount=0.1),
            purchase(amount=0.2),
        ]
    )

    assert state.gross_cents == 1080 + 10 + 20
    assert state.gross_revenue == 11.1


def test_an_unknown_currency_is_a_validation_error() -> None:
    with pytest.raises(EventValidationError, match="unknown currency 'XYZ'"):
        run([purchase(amount=1.0).model_copy(update={"currency": "XYZ"})])


LATENESS = StateRules(allowed_lateness=timedelta(hours=48))


def test_an_event_within_the_allowed_lateness_is_applied() -> None:
    state = run([purchase(at=T0 + days(10)), purchase(at=T0 + days(9))], rules=LATENESS)

    assert state.order_count == 2
    assert state.late_events == 0
    assert state.first_purchase_at == T0 + days(9)


def test_an_event_later_than_the_allowed_lateness_is_counted_not_applied() -> None:
    newest = run([purchase(at=T0 + days(10))], rules=LATENESS)
    late = purchase(at=T0 + days(7))

    transition = apply(newest, late, LATENESS)

    assert transition.late_by == days(3)
    assert not transition.applied
    assert transition.state.order_count == 1
    assert transition.state.late_events == 1
    assert apply(transition.state, late, LATENESS).duplicate  # redelivery is not counted twice


def test_lateness_is_measured_within_a_topic_not_across_topics() -> None:
    # A rating from long before the newest purchase is on another topic, consumed separately:
    # it is not late as long as it is not behind the newest *feedback* event.
    state = run([purchase(at=T0 + days(30)), rating(4, at=T0)], rules=LATENESS)

    assert state.late_events == 0
    assert state.rating_count == 1


def test_recent_satisfaction_follows_event_time_not_arrival() -> None:
    early, late = rating(1, at=T0), rating(5, at=T0 + days(1))

    assert run([late, early]).satisfaction_recent == run([early, late]).satisfaction_recent


def cents(amount: float, rate: float = 1.0) -> int:
    """Half-even cents, computed here independently of StateRules."""
    return int(
        (Decimal(repr(amount)) * Decimal(repr(rate)) * 100).quantize(
            Decimal(1), rounding=ROUND_HALF_EVEN
        )
    )


@settings(max_examples=80, deadline=None)
@given(
    specs=st.lists(st.one_of(purchase_specs, feedback_specs), max_size=15),
    steps=st.lists(ticket_steps, max_size=12),
    refunds=st.lists(refund_amounts, max_size=3),
)
def test_aggregates_match_a_direct_computation_from_the_raw_events(
    specs: list[tuple[str, int, float]],
    steps: list[tuple[int, str, int]],
    refunds: list[float],
) -> None:
    events = mixed_history(specs, steps, refunds)
    if not events:
        return
    state = run(events)

    purchases = [e for e in events if isinstance(e, PurchaseEvent)]
    ratings = [e for e in events if isinstance(e, FeedbackEvent)]
    assert state.order_count == len(purchases)
    assert state.gross_cents == sum(cents(e.amount) for e in purchases)
    assert state.refunded_cents == sum(cents(amount, 1.08) for amount in refunds)
    assert state.csat_count == len(ratings)
    assert state.csat_sum == sum(e.rating for e in ratings)

    first: dict[tuple[str, str], datetime] = {}
    for e in events:
        if isinstance(e, SupportEvent) and e.action != "escalated":
            key = (e.ticket_id, e.action)
            first[key] = min(first.get(key, e.occurred_at), e.occurred_at)
    opened = {t: at for (t, action), at in first.items() if action == "opened"}
    answered = {t: first[(t, "first_response")] for t in opened if (t, "first_response") in first}
    resolved = {t: first[(t, "resolved")] for t in opened if (t, "resolved") in first}
    totals = state.ticket_totals
    assert totals.opened == len(opened)
    assert totals.resolved == len(resolved)
    assert totals.first_response_count == len(answered)
    assert totals.first_response_seconds == sum(
        max(int((answered[t] - opened[t]).total_seconds()), 0) for t in answered
    )
    assert totals.resolution_seconds == sum(
        max(int((resolved[t] - opened[t]).total_seconds()), 0) for t in resolved
    )
    assert state.open_tickets == len(opened) - len(resolved)
    assert state.escalations == sum(
        1 for e in events if isinstance(e, SupportEvent) and e.action == "escalated"
    )


def test_the_earliest_reported_acquisition_cost_is_kept_in_any_order() -> None:
    first = purchase(at=T0).model_copy(update={"acquisition_cost": 120.0})
    later = purchase(at=T0 + days(1)).model_copy(update={"acquisition_cost": 80.0})

    for order in ([first, later], [later, first]):
        acquisition = run(order).acquisition
        assert acquisition is not None and acquisition.cents == 12_000


within_two_days = st.integers(min_value=0, max_value=47 * 60)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    specs=st.lists(
        st.one_of(
            st.tuples(st.just("purchase"), within_two_days, st.floats(0, 1_000)),
            st.tuples(st.just("feedback"), within_two_days, st.integers(1, 5)),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_a_stream_shuffled_within_the_allowed_lateness_gives_the_ordered_state(
    data: st.DataObject, specs: list[tuple[str, int, float]]
) -> None:
    events = build(specs)  # all within 47 h of each other: any order is within lateness
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    shuffled = data.draw(st.permutations(events))

    in_order = run(ordered, rules=DEFAULT_RULES)
    reordered = run(shuffled, rules=DEFAULT_RULES)

    assert reordered.late_events == 0
    assert without_arrival_order(reordered) == without_arrival_order(in_order)


_moment = st.one_of(  # whole hours: a wait of exactly an SLA's length is common
    st.none(),
    st.integers(0, 80).map(lambda h: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=h)),
)
_tickets = st.dictionaries(
    st.text("abc", min_size=1, max_size=3),
    st.builds(
        Ticket,
        opened_at=_moment,
        priority=st.sampled_from(["low", "normal", "high", "urgent"]),
        category=st.one_of(st.none(), st.sampled_from(["billing", "inquiry", "complaint"])),
        first_response_at=_moment,
        resolved_at=_moment,
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(tickets=_tickets, forgotten=_tickets)
def test_ticket_totals_are_the_forgotten_plus_each_remembered_tickets_totals(
    tickets: dict[str, Ticket], forgotten: dict[str, Ticket]
) -> None:
    forgotten_totals = TicketTotals()
    for ticket in forgotten.values():
        forgotten_totals = forgotten_totals + ticket.totals()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = CustomerState(
        customer_id="c",
        first_seen_at=t0,
        last_event_at=t0,
        tickets=tickets,
        forgotten_tickets=forgotten_totals,
    )

    expected = forgotten_totals
    for ticket in tickets.values():
        expected = expected + ticket.totals()
    assert state.ticket_totals == expected
    assert list(state.ticket_totals.by_category) == list(expected.by_category)
