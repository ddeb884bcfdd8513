"""Per-customer state and the one pure step that moves it: ``apply(state | None, event)``.

The state holds running sums, never raw event lists, so it stays small and its size does not
grow with a customer's history. Everything is in event time: nothing here reads a clock.

Idempotency: the ids of the newest ``RECENT_EVENT_IDS`` events are kept inside the state
itself, so the duplicate check and the update are saved together in one write.

>>> from datetime import datetime, UTC
>>> from streamcrm.events import PurchaseEvent
>>> order = PurchaseEvent(event_id="e1", customer_id="c1", order_id="o1", amount=80.0,
...                       items=2, channel="web", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
>>> state = apply(None, order).state
>>> state.order_count, state.gross_revenue
(1, 80.0)
>>> apply(state, order).duplicate
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from streamcrm.events import (
    CancellationEvent,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)

RECENT_EVENT_IDS = 64
"""How many recent event ids each customer remembers for duplicate detection."""

MAX_TRACKED_TICKETS = 32
"""Open tickets tracked per customer; beyond this the oldest is taken as abandoned."""

SATISFACTION_EWMA_ALPHA = 0.3
"""Weight of the newest rating in the recent-satisfaction EWMA."""

SECONDS_PER_HOUR = 3600.0


class TicketTimes(BaseModel):
    """When a still-tracked ticket was opened and first answered."""

    model_config = ConfigDict(frozen=True)

    opened_at: datetime
    first_response_at: datetime | None = None


class PendingSnapshot(BaseModel):
    """The features a churn score was made from, kept until the outcome is known.

    Learning later from exactly the features that were scored prevents leakage.
    """

    model_config = ConfigDict(frozen=True)

    scored_at: datetime
    features: dict[str, float]


class CustomerState(BaseModel):
    """Everything streamcrm remembers about one customer (one Redis hash)."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    first_seen_at: datetime
    last_event_at: datetime
    events_applied: int = 0
    # Purchases (RFM): frequency = order_count, monetary = gross_revenue - refunded_amount.
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    order_count: int = 0
    gross_revenue: float = 0.0
    total_items: int = 0
    known_cost: float = 0.0
    revenue_with_cost: float = 0.0
    refund_count: int = 0
    refunded_amount: float = 0.0
    # Feedback: every rating normalised to [0, 1] first (see FeedbackEvent.normalised_rating).
    rating_count: int = 0
    rating_sum: float = 0.0
    satisfaction_recent: float | None = None
    csat_count: int = 0
    csat_sum: int = 0
    nps_promoters: int = 0
    nps_passives: int = 0
    nps_detractors: int = 0
    # Support.
    tickets_opened: int = 0
    tickets_resolved: int = 0
    escalations: int = 0
    tickets_by_category: dict[str, int] = Field(default_factory=dict)
    open_ticket_times: dict[str, TicketTimes] = Field(default_factory=dict)
    first_response_count: int = 0
    first_response_hours_sum: float = 0.0
    resolution_count: int = 0
    resolution_hours_sum: float = 0.0
    # Explicit churn.
    cancelled_at: datetime | None = None
    # Bookkeeping.
    recent_event_ids: tuple[str, ...] = ()
    pending_snapshots: tuple[PendingSnapshot, ...] = ()

    @property
    def monetary(self) -> float:
        """Net monetary value: gross revenue minus refunds, never below zero."""
        return max(self.gross_revenue - self.refunded_amount, 0.0)

    @property
    def open_tickets(self) -> int:
        """Tickets opened and not yet resolved (at most ``MAX_TRACKED_TICKETS``)."""
        return len(self.open_ticket_times)


@dataclass(frozen=True)
class Transition:
    """The result of one ``apply``: the new state, and whether the event was a duplicate."""

    state: CustomerState
    duplicate: bool


def apply(state: CustomerState | None, event: Event) -> Transition:
    """Apply one event to a customer's state; a repeated ``event_id`` changes nothing."""
    if state is None:
        state = CustomerState(
            customer_id=event.customer_id,
            first_seen_at=event.occurred_at,
            last_event_at=event.occurred_at,
        )
    elif event.event_id in state.recent_event_ids:
        return Transition(state=state, duplicate=True)

    changes = _changes_for(state, event)
    changes.update(
        first_seen_at=min(state.first_seen_at, event.occurred_at),
        last_event_at=max(state.last_event_at, event.occurred_at),
        events_applied=state.events_applied + 1,
        recent_event_ids=(state.recent_event_ids + (event.event_id,))[-RECENT_EVENT_IDS:],
    )
    return Transition(state=state.model_copy(update=changes), duplicate=False)


