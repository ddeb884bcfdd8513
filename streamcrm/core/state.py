"""Per-customer state and the one pure step that moves it: ``apply(state | None, event)``.

The state holds running sums, never raw event lists, so it stays small whatever the length of
a customer's history. Everything is in event time: nothing here reads a clock.

**Order does not matter.** A customer's events arrive on three topics that are consumed
independently, so the order in which they are applied is not the order they happened in.
Every aggregate is therefore built to give the same result in any order:

- money is summed as integer cents of the reporting currency, counts and ratings as integers,
  response and resolution times as integer seconds (exact, unlike float sums);
- first/last times are min/max;
- recent satisfaction is an EWMA computed over the ``RECENT_RATINGS`` newest ratings *sorted by
  event time*, not folded in arrival order;
- a ticket keeps the earliest time of each step, and its figures are derived from those times
  when read, so no arrival order can change them.

**Lateness.** Within one topic, Kafka keeps a customer's events in the order they were
produced. An event older than the newest event of its topic by more than the allowed lateness
is *late*: it is counted (``late_events``) and not applied, and the pipeline reports it.

**Idempotency.** The ids of the newest ``RECENT_EVENT_IDS`` events are kept inside the state,
so the duplicate check and the update are saved together in one write.

>>> from datetime import datetime, UTC
>>> from streamcrm.core.events import PurchaseEvent
>>> order = PurchaseEvent(event_id="e1", customer_id="c1", order_id="o1", amount=80.0,
...                       items=2, channel="web", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
>>> state = apply(None, order).state
>>> state.order_count, state.gross_revenue
(1, 80.0)
>>> apply(state, order).duplicate
True
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from streamcrm.core.events import (
    BaseEvent,
    CancellationEvent,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)
from streamcrm.core.interventions import AlertOutcomes
from streamcrm.core.marketing import (
    DEFAULT_ATTRIBUTION_WINDOW,
    MarketingMemory,
    Purchase,
    Tally,
    forget_before,
)
from streamcrm.core.marketing import record_purchase as record_attributable_purchase
from streamcrm.core.records import AlertKind, CustomerScore
from streamcrm.core.trusted import unvalidated, with_changes
from streamcrm.errors import EventValidationError

RECENT_EVENT_IDS = 64
"""How many recent event ids each customer remembers for duplicate detection."""

MAX_TRACKED_TICKETS = 16
"""Tickets remembered per customer. Beyond this the oldest resolved ticket is forgotten first,
then the oldest open one (taken as abandoned)."""

RECENT_RATINGS = 16
"""Ratings kept (newest by event time) for the recent-satisfaction EWMA."""

SATISFACTION_EWMA_ALPHA = 0.3
"""Weight of the newest rating in the recent-satisfaction EWMA."""

FIRST_RESPONSE_SLA = MappingProxyType(
    {
        "urgent": timedelta(hours=1),
        "high": timedelta(hours=4),
        "normal": timedelta(hours=24),
        "low": timedelta(hours=72),
    }
)
"""Time to first response each ticket priority is promised; slower is an SLA breach."""

DEFAULT_EXCHANGE_RATES = MappingProxyType(
    {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CHF": 1.13, "CAD": 0.73, "AUD": 0.66, "JPY": 0.0067}
)
"""Units of the reporting currency (USD) per unit of each accepted currency."""

TOPIC_OF_EVENT_TYPE = MappingProxyType(
    {
        "purchase": "purchases",
        "refund": "purchases",
        "feedback": "feedback",
        "support": "support",
        "cancellation": "support",
    }
)
"""The input topic kind that carries each event type (lateness is measured per topic)."""

SECONDS_PER_HOUR = 3600.0

SCORE_HISTORY_LENGTH = 8
"""Score points kept per customer (the newest), for the customer page's history chart.

Redis memory per customer is budgeted at 1 KiB or less (docs/performance.md) and the state is
saved with every event, so the history is short: a full one adds about 160 bytes to the
stored state (measured on simulated customers; twelve points would add about 225). Longer
histories belong to a consumer of the scores topic, not to the state."""

PROBABILITY_DECIMALS = 4
"""Decimals of a point's churn probability. Points are rounded because short digits deflate
far better than a float's seventeen: a full history stores in about 160 bytes, not 290."""
POINT_DECIMALS = 2
"""Decimals of a point's health (0-100, so the same precision) and CLV (cents)."""


