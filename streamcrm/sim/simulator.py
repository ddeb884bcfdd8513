"""Seeded, pure generator of realistic customer event streams, with the ground truth kept.

:func:`simulate` plays ``customers`` customers over ``days`` days and returns every event they
produce, sorted by event time, together with a :class:`CustomerTruth` per customer: who drifts
toward churn, from when, and when they left. Demos, replays and benchmarks feed the events to
the scorer and score it against the truth.

The generator is pure: it reads no clock, does no I/O and uses only its own
``random.Random(seed)``, so the same arguments always give the same stream.

How a customer behaves
----------------------
* **Persona** sets the habits: a *loyal* customer buys about every 10 days, a *regular* one
  about every 25 and an *occasional* one about every 60 (exponential gaps), with lognormal
  order amounts averaging about 120, 75 and 45 and different satisfaction levels.
* **Acquisition**: about 60 % of customers already exist at ``start``; the rest place their
  first order somewhere in the first third of the period.
* **Feedback** follows some purchases: mostly CSAT 1-5, sometimes NPS 0-10, on the product,
  the service or the brand, at a level set by the customer's satisfaction.
* **Support** tickets arrive at random; each is ``opened``, gets a ``first_response`` hours
  later, is sometimes ``escalated`` and is ``resolved`` hours or days later. A bad rating
  sometimes triggers a complaint.
* **Refunds** take back part or all of about 3 % of orders, days after the order.
* **Churners** (``churn_share`` of the customers, picked independently of persona) start to
  drift at ``drift_starts_at``, between 35 % and 60 % into the period: the gaps between their
  orders stretch, their ratings sink, complaints and refunds rise. Nothing happens after
  ``churned_at``; about a third of them close their account with a
  :class:`~streamcrm.core.events.CancellationEvent` at that moment, the others simply go quiet
  (``churned_at`` is then their last activity). A churner who has been silent since the drift
  began complains to support once before leaving.

>>> sim = simulate(customers=20, days=60, seed=7)
>>> sorted(sim.truth) == [f"cust-{n:05d}" for n in range(1, 21)]
True
>>> sim == simulate(customers=20, days=60, seed=7)
True
>>> all(a.occurred_at <= b.occurred_at for a, b in zip(sim.events, sim.events[1:]))
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from streamcrm.core.events import (
    CancellationEvent,
    Channel,
    Event,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
)

__all__ = ["CustomerTruth", "Simulation", "simulate"]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

PersonaName = Literal["loyal", "regular", "occasional"]
_Priority = Literal["low", "normal", "high", "urgent"]
_TicketCategory = Literal["inquiry", "complaint", "feedback"]
_FeedbackCategory = Literal["product", "service", "brand"]

_T = TypeVar("_T")
_HOUR = 1 / 24  # times inside the generator are float days since ``start``


@dataclass(frozen=True)
class CustomerTruth:
    """What really happened to one customer, kept so tests and benchmarks can score the scorer.

    Attributes
    ----------
    customer_id : str
        The customer, as in the events' ``customer_id``.
    persona : str
        ``"loyal"``, ``"regular"`` or ``"occasional"``.
    churns : bool
        Whether the customer drifts toward churn during the simulated period.
    drift_starts_at : datetime or None
        When the drift begins; ``None`` for customers who do not churn.
    churned_at : datetime or None
        The explicit cancellation time, or else the last activity, of a churner; ``None`` for
        customers who do not churn. No event of the customer occurs after it.
    cancelled : bool
        Whether the churner also sent an explicit ``CancellationEvent`` at ``churned_at``.
    days_between_purchases : float
        The persona's mean gap between orders before any drift (days).
    first_purchase_at : datetime or None
        When the first order was placed.
    active_until : datetime or None
        When activity stops: the end of a churner's drift (no order is placed from then on;
        ``churned_at`` is at or before it), else the end of the period.
    """

    customer_id: str
    persona: str
    churns: bool
    drift_starts_at: datetime | None
    churned_at: datetime | None
    cancelled: bool
    days_between_purchases: float = 0.0
    first_purchase_at: datetime | None = None
    active_until: datetime | None = None

    def drift_at(self, at: datetime) -> float:
        """How far the customer has drifted at ``at``: 0 before the drift (and for customers
        who do not churn), rising linearly to 1 at ``active_until``."""
        if not self.churns or self.drift_starts_at is None or self.active_until is None:
            return 0.0
        if at <= self.drift_starts_at:
            return 0.0
        return min(1.0, (at - self.drift_starts_at) / (self.active_until - self.drift_starts_at))

    def days_between_purchases_after(self, ordered_at: datetime) -> float:
        """The mean of the exponential gap the simulator draws after an order at
        ``ordered_at``: d̄ · (1 + 4 · drift), the persona's gap stretched by the drift."""
        return self.days_between_purchases * (1.0 + _DRIFT_GAP_GROWTH * self.drift_at(ordered_at))