def _changes_for(state: CustomerState, event: Event) -> dict[str, object]:
    match event:
        case PurchaseEvent():
            return _purchase_changes(state, event)
        case RefundEvent():
            return {
                "refund_count": state.refund_count + 1,
                "refunded_amount": state.refunded_amount + event.amount,
            }
        case FeedbackEvent():
            return _feedback_changes(state, event)
        case SupportEvent():
            return _support_changes(state, event)
        case CancellationEvent():
            at = event.occurred_at
            return {
                "cancelled_at": at if state.cancelled_at is None else min(state.cancelled_at, at)
            }
    raise TypeError(f"unknown event type {type(event).__name__}")  # pragma: no cover


def _purchase_changes(state: CustomerState, event: PurchaseEvent) -> dict[str, object]:
    at = event.occurred_at
    changes: dict[str, object] = {
        "order_count": state.order_count + 1,
        "gross_revenue": state.gross_revenue + event.amount,
        "total_items": state.total_items + event.items,
        "first_purchase_at": at
        if state.first_purchase_at is None
        else min(state.first_purchase_at, at),
        "last_purchase_at": at
        if state.last_purchase_at is None
        else max(state.last_purchase_at, at),
    }
    if event.cost is not None:
        changes["known_cost"] = state.known_cost + event.cost
        changes["revenue_with_cost"] = state.revenue_with_cost + event.amount
    return changes


def _feedback_changes(state: CustomerState, event: FeedbackEvent) -> dict[str, object]:
    score = event.normalised_rating
    recent = state.satisfaction_recent
    changes: dict[str, object] = {
        "rating_count": state.rating_count + 1,
        "rating_sum": state.rating_sum + score,
        "satisfaction_recent": score
        if recent is None
        else SATISFACTION_EWMA_ALPHA * score + (1 - SATISFACTION_EWMA_ALPHA) * recent,
    }
    if event.scale == "csat":
        changes["csat_count"] = state.csat_count + 1
        changes["csat_sum"] = state.csat_sum + event.rating
    elif event.rating >= 9:
        changes["nps_promoters"] = state.nps_promoters + 1
    elif event.rating >= 7:
        changes["nps_passives"] = state.nps_passives + 1
    else:
        changes["nps_detractors"] = state.nps_detractors + 1
    return changes


def _support_changes(state: CustomerState, event: SupportEvent) -> dict[str, object]:
    tickets = dict(state.open_ticket_times)
    ticket = tickets.get(event.ticket_id)
    changes: dict[str, object] = {}
    match event.action:
        case "opened":
            by_category = dict(state.tickets_by_category)
            by_category[event.category] = by_category.get(event.category, 0) + 1
            changes["tickets_opened"] = state.tickets_opened + 1
            changes["tickets_by_category"] = by_category
            tickets[event.ticket_id] = TicketTimes(opened_at=event.occurred_at)
            if len(tickets) > MAX_TRACKED_TICKETS:
                oldest = min(tickets, key=lambda ticket_id: tickets[ticket_id].opened_at)
                del tickets[oldest]
        case "first_response" if ticket is not None and ticket.first_response_at is None:
            hours = _hours_between(ticket.opened_at, event.occurred_at)
            changes["first_response_count"] = state.first_response_count + 1
            changes["first_response_hours_sum"] = state.first_response_hours_sum + hours
            tickets[event.ticket_id] = ticket.model_copy(
                update={"first_response_at": event.occurred_at}
            )
        case "escalated":
            changes["escalations"] = state.escalations + 1
        case "resolved" if ticket is not None:
            # Resolving an unknown or already-resolved ticket changes nothing: a repeated
            # "resolved" must not close the customer's other tickets.
            hours = _hours_between(ticket.opened_at, event.occurred_at)
            changes["tickets_resolved"] = state.tickets_resolved + 1
            changes["resolution_count"] = state.resolution_count + 1
            changes["resolution_hours_sum"] = state.resolution_hours_sum + hours
            del tickets[event.ticket_id]
    changes["open_ticket_times"] = tickets
    return changes


def _hours_between(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0) / SECONDS_PER_HOUR