@dataclass(frozen=True)
class StateRules:
    """The configurable rules of ``apply``: allowed lateness, currency conversion and the
    attribution window of campaign touches."""

    allowed_lateness: timedelta = timedelta(days=2)
    attribution_window: timedelta = DEFAULT_ATTRIBUTION_WINDOW
    """How long after a campaign touch a purchase is attributed to it."""
    reporting_currency: str = "USD"
    exchange_rates: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EXCHANGE_RATES)

    def to_reporting_cents(self, amount: float, currency: str) -> int:
        """``amount`` in ``currency`` as whole cents of the reporting currency (half-even).

        >>> StateRules().to_reporting_cents(10.0, "EUR")
        1080
        >>> StateRules().to_reporting_cents(1.0, "XYZ")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        streamcrm.errors.EventValidationError: unknown currency 'XYZ' (accepted: AUD, CAD, ...)
        """
        rate = self.exchange_rates.get(currency)
        if rate is None:
            accepted = ", ".join(sorted(self.exchange_rates))
            raise EventValidationError(
                f"unknown currency {currency!r} (accepted: {accepted})", code="unknown_currency"
            )
        cents = Decimal(repr(amount)) * Decimal(repr(rate)) * 100
        return int(cents.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


DEFAULT_RULES = StateRules()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TicketTotals(_Frozen):
    """Support figures summed over tickets (all counts and integer seconds: exact in any order)."""

    opened: int = 0
    resolved: int = 0
    first_response_count: int = 0
    first_response_seconds: int = 0
    resolution_count: int = 0
    resolution_seconds: int = 0
    sla_breaches: int = 0
    by_category: dict[str, int] = Field(default_factory=dict)

    def __add__(self, other: TicketTotals) -> TicketTotals:
        categories = dict(self.by_category)
        for category, count in other.by_category.items():
            categories[category] = categories.get(category, 0) + count
        return TicketTotals(
            opened=self.opened + other.opened,
            resolved=self.resolved + other.resolved,
            first_response_count=self.first_response_count + other.first_response_count,
            first_response_seconds=self.first_response_seconds + other.first_response_seconds,
            resolution_count=self.resolution_count + other.resolution_count,
            resolution_seconds=self.resolution_seconds + other.resolution_seconds,
            sla_breaches=self.sla_breaches + other.sla_breaches,
            by_category=categories,
        )

    @classmethod
    def over(cls, tickets: Collection[Ticket], start: TicketTotals | None = None) -> TicketTotals:
        """``start`` plus each ticket's figures, added up in one pass of integers (one model
        built, not one per ticket): a ticket counts once opened; its first response, with
        the wait against its priority's SLA, once answered; its resolution once resolved."""
        start = cls() if start is None else start
        if not tickets:
            return start
        opened, resolved = start.opened, start.resolved
        responses, response_seconds = start.first_response_count, start.first_response_seconds
        resolutions, resolution_seconds = start.resolution_count, start.resolution_seconds
        breaches, categories = start.sla_breaches, dict(start.by_category)
        for ticket in tickets:
            begun, answered, closed = ticket.opened_at, ticket.first_response_at, ticket.resolved_at
            if begun is None:
                continue
            opened += 1
            if answered is not None:
                waited = answered - begun
                responses += 1
                response_seconds += _seconds(waited)
                limit = FIRST_RESPONSE_SLA.get(ticket.priority, FIRST_RESPONSE_SLA["normal"])
                breaches += waited > limit
            if closed is not None:
                resolved += 1
                resolutions += 1
                resolution_seconds += _seconds(closed - begun)
            if ticket.category:
                categories[ticket.category] = categories.get(ticket.category, 0) + 1
        return unvalidated(
            cls,
            opened=opened,
            resolved=resolved,
            first_response_count=responses,
            first_response_seconds=response_seconds,
            resolution_count=resolutions,
            resolution_seconds=resolution_seconds,
            sla_breaches=breaches,
            by_category=categories,
        )


class Ticket(_Frozen):
    """What is known of one ticket. Its steps may arrive in any order, so each time is the
    earliest seen for its step, and the ticket's figures are derived from the times only when
    read (:meth:`totals`): no step's arrival order can change them."""

    opened_at: datetime | None = None
    opened_by: str | None = None
    priority: str = "normal"
    category: str | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and self.resolved_at is None

    def eviction_order(self, ticket_id: str) -> tuple[bool, datetime, str]:
        """Resolved tickets go first, then the oldest."""
        known = [t for t in (self.opened_at, self.first_response_at, self.resolved_at) if t]
        return (self.is_open, min(known), ticket_id)

    def totals(self) -> TicketTotals:
        """This ticket's contribution to the customer's support figures."""
        return TicketTotals.over((self,))


class AcquisitionCost(_Frozen):
    """What acquiring the customer cost, as first reported (earliest event wins)."""

    occurred_at: datetime
    event_id: str
    cents: int


class Rating(_Frozen):
    """One rating, normalised to [0, 1], with the time and id that order it."""

    occurred_at: datetime
    event_id: str
    score: float


class PendingSnapshot(_Frozen):
    """The features a churn score was made from, kept until the outcome is known.

    Learning later from exactly the features that were scored prevents leakage.
    """

    scored_at: datetime
    features: dict[str, float]
    purchased: bool = False
    """Whether the customer purchased within the churn window after ``scored_at``."""


class ScorePoint(_Frozen):
    """One point of a customer's score history: the figures the customer page charts."""

    as_of: datetime
    churn_probability: float
    health: float
    clv_discounted: float
    segment_name: str

    @classmethod
    def of(cls, score: CustomerScore) -> ScorePoint:
        """The point of ``score``, rounded (see ``PROBABILITY_DECIMALS``)."""
        return unvalidated(
            cls,
            as_of=score.as_of,
            churn_probability=round(score.churn_probability, PROBABILITY_DECIMALS),
            health=round(score.health, POINT_DECIMALS),
            clv_discounted=round(score.clv_discounted, POINT_DECIMALS),
            segment_name=score.segment_name,
        )


def with_score_point(
    history: tuple[ScorePoint, ...], score: CustomerScore
) -> tuple[ScorePoint, ...]:
    """``history`` with ``score``'s point appended, the newest ``SCORE_HISTORY_LENGTH`` kept.

    Scores come in the order their events were applied, and ``as_of`` never goes back (it is
    the newest event time applied), so the history is oldest first.
    """
    return (*history, ScorePoint.of(score))[-SCORE_HISTORY_LENGTH:]


class AlertMemory(BaseModel):
    """What the rules remember of one customer between scores (kept in its state).

    Small on purpose: it is saved with every event (see ``docs/performance.md``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    raised: tuple[AlertKind, ...] = ()
    """Threshold kinds alerted and not yet re-armed (their figure is still over the line)."""
    last_fired: dict[AlertKind, datetime] = Field(default_factory=dict)
    """Event time of each kind's last alert, for the cooldown."""
    segment_id: int | None = None
    segment_name: str | None = None
    """The settled segment: the first one seen, or the last one alerted (None before the
    first score)."""
    segment_candidate: str | None = None
    """A segment other than the settled one, held by the newest scores..."""
    segment_candidate_scores: int = 0
    """...in this many scores in a row."""
    sla_breaches: int = 0
    """SLA breaches already seen (alerted or not)."""
    cancelled: bool = False
    """The customer's cancellation was seen (and alerted): not again until they come back."""


class CustomerState(_Frozen):
    """Everything streamcrm remembers about one customer (one Redis hash)."""

    customer_id: str
    first_seen_at: datetime
    last_event_at: datetime
    newest_by_topic: dict[str, datetime] = Field(default_factory=dict)
    events_applied: int = 0
    late_events: int = 0
    # Purchases (RFM), money in cents of the reporting currency.
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    order_count: int = 0
    purchase_days: int = 0
    """Distinct UTC days with a purchase: the *transactions* of repeat-buying models."""
    recent_purchase_days: tuple[int, ...] = ()
    """Ordinals of the purchase days a purchase could still arrive for (within the allowed
    lateness of the newest purchase), so a late order on a known day is not counted again."""
    gross_cents: int = 0
    total_items: int = 0
    cost_cents: int = 0
    revenue_with_cost_cents: int = 0
    refund_count: int = 0
    refunded_cents: int = 0
    acquisition: AcquisitionCost | None = None
    # Feedback, on the scales it was given in.
    csat_count: int = 0
    csat_sum: int = 0
    nps_sum: int = 0
    nps_promoters: int = 0
    nps_passives: int = 0
    nps_detractors: int = 0
    recent_ratings: tuple[Rating, ...] = ()
    # Support.
    tickets: dict[str, Ticket] = Field(default_factory=dict)
    forgotten_tickets: TicketTotals = Field(default_factory=TicketTotals)
    escalations: int = 0
    # Explicit churn.
    cancelled_at: datetime | None = None
    # Bookkeeping.
    recent_event_ids: tuple[str, ...] = ()
    pending_snapshots: tuple[PendingSnapshot, ...] = ()
    last_snapshot_at: datetime | None = None
    # Alerts and history (states saved before these fields load with the defaults).
    alert_memory: AlertMemory = Field(default_factory=AlertMemory)
    """What the alert rules remember between scores (see streamcrm.core.alerts)."""
    score_history: tuple[ScorePoint, ...] = ()
    """The newest ``SCORE_HISTORY_LENGTH`` score points, oldest first."""
    last_scored_at: datetime | None = None
    """``as_of`` of the customer's newest score, made at an event or as event time passed
    (see :func:`streamcrm.core.scoring.rescore_due_at`)."""
    alert_outcomes: AlertOutcomes = Field(default_factory=AlertOutcomes)
    """Churn alerts whose outcome (a purchase within the churn window, or none) is not yet
    settled (see :mod:`streamcrm.core.interventions`)."""
    marketing: MarketingMemory = Field(default_factory=MarketingMemory)
    """Recent campaign touches and purchases, for attribution (see
    :mod:`streamcrm.core.marketing`)."""

    @property
    def newest_score_at(self) -> datetime | None:
        """When the customer was last scored (states saved before ``last_scored_at`` existed
        take it from their score history)."""
        if self.last_scored_at is not None:
            return self.last_scored_at
        return self.score_history[-1].as_of if self.score_history else None

    @property
    def explicitly_cancelled(self) -> bool:
        """Cancelled, and no purchase since: P(churn) is 1."""
        return self.cancelled_at is not None and (
            self.last_purchase_at is None or self.last_purchase_at <= self.cancelled_at
        )

    @property
    def gross_revenue(self) -> float:
        """Gross revenue in the reporting currency."""
        return self.gross_cents / 100

    @property
    def refunded_amount(self) -> float:
        """Refunded amount in the reporting currency."""
        return self.refunded_cents / 100

    @property
    def monetary(self) -> float:
        """Net monetary value: gross revenue minus refunds, never below zero."""
        return max(self.gross_cents - self.refunded_cents, 0) / 100

    @property
    def nps_count(self) -> int:
        return self.nps_promoters + self.nps_passives + self.nps_detractors

    @property
    def rating_count(self) -> int:
        """Ratings given, on any scale."""
        return self.csat_count + self.nps_count

    @property
    def rating_sum(self) -> float:
        """Σ sᵢ of ratings normalised to [0, 1]: CSAT (r − 1) / 4, NPS r / 10."""
        return (self.csat_sum - self.csat_count) / 4 + self.nps_sum / 10

    @property
    def satisfaction_recent(self) -> float | None:
        """EWMA s̃ ← α s + (1 − α) s̃ over the newest ratings in event-time order."""
        recent: float | None = None
        for rating in self.recent_ratings:
            recent = (
                rating.score
                if recent is None
                else SATISFACTION_EWMA_ALPHA * rating.score + (1 - SATISFACTION_EWMA_ALPHA) * recent
            )
        return recent

    @property
    def ticket_totals(self) -> TicketTotals:
        """Support figures over every ticket: those remembered plus those forgotten."""
        return TicketTotals.over(self.tickets.values(), self.forgotten_tickets)

    @property
    def open_tickets(self) -> int:
        """Tickets opened and not yet resolved (at most ``MAX_TRACKED_TICKETS``)."""
        return sum(1 for ticket in self.tickets.values() if ticket.is_open)


@dataclass(frozen=True)
class Transition:
    """The result of one ``apply``: the new state and what became of the event."""

    state: CustomerState
    duplicate: bool = False
    late_by: timedelta | None = None
    campaigns: Tally = field(default_factory=Tally)
    """What the event changed in the campaign figures (a purchase a touch won)."""

    @property
    def applied(self) -> bool:
        return not self.duplicate and self.late_by is None


def topic_kind(event: Event) -> str:
    """The input topic kind (``purchases``, ``feedback``, ``support``) of an event."""
    return TOPIC_OF_EVENT_TYPE[event.type]


def state_for(state: CustomerState | None, event: BaseEvent) -> CustomerState:
    """The customer's state, or a new one first and last seen at ``event``."""
    if state is not None:
        return state
    return unvalidated(  # the validated event's id and time (see streamcrm.core.trusted)
        CustomerState,
        customer_id=event.customer_id,
        first_seen_at=event.occurred_at,
        last_event_at=event.occurred_at,
    )


def with_event_id(state: CustomerState, event_id: str) -> tuple[str, ...]:
    """The customer's recent event ids with ``event_id`` (the newest ``RECENT_EVENT_IDS``)."""
    return (state.recent_event_ids + (event_id,))[-RECENT_EVENT_IDS:]


def counted_late(state: CustomerState, recent_ids: tuple[str, ...]) -> CustomerState:
    """The state after a late event: counted, its id remembered, nothing else applied."""
    return with_changes(state, late_events=state.late_events + 1, recent_event_ids=recent_ids)


def apply(
    state: CustomerState | None,
    event: Event,
    rules: StateRules = DEFAULT_RULES,
    watermark: datetime | None = None,
) -> Transition:
    """Apply one event to a customer's state.

    A repeated ``event_id`` changes nothing; a late event only counts as late.
    ``watermark``: event time up to which every event of the customer's input partition is
    in, on every topic, if the caller knows it (see :func:`attribution_settled_before`).
    """
    if state is not None and event.event_id in state.recent_event_ids:
        return Transition(state=state, duplicate=True)
    state = state_for(state, event)
    recent_ids = with_event_id(state, event.event_id)
    kind = topic_kind(event)
    newest = state.newest_by_topic.get(kind)
    if newest is not None and newest - event.occurred_at > rules.allowed_lateness:
        return Transition(state=counted_late(state, recent_ids), late_by=newest - event.occurred_at)

    purchase = _as_purchase(event, rules)
    changes = _changes_for(state, event, rules, purchase)
    # A state made by a campaign touch alone (a prospect) has seen no event of the customer:
    # their first one sets when they were first and last seen.
    prospect = state.events_applied == 0
    changes.update(
        first_seen_at=event.occurred_at
        if prospect
        else min(state.first_seen_at, event.occurred_at),
        last_event_at=event.occurred_at
        if prospect
        else max(state.last_event_at, event.occurred_at),
        newest_by_topic={
            **state.newest_by_topic,
            kind: event.occurred_at if newest is None else max(newest, event.occurred_at),
        },
        events_applied=state.events_applied + 1,
        recent_event_ids=recent_ids,
    )
    moved = with_changes(state, **changes)
    marketing, campaigns = _attributed(moved, purchase, rules, watermark)
    return Transition(state=with_changes(moved, marketing=marketing), campaigns=campaigns)


ATTRIBUTION_TOPICS = ("purchases", "marketing")
"""The input topics whose events attribution pairs up."""


def attribution_settled_before(
    state: CustomerState, rules: StateRules, watermark: datetime | None = None
) -> datetime | None:
    """The earliest event time a purchase or marketing event of the customer still to come
    may have: attribution takes nothing older (such purchases are applied to the state but
    not attributed, such marketing events are late), and the marketing memory forgets what
    lies before it (:func:`streamcrm.core.marketing.forget_before`).

    Each topic is in order within the allowed lateness, but the two topics are consumed
    independently, so one may run far ahead of the other (a worker catching up a backlog).
    What the customer's own events bound is therefore the *older* of the two::

        own = min(newest purchase, newest marketing event) − allowed lateness

    (None until both topics had an event of the customer). ``watermark``, when the caller
    knows it (the event time up to which every event of the customer's input partition is in,
    on both topics: :meth:`streamcrm.worker.watermarks.EventTime.for_partition`), bounds it
    too; the later of the two bounds holds. With neither, nothing is settled yet.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 3, 1, tzinfo=UTC)
    >>> state = CustomerState(customer_id="c", first_seen_at=t0, last_event_at=t0,
    ...                       newest_by_topic={"purchases": t0 + timedelta(days=30)})
    >>> attribution_settled_before(state, StateRules()) is None  # no marketing event yet
    True
    >>> both = state.model_copy(update={"newest_by_topic": {**state.newest_by_topic,
    ...                                                   "marketing": t0}})
    >>> attribution_settled_before(both, StateRules()) == t0 - timedelta(days=2)
    True
    """
    newest = [state.newest_by_topic.get(kind) for kind in ATTRIBUTION_TOPICS]
    known = [at for at in newest if at is not None]
    own = min(known) - rules.allowed_lateness if len(known) == len(newest) else None
    bounds = [bound for bound in (own, watermark) if bound is not None]
    return max(bounds) if bounds else None


def _as_purchase(event: Event, rules: StateRules) -> Purchase | None:
    """A purchase event as the state and attribution count it: its id, time and amount in
    cents of the reporting currency (converted once for both; None for other events)."""
    if not isinstance(event, PurchaseEvent):
        return None
    cents = rules.to_reporting_cents(event.amount, event.currency)
    return Purchase(event.event_id, event.occurred_at, cents)


def _attributed(
    state: CustomerState, purchase: Purchase | None, rules: StateRules, watermark: datetime | None
) -> tuple[MarketingMemory, Tally]:
    """A purchase joins the customer's marketing memory (a touch may have won it: see
    :mod:`streamcrm.core.marketing`); any applied event may let the memory forget what is
    settled."""
    memory, campaigns = state.marketing, Tally()
    settled_before = attribution_settled_before(state, rules, watermark)
    window = rules.attribution_window
    if purchase is not None and (settled_before is None or purchase.at >= settled_before):
        memory, campaigns = record_attributable_purchase(memory, purchase, window)
    if settled_before is not None and (memory.touches or memory.purchases):
        memory = forget_before(memory, settled_before, window)
    return memory, campaigns


def _changes_for(
    state: CustomerState, event: Event, rules: StateRules, purchase: Purchase | None
) -> dict[str, object]:
    match event:
        case PurchaseEvent():
            assert purchase is not None, "a purchase event is a purchase"
            return _purchase_changes(state, event, rules, purchase.amount_cents)
        case RefundEvent():
            return {
                "refund_count": state.refund_count + 1,
                "refunded_cents": state.refunded_cents
                + rules.to_reporting_cents(event.amount, event.currency),
            }
        case FeedbackEvent():
            return _feedback_changes(state, event)
        case SupportEvent():
            return _support_changes(state, event)
        case CancellationEvent():
            at = event.occurred_at
            return {"cancelled_at": _earliest(state.cancelled_at, at)}
    raise TypeError(f"unknown event type {type(event).__name__}")  # pragma: no cover


def _purchase_changes(
    state: CustomerState, event: PurchaseEvent, rules: StateRules, amount_cents: int
) -> dict[str, object]:
    at = event.occurred_at
    changes: dict[str, object] = {
        "order_count": state.order_count + 1,
        **_purchase_day_changes(state, at, rules),
        "gross_cents": state.gross_cents + amount_cents,
        "total_items": state.total_items + event.items,
        "first_purchase_at": _earliest(state.first_purchase_at, at),
        "last_purchase_at": at
        if state.last_purchase_at is None
        else max(state.last_purchase_at, at),
    }
    if event.acquisition_cost is not None:
        reported = AcquisitionCost(
            occurred_at=at,
            event_id=event.event_id,
            cents=rules.to_reporting_cents(event.acquisition_cost, event.currency),
        )
        known = state.acquisition
        if known is None or (at, event.event_id) < (known.occurred_at, known.event_id):
            changes["acquisition"] = reported
    if event.cost is not None:
        changes["cost_cents"] = state.cost_cents + rules.to_reporting_cents(
            event.cost, event.currency
        )
        changes["revenue_with_cost_cents"] = state.revenue_with_cost_cents + amount_cents
    return changes


def _purchase_day_changes(
    state: CustomerState, at: datetime, rules: StateRules
) -> dict[str, object]:
    """Count the purchase's UTC day once, remembering only the days still open to late orders.

    An accepted purchase is at most ``allowed_lateness`` older than the newest event of its
    topic, so days before that can never be purchased on again and are forgotten.
    """
    day = at.date().toordinal()
    newest = state.newest_by_topic.get(TOPIC_OF_EVENT_TYPE["purchase"])
    newest = at if newest is None else max(newest, at)
    still_open = (newest - rules.allowed_lateness).date().toordinal()
    known = day in state.recent_purchase_days
    days = state.recent_purchase_days if known else (*state.recent_purchase_days, day)
    return {
        "purchase_days": state.purchase_days + (0 if known else 1),
        "recent_purchase_days": tuple(sorted(d for d in days if d >= still_open)),
    }


def _feedback_changes(state: CustomerState, event: FeedbackEvent) -> dict[str, object]:
    rating = Rating(
        occurred_at=event.occurred_at, event_id=event.event_id, score=event.normalised_rating
    )
    newest = sorted((*state.recent_ratings, rating), key=lambda r: (r.occurred_at, r.event_id))
    changes: dict[str, object] = {"recent_ratings": tuple(newest[-RECENT_RATINGS:])}
    if event.scale == "csat":
        changes["csat_count"] = state.csat_count + 1
        changes["csat_sum"] = state.csat_sum + event.rating
        return changes
    changes["nps_sum"] = state.nps_sum + event.rating
    if event.rating >= 9:
        changes["nps_promoters"] = state.nps_promoters + 1
    elif event.rating >= 7:
        changes["nps_passives"] = state.nps_passives + 1
    else:
        changes["nps_detractors"] = state.nps_detractors + 1
    return changes


def _support_changes(state: CustomerState, event: SupportEvent) -> dict[str, object]:
    """Record one ticket step as the earliest time seen for that step."""
    at = event.occurred_at
    if event.action == "escalated":
        return {"escalations": state.escalations + 1}
    tickets = dict(state.tickets)
    ticket = tickets.get(event.ticket_id, Ticket())
    match event.action:
        case "opened" if ticket.opened_at is None or (at, event.event_id) < (
            ticket.opened_at,
            ticket.opened_by or "",
        ):
            ticket = ticket.model_copy(
                update={
                    "opened_at": at,
                    "opened_by": event.event_id,
                    "priority": event.priority,
                    "category": event.category,
                }
            )
        case "first_response":
            ticket = ticket.model_copy(
                update={"first_response_at": _earliest(ticket.first_response_at, at)}
            )
        case "resolved":
            ticket = ticket.model_copy(update={"resolved_at": _earliest(ticket.resolved_at, at)})
    tickets[event.ticket_id] = ticket
    changes: dict[str, object] = {"tickets": tickets}
    if len(tickets) > MAX_TRACKED_TICKETS:
        forgotten = min(tickets, key=lambda ticket_id: tickets[ticket_id].eviction_order(ticket_id))
        changes["forgotten_tickets"] = state.forgotten_tickets + tickets.pop(forgotten).totals()
    return changes


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None else min(current, candidate)


def _seconds(delta: timedelta) -> int:
    return max(int(delta.total_seconds()), 0)