@dataclass(frozen=True)
class Simulation:
    """The output of :func:`simulate`.

    Attributes
    ----------
    events : tuple of Event
        Every event of every customer, sorted by ``(occurred_at, event_id)``.
    truth : dict of str to CustomerTruth
        The ground truth for every customer, by ``customer_id``.
    """

    events: tuple[Event, ...]
    truth: dict[str, CustomerTruth]


@dataclass(frozen=True)
class _Persona:
    """The habits of a kind of customer."""

    name: PersonaName
    share: float  # of all customers
    days_between_purchases: float  # mean of the exponential gap
    mean_amount: float  # mean of the lognormal order amount
    satisfaction: float  # mean latent satisfaction in [0, 1]; ratings are drawn around it
    feedback_probability: float  # chance that a purchase is followed by a rating
    days_between_tickets: float  # mean gap between spontaneous support tickets
    purchase_channels: Mapping[Channel, float]


_PERSONAS: tuple[_Persona, ...] = (
    _Persona(
        name="loyal",
        share=0.25,
        days_between_purchases=10.0,
        mean_amount=120.0,
        satisfaction=0.85,
        feedback_probability=0.35,
        days_between_tickets=60.0,
        purchase_channels={"web": 0.35, "mobile": 0.4, "store": 0.2, "phone": 0.05},
    ),
    _Persona(
        name="regular",
        share=0.45,
        days_between_purchases=25.0,
        mean_amount=75.0,
        satisfaction=0.72,
        feedback_probability=0.25,
        days_between_tickets=90.0,
        purchase_channels={"web": 0.45, "mobile": 0.3, "store": 0.2, "phone": 0.05},
    ),
    _Persona(
        name="occasional",
        share=0.30,
        days_between_purchases=60.0,
        mean_amount=45.0,
        satisfaction=0.62,
        feedback_probability=0.15,
        days_between_tickets=150.0,
        purchase_channels={"web": 0.5, "mobile": 0.2, "store": 0.25, "phone": 0.05},
    ),
)

_EXISTING_CUSTOMER_SHARE = 0.6  # the others are acquired during the first third of the period
_AMOUNT_SIGMA = 0.5  # of log(amount); the median is below the mean, as with real baskets
_ITEM_WEIGHTS = {1: 0.4, 2: 0.25, 3: 0.15, 4: 0.12, 5: 0.08}
_COST_KNOWN_PROBABILITY = 0.7
_COST_SHARE_RANGE = (0.5, 0.7)  # cost / amount, about 60 % on average
_NPS_SHARE = 0.2  # of ratings; the rest are CSAT
_RATING_NOISE = 0.15  # standard deviation of one rating around the latent satisfaction
_SATISFACTION_SPREAD = 0.08  # standard deviation of customers around their persona's level
_FEEDBACK_CATEGORIES: Mapping[_FeedbackCategory, float] = {
    "product": 0.5,
    "service": 0.3,
    "brand": 0.2,
}
_COMMENTS = {
    "bad": ("Disappointed.", "Not what I expected.", "Too slow.", "Would not recommend."),
    "good": ("Great, thanks!", "Fast delivery.", "Love it.", "As expected."),
}
_COMMENT_PROBABILITY = 0.2
_REFUND_PROBABILITY = 0.03
_FULL_REFUND_PROBABILITY = 0.6
_REFUND_REASONS = ("damaged", "not as described", "late delivery", "changed mind")
_CANCELLATION_REASONS = ("too expensive", "poor service", "switched provider", "no longer needed")
_CANCELLING_CHURNER_SHARE = 1 / 3

_SUPPORT_CHANNELS: Mapping[Channel, float] = {"email": 0.35, "chat": 0.3, "phone": 0.25, "web": 0.1}
_TICKET_CATEGORIES: Mapping[_TicketCategory, float] = {
    "inquiry": 0.6,
    "complaint": 0.25,
    "feedback": 0.15,
}
_PRIORITIES: Mapping[_Priority, float] = {"low": 0.25, "normal": 0.5, "high": 0.2, "urgent": 0.05}
_COMPLAINT_PRIORITIES: Mapping[_Priority, float] = {
    "low": 0.1,
    "normal": 0.4,
    "high": 0.35,
    "urgent": 0.15,
}
# Mean hours until the first answer, by priority.
_HOURS_TO_FIRST_RESPONSE: Mapping[_Priority, float] = {
    "low": 12.0,
    "normal": 6.0,
    "high": 2.0,
    "urgent": 0.5,
}
_ESCALATION_PROBABILITY: Mapping[_TicketCategory, float] = {
    "inquiry": 0.05,
    "complaint": 0.25,
    "feedback": 0.02,
}
_DAYS_TO_RESOLUTION = 1.0  # mean, after the first response; escalated tickets take longer
_COMPLAINT_AFTER_BAD_RATING = 0.3

# Churn: the drift starts 35-60 % into the period and lasts 15-35 % of it, so every churner
# is gone by 95 % of the period. While drifting (progress p from 0 to 1) the mean gap between
# orders grows to (1 + growth) times its usual size, satisfaction falls by up to the penalty,
# tickets come more often and are more often complaints, and refunds become likelier.
_DRIFT_START_RANGE = (0.35, 0.6)
_DRIFT_LENGTH_RANGE = (0.15, 0.35)
_DRIFT_GAP_GROWTH = 4.0
_DRIFT_SATISFACTION_PENALTY = 0.45
_DRIFT_TICKET_RATE_GROWTH = 2.0
_DRIFT_COMPLAINT_SHARE = 0.7  # of tickets, at the end of the drift
_DRIFT_REFUND_PROBABILITY = 0.15  # at the end of the drift


def simulate(
    customers: int,
    days: int,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    churn_share: float = 0.25,
) -> Simulation:
    """Simulate ``customers`` customers for ``days`` days from ``start``.

    Parameters
    ----------
    customers : int
        How many customers, named ``cust-00001``, ``cust-00002``, ...
    days : int
        Length of the period; no event occurs after ``start + days``.
    seed : int, default 0
        Seed of the only random source; the same arguments always give the same simulation.
    start : datetime, default 2026-01-01T00:00:00Z
        Beginning of the period; must be timezone-aware.
    churn_share : float, default 0.25
        Share of the customers who drift toward churn (rounded to a whole number of them).

    Returns
    -------
    Simulation
        The events, sorted by ``(occurred_at, event_id)``, and the truth by customer.

    Raises
    ------
    ValueError
        If ``customers`` is negative, ``days`` is not positive, ``start`` is naive or
        ``churn_share`` lies outside [0, 1].

    Examples
    --------
    >>> sim = simulate(customers=50, days=90, seed=1, churn_share=0.2)
    >>> sum(truth.churns for truth in sim.truth.values())
    10
    >>> {event.type for event in sim.events} >= {"purchase", "feedback", "support"}
    True
    """
    if customers < 0:
        raise ValueError(f"customers must be >= 0, not {customers}")
    if days <= 0:
        raise ValueError(f"days must be > 0, not {days}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    if not 0.0 <= churn_share <= 1.0:
        raise ValueError(f"churn_share must lie in [0, 1], not {churn_share}")

    rng = random.Random(seed)
    churner_numbers = set(rng.sample(range(customers), k=round(churn_share * customers)))
    events: list[Event] = []
    truth: dict[str, CustomerTruth] = {}
    for number in range(customers):
        persona = rng.choices(_PERSONAS, weights=[p.share for p in _PERSONAS])[0]
        # Each customer draws from a generator of their own, seeded from the main one, so a
        # change in how one customer is simulated does not reshuffle everyone after them.
        customer = _Customer(
            rng=random.Random(rng.getrandbits(64)),
            customer_id=f"cust-{number + 1:05d}",
            persona=persona,
            churns=number in churner_numbers,
            start=start,
            days=float(days),
        )
        customer_events, truth[customer.customer_id] = customer.simulate()
        events.extend(customer_events)
    events.sort(key=lambda event: (event.occurred_at, event.event_id))
    return Simulation(events=tuple(events), truth=truth)


class _Customer:
    """One customer's life over the period; times are float days since ``start``."""

    def __init__(
        self,
        rng: random.Random,
        customer_id: str,
        persona: _Persona,
        churns: bool,
        start: datetime,
        days: float,
    ) -> None:
        self.rng = rng
        self.customer_id = customer_id
        self.persona = persona
        self.churns = churns
        self.start = start
        self.days = days
        self.satisfaction = persona.satisfaction + rng.gauss(0.0, _SATISFACTION_SPREAD)
        self.events: list[Event] = []
        self._counters: dict[str, int] = {}
        self.drift_start = days * rng.uniform(*_DRIFT_START_RANGE)
        self.churn_at = self.drift_start + days * rng.uniform(*_DRIFT_LENGTH_RANGE)
        # Activity stops at the churn time for churners and at the end of the period for
        # everyone else; events scheduled later (resolutions, refunds) are dropped.
        self.stop = self.churn_at if churns else days
        self.first_purchase = 0.0  # set when the purchases are drawn

    def simulate(self) -> tuple[list[Event], CustomerTruth]:
        """Generate every event of the customer and the truth about them."""
        self._purchases()
        self._spontaneous_tickets()
        drift_starts_at = self._at(self.drift_start)
        if self.churns and all(event.occurred_at <= drift_starts_at for event in self.events):
            # A churner silent since the drift began still complains once before leaving, so
            # the drift shows in the stream and the last activity comes after it.
            t = _lerp(self.drift_start, self.churn_at, self.rng.uniform(0.2, 0.9))
            self._ticket(t, kind="complaint")
        events = [event for event in self.events if event.occurred_at <= self._at(self.stop)]
        churned_at = None
        cancelled = False
        if self.churns:
            cancelled = self.rng.random() < _CANCELLING_CHURNER_SHARE
            if cancelled:
                churned_at = self._at(self.churn_at)
                events.append(
                    CancellationEvent(
                        event_id=self._next_id("event"),
                        customer_id=self.customer_id,
                        occurred_at=churned_at,
                        reason=self.rng.choice(_CANCELLATION_REASONS),
                    )
                )
            else:
                churned_at = max(event.occurred_at for event in events)
        truth = CustomerTruth(
            customer_id=self.customer_id,
            persona=self.persona.name,
            churns=self.churns,
            drift_starts_at=drift_starts_at if self.churns else None,
            churned_at=churned_at,
            cancelled=cancelled,
            days_between_purchases=self.persona.days_between_purchases,
            first_purchase_at=self._at(self.first_purchase),
            active_until=self._at(self.stop),
        )
        return events, truth

    # --- processes -------------------------------------------------------------------------

    def _purchases(self) -> None:
        rng, mean_gap = self.rng, self.persona.days_between_purchases
        if rng.random() < _EXISTING_CUSTOMER_SHARE:
            # Already a customer at ``start``: the first order comes after a partial gap.
            first = rng.uniform(0.0, min(mean_gap, self.days / 3))
        else:
            first = rng.uniform(0.0, self.days / 3)
        # Churners must have been active before they drift, so they have something to lose.
        t = min(first, self.drift_start) if self.churns else first
        self.first_purchase = t
        while t < self.stop:
            self._purchase(t)
            drift = self._drift(t)
            t += rng.expovariate(1.0 / (mean_gap * (1.0 + _DRIFT_GAP_GROWTH * drift)))

    def _purchase(self, t: float) -> None:
        rng = self.rng
        order_id = f"order-{self.customer_id.removeprefix('cust-')}-{self._next('order'):05d}"
        # Lognormal with the persona's mean: mean = exp(mu + sigma^2 / 2).
        mu = math.log(self.persona.mean_amount) - _AMOUNT_SIGMA**2 / 2
        amount = max(0.5, round(rng.lognormvariate(mu, _AMOUNT_SIGMA), 2))
        cost = None
        if rng.random() < _COST_KNOWN_PROBABILITY:
            cost = round(amount * rng.uniform(*_COST_SHARE_RANGE), 2)
        self._emit(
            PurchaseEvent,
            t,
            order_id=order_id,
            amount=amount,
            items=_choose(rng, _ITEM_WEIGHTS),
            channel=_choose(rng, self.persona.purchase_channels),
            cost=cost,
        )
        drift = self._drift(t)
        if rng.random() < self.persona.feedback_probability:
            self._feedback(t + rng.uniform(2 * _HOUR, 5.0))
        refund_probability = _lerp(_REFUND_PROBABILITY, _DRIFT_REFUND_PROBABILITY, drift)
        if rng.random() < refund_probability:
            self._refund(t + rng.uniform(1.0, 20.0), order_id, amount)

    def _feedback(self, t: float) -> None:
        rng = self.rng
        level = self.satisfaction - _DRIFT_SATISFACTION_PENALTY * self._drift(t)
        score = _clip(level + rng.gauss(0.0, _RATING_NOISE))
        if rng.random() < _NPS_SHARE:
            scale: Literal["csat", "nps"] = "nps"
            rating = round(10 * score)
            bad = rating <= 6  # an NPS detractor
        else:
            scale = "csat"
            rating = 1 + round(4 * score)
            bad = rating <= 2
        comment = None
        if rng.random() < _COMMENT_PROBABILITY:
            comment = rng.choice(_COMMENTS["bad" if bad else "good"])
        self._emit(
            FeedbackEvent,
            t,
            rating=rating,
            scale=scale,
            category=_choose(rng, _FEEDBACK_CATEGORIES),
            comment=comment,
        )
        if bad and rng.random() < _COMPLAINT_AFTER_BAD_RATING:
            self._ticket(t + rng.uniform(_HOUR, 2.0), kind="complaint")

    def _refund(self, t: float, order_id: str, order_amount: float) -> None:
        rng = self.rng
        amount = order_amount
        if rng.random() >= _FULL_REFUND_PROBABILITY:
            # Round down to the cent so a partial refund never exceeds the order.
            amount = math.floor(order_amount * rng.uniform(0.2, 0.8) * 100) / 100
        self._emit(
            RefundEvent,
            t,
            order_id=order_id,
            amount=amount,
            reason=rng.choice(_REFUND_REASONS),
        )

    def _spontaneous_tickets(self) -> None:
        rng, mean_gap = self.rng, self.persona.days_between_tickets
        t = rng.expovariate(1.0 / mean_gap)
        while t < self.stop:
            self._ticket(t)
            drift = self._drift(t)
            t += rng.expovariate((1.0 + _DRIFT_TICKET_RATE_GROWTH * drift) / mean_gap)

    def _ticket(self, t: float, kind: _TicketCategory | None = None) -> None:
        """Open a ticket at ``t`` and play it to resolution; ``kind`` forces its category."""
        rng = self.rng
        category: _TicketCategory
        if kind is None:
            drift = self._drift(t)
            complaint_share = _lerp(_TICKET_CATEGORIES["complaint"], _DRIFT_COMPLAINT_SHARE, drift)
            category = _choose(rng, _with_share(_TICKET_CATEGORIES, "complaint", complaint_share))
        else:
            category = kind
        priority = _choose(rng, _COMPLAINT_PRIORITIES if category == "complaint" else _PRIORITIES)
        number = self.customer_id.removeprefix("cust-")
        fields = {
            "ticket_id": f"ticket-{number}-{self._next('ticket'):04d}",
            "channel": _choose(rng, _SUPPORT_CHANNELS),
            "priority": priority,
            "category": category,
        }
        self._emit(SupportEvent, t, action="opened", **fields)
        t += rng.expovariate(1.0 / _HOURS_TO_FIRST_RESPONSE[priority]) * _HOUR
        self._emit(SupportEvent, t, action="first_response", **fields)
        resolution_days = _DAYS_TO_RESOLUTION
        if rng.random() < _ESCALATION_PROBABILITY[category]:
            t += rng.uniform(1.0, 24.0) * _HOUR
            self._emit(SupportEvent, t, action="escalated", **fields)
            resolution_days *= 3
        t += rng.expovariate(1.0 / resolution_days)
        self._emit(SupportEvent, t, action="resolved", **fields)

    # --- helpers ---------------------------------------------------------------------------

    def _drift(self, t: float) -> float:
        """How far a churner has drifted at ``t``: 0 before the drift, rising to 1 at churn."""
        if not self.churns or t <= self.drift_start:
            return 0.0
        return min(1.0, (t - self.drift_start) / (self.churn_at - self.drift_start))

    def _emit(self, model: Callable[..., Event], t: float, **fields: object) -> None:
        if t > self.days:
            return  # scheduled after the period: never happens within it
        self.events.append(
            model(
                event_id=self._next_id("event"),
                customer_id=self.customer_id,
                occurred_at=self._at(t),
                **fields,
            )
        )

    def _at(self, t: float) -> datetime:
        # Whole seconds, like most source systems; never past the end of the period.
        return self.start + timedelta(seconds=round(min(t, self.days) * 86_400))

    def _next(self, kind: str) -> int:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return self._counters[kind]

    def _next_id(self, kind: str) -> str:
        return f"{self.customer_id}-{self._next(kind):06d}"


def _choose(rng: random.Random, weights: Mapping[_T, float]) -> _T:
    """One key of ``weights``, drawn with probability proportional to its weight."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _with_share(weights: Mapping[_T, float], key: _T, share: float) -> dict[_T, float]:
    """``weights`` normalised, with ``key`` set to ``share`` and the others scaled to fit."""
    others = sum(weight for k, weight in weights.items() if k != key)
    return {k: share if k == key else (1.0 - share) * w / others for k, w in weights.items()}


def _lerp(low: float, high: float, fraction: float) -> float:
    return low + (high - low) * fraction


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))
