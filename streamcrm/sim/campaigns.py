"""Seeded, pure simulation of marketing campaigns whose true effects are known.

:func:`simulate_campaign` sends the touches of one campaign (an A/B test of several arms) to
a set of customers and plays out what each touch causes: opens, clicks, and a purchase with
the arm's true conversion probability. The truth (:class:`CampaignTruth`) is known, so tests
can hold streamcrm's attribution and A/B estimates against it: :func:`caused_figures` counts
what the simulator caused, :func:`expected_arm_figures` gives what each arm earns in
expectation.

The generator is pure: it reads no clock, does no I/O and draws only from its own
``random.Random`` generators seeded by ``seed``, so the same arguments (and the same
``chooser``) always give the same events, with the same ids.

How a campaign plays out
------------------------
* **Schedule.** Every customer is touched once per period of ``window + 1 day``
  (:attr:`CampaignTruth.touch_period`; the window is the truth's attribution window, 7 days
  by default), at ``start + phase + k · period`` for ``k = 0, 1, ...`` while before
  ``start + days``, with the customer's phase uniform in ``[0, period)``. The touches of a
  campaign thus flow evenly over time, and consecutive touches of a customer are **more
  than a window apart**, so last-touch attribution is unambiguous: a purchase can only fall
  in the window of the touch that caused it. When ``days`` is a multiple of the period,
  every customer gets ``days / period`` touches.
* **Arm.** Chosen uniformly at random, or by ``chooser(touch_id)``. The chooser is called
  when the touch is due, after every earlier event has been produced: with
  :func:`iter_campaign`, a consumer that folds each event it receives into the campaign's
  figures before asking for the next one can run Thompson sampling online.
* **Open and click.** One uniform draw ``u`` per touch: opened when ``u < open_rate``,
  clicked when ``u < click_rate`` (a click is also an open, so ``click_rate <= open_rate``).
  The open comes ``U(1 min, window / 4)`` after the touch, the click ``U(1 min, 1 h)`` after
  the open (one :class:`~streamcrm.core.events.TouchOpened` and at most one
  :class:`~streamcrm.core.events.TouchClicked` per touch).
* **Conversion.** With the arm's true probability for the customer's segment, the touch
  causes one :class:`~streamcrm.core.events.PurchaseEvent` at ``U(1 h, window − 1 h)`` after
  it (strictly inside the window), of a lognormal amount rounded to whole cents (at least one
  cent), 1-3 items, on the web. Nothing else makes customers buy here: every purchase was
  caused by a touch, and its ``order_id`` (``"{touch_id}:order"``) records which.
* **Money** is in USD, the reporting currency, so the core's cents are the simulator's.

Segments
--------
A customer's segment is a simulation label, ``segments[h mod len(segments)]`` with ``h`` a
hash of the customer id (:func:`segment_of`), among a small fixed set such as
:data:`SEGMENT_LABELS` (``"loyal"``, ``"new"``, ``"at_risk"``) or the single segment ``""``.
streamcrm files a touch under the segment of the customer's newest score, which is a model
output and need not match these labels; so compare streamcrm's figures with the simulator's
per arm summed over segments (:meth:`~streamcrm.core.marketing.Tally.by_campaign_arm`), or
give the truth the single segment ``""`` (the default), whose figures are the arm's.

>>> from datetime import UTC, datetime
>>> truth = CampaignTruth.with_rates("spring", {"A": 0.1, "B": 0.2})
>>> customers = [f"c{n}" for n in range(30)]
>>> events = simulate_campaign(truth, customers, datetime(2026, 3, 1, tzinfo=UTC), 16, seed=3)
>>> events == simulate_campaign(truth, customers, datetime(2026, 3, 1, tzinfo=UTC), 16, seed=3)
True
>>> sum(event.type == "touch" for event in events)  # 30 customers, 2 periods of 8 days
60
>>> all(a.occurred_at <= b.occurred_at for a, b in zip(events, events[1:]))
True
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from streamcrm.core.events import (
    CampaignTouch,
    MarketingChannel,
    PurchaseEvent,
    TouchClicked,
    TouchOpened,
)
from streamcrm.core.marketing import DEFAULT_ATTRIBUTION_WINDOW, ArmFigures

__all__ = [
    "SEGMENT_LABELS",
    "ArmTruth",
    "CampaignTruth",
    "Chooser",
    "ExpectedArm",
    "MarketingOrPurchase",
    "caused_figures",
    "expected_arm_figures",
    "iter_campaign",
    "segment_of",
    "simulate_campaign",
]

MarketingOrPurchase = CampaignTouch | TouchOpened | TouchClicked | PurchaseEvent
"""An event of a simulated campaign: a touch, an open, a click, or a purchase it caused."""

Chooser = Callable[[str], str]
"""``chooser(touch_id) -> arm``: picks the arm of the touch about to be sent."""

SEGMENT_LABELS = ("loyal", "new", "at_risk")
"""Simulation labels of customer segments (see the module docstring: not streamcrm's)."""

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)
_SHORTEST_WINDOW = 4 * _HOUR  # the open, click and purchase delays must fit inside it
_ITEMS = (1, 2, 3)


@dataclass(frozen=True)
class ArmTruth:
    """What one arm of a campaign truly does.

    Attributes
    ----------
    conversion : mapping of str to float
        Segment → the probability that a touched customer of that segment buys within the
        attribution window because of the touch.
    open_rate : float
        Probability that a touch is opened.
    click_rate : float
        Probability that a touch is clicked (a click is also an open: at most ``open_rate``).
    cost_cents : int
        What sending one touch costs, in US cents.
    amount_mu, amount_sigma : float
        The order amount (USD) of a purchase the arm causes is lognormal:
        ``exp(amount_mu + amount_sigma · z)``, ``z`` standard normal, rounded to cents.

    >>> arm = ArmTruth({"": 0.1}, amount_mu=math.log(50.0), amount_sigma=0.0)
    >>> round(arm.mean_amount, 9)
    50.0
    """

    conversion: Mapping[str, float]
    open_rate: float = 0.3
    click_rate: float = 0.05
    cost_cents: int = 10
    amount_mu: float = math.log(60.0)
    amount_sigma: float = 0.5

    def __post_init__(self) -> None:
        for segment, rate in self.conversion.items():
            _check_probability(f"conversion[{segment!r}]", rate)
        _check_probability("open_rate", self.open_rate)
        _check_probability("click_rate", self.click_rate)
        if self.click_rate > self.open_rate:
            raise ValueError(
                f"click_rate ({self.click_rate}) exceeds open_rate ({self.open_rate}):"
                " a click is also an open"
            )
        if self.cost_cents < 0:
            raise ValueError(f"cost_cents must be >= 0, not {self.cost_cents}")
        if not math.isfinite(self.amount_mu) or not self.amount_sigma >= 0:
            raise ValueError("amount_mu must be finite and amount_sigma >= 0")

    @property
    def mean_amount(self) -> float:
        """Mean order amount (USD) before rounding to cents: ``exp(mu + sigma² / 2)``."""
        return math.exp(self.amount_mu + self.amount_sigma**2 / 2)


@dataclass(frozen=True)
class CampaignTruth:
    """The true effects of one campaign's arms, per customer segment.

    Attributes
    ----------
    campaign_id : str
        The campaign, as in the touches' ``campaign_id``.
    arms : mapping of str to ArmTruth
        Arm name → what it truly does; every arm's ``conversion`` names exactly ``segments``.
    segments : tuple of str, default ("",)
        The simulation labels customers are hashed into (:func:`segment_of`).
    window : timedelta, default 7 days
        The attribution window the conversions are defined over; streamcrm must attribute
        with the same window (``StateRules.attribution_window``). At least 4 hours.
    channel : str, default "email"
        The marketing channel of the touches.
    """

    campaign_id: str
    arms: Mapping[str, ArmTruth]
    segments: tuple[str, ...] = ("",)
    window: timedelta = DEFAULT_ATTRIBUTION_WINDOW
    channel: MarketingChannel = "email"

    def __post_init__(self) -> None:
        if not self.arms:
            raise ValueError("a campaign needs at least one arm")
        if not self.segments or len(set(self.segments)) != len(self.segments):
            raise ValueError(f"segments must be distinct and not empty, not {self.segments}")
        for name, arm in self.arms.items():
            if set(arm.conversion) != set(self.segments):
                raise ValueError(
                    f"arm {name!r} gives conversions for {sorted(arm.conversion)},"
                    f" not for the segments {sorted(self.segments)}"
                )
        if self.window < _SHORTEST_WINDOW:
            raise ValueError(f"window must be at least {_SHORTEST_WINDOW}, not {self.window}")

    @classmethod
    def with_rates(
        cls,
        campaign_id: str,
        rates: Mapping[str, float],
        *,
        cost_cents: int = 10,
        open_rate: float = 0.3,
        click_rate: float = 0.05,
        amount_mu: float = math.log(60.0),
        amount_sigma: float = 0.5,
    ) -> CampaignTruth:
        """A campaign of one segment (``""``) whose arms differ only in conversion rate.

        >>> truth = CampaignTruth.with_rates("spring", {"A": 0.05, "B": 0.07})
        >>> truth.conversion("B", ""), truth.segments
        (0.07, ('',))
        """
        return cls(
            campaign_id,
            {
                arm: ArmTruth(
                    {"": rate},
                    open_rate=open_rate,
                    click_rate=click_rate,
                    cost_cents=cost_cents,
                    amount_mu=amount_mu,
                    amount_sigma=amount_sigma,
                )
                for arm, rate in rates.items()
            },
        )

    @property
    def touch_period(self) -> timedelta:
        """How often the simulator touches each customer: ``window + 1 day``."""
        return self.window + _DAY

    def conversion(self, arm: str, segment: str) -> float:
        """The true conversion probability of ``arm`` for a customer of ``segment``."""
        return self.arms[arm].conversion[segment]


def segment_of(customer_id: str, segments: Sequence[str] = SEGMENT_LABELS) -> str:
    """The simulation label of a customer: ``segments[h mod len(segments)]`` with
    ``h = int.from_bytes(blake2b(customer_id, digest_size=8), "big")``.

    >>> segment_of("c1") == segment_of("c1"), segment_of("c1", ("",))
    (True, '')
    """
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return segments[int.from_bytes(digest, "big") % len(segments)]


@dataclass(frozen=True)
class ExpectedArm:
    """What one touch of an arm earns in expectation (money in USD).

    ``revenue_per_touch = conversion_rate · mean amount`` (up to the rounding of amounts to
    whole cents) and ``effect_per_touch = revenue_per_touch − cost_per_touch``.
    """

    conversion_rate: float
    open_rate: float
    click_rate: float
    revenue_per_touch: float
    cost_per_touch: float

    @property
    def effect_per_touch(self) -> float:
        """Expected attributed revenue − cost, per touch."""
        return self.revenue_per_touch - self.cost_per_touch


def expected_arm_figures(
    truth: CampaignTruth, customers: Sequence[str] | None = None
) -> dict[str, ExpectedArm]:
    """The true expected figures per touch of each arm.

    An arm's conversion rate is its segments' rates weighted by the share of ``customers``
    in each segment (every customer is touched equally often, and the default arm choice
    does not look at the segment); equal weights when ``customers`` is None.

    >>> truth = CampaignTruth.with_rates("s", {"A": 0.1}, cost_cents=25,
    ...     amount_mu=math.log(40.0), amount_sigma=0.0)
    >>> arm = expected_arm_figures(truth)["A"]
    >>> arm.conversion_rate, arm.revenue_per_touch, arm.effect_per_touch
    (0.1, 4.0, 3.75)
    """
    if customers is None:
        weights = {segment: 1 / len(truth.segments) for segment in truth.segments}
    else:
        if not customers:
            raise ValueError("customers must not be empty")
        counts = dict.fromkeys(truth.segments, 0)
        for customer_id in customers:
            counts[segment_of(customer_id, truth.segments)] += 1
        weights = {segment: count / len(customers) for segment, count in counts.items()}
    expected = {}
    for name, arm in sorted(truth.arms.items()):
        rate = sum(weights[segment] * arm.conversion[segment] for segment in truth.segments)
        expected[name] = ExpectedArm(
            conversion_rate=rate,
            open_rate=arm.open_rate,
            click_rate=arm.click_rate,
            revenue_per_touch=rate * arm.mean_amount,
            cost_per_touch=arm.cost_cents / 100,
        )
    return expected


@dataclass(frozen=True)
class _Due:
    """A customer's ``number``-th touch (from 0), due but not yet sent (its arm not chosen)."""

    customer_id: str
    segment: str
    phase: timedelta
    number: int


def iter_campaign(
    truth: CampaignTruth,
    customers: Sequence[str],
    start: datetime,
    days: int,
    seed: int,
    chooser: Chooser | None = None,
) -> Iterator[MarketingOrPurchase]:
    """The events of :func:`simulate_campaign`, one at a time in event-time order, made
    lazily: ``chooser`` is called for a touch only once every earlier event was yielded.

    The arguments are checked at once (not at the first ``next``); the rest is
    :func:`simulate_campaign`'s.
    """
    _check_arguments(customers, start, days)
    return _campaign(truth, customers, start, days, seed, chooser)


def _campaign(
    truth: CampaignTruth,
    customers: Sequence[str],
    start: datetime,
    days: int,
    seed: int,
    chooser: Chooser | None,
) -> Iterator[MarketingOrPurchase]:
    rng = random.Random(seed)
    # The arms are drawn from a generator of their own, so a chooser changes which arm a
    # touch gets but not what the touch's own draws are.
    arm_rng = random.Random(f"{seed}:arms")
    arms = sorted(truth.arms)
    end = start + timedelta(days=days)
    period = truth.touch_period
    # Pending items by (time, sequence number): the sequence number breaks ties in the order
    # items were made, so the order never depends on comparing payloads.
    pending: list[tuple[datetime, int, _Due | MarketingOrPurchase]] = []
    made = 0

    def push(at: datetime, item: _Due | MarketingOrPurchase) -> None:
        nonlocal made
        heapq.heappush(pending, (at, made, item))
        made += 1

    def schedule(due: _Due) -> None:
        at = start + due.phase + due.number * period
        if at < end:
            push(at, due)

    for customer_id in customers:
        phase = rng.random() * period
        schedule(_Due(customer_id, segment_of(customer_id, truth.segments), phase, 0))
    touches = 0
    while pending:
        at, _, item = heapq.heappop(pending)
        if not isinstance(item, _Due):
            yield item
            continue
        touches += 1
        touch_id = f"{truth.campaign_id}:t{touches:07d}"
        arm = _choose_arm(chooser, touch_id, arms, arm_rng)
        yield from _touch(truth, truth.arms[arm], arm, item, touch_id, at, rng, push)
        schedule(replace(item, number=item.number + 1))


def simulate_campaign(
    truth: CampaignTruth,
    customers: Sequence[str],
    start: datetime,
    days: int,
    seed: int,
    chooser: Chooser | None = None,
) -> list[MarketingOrPurchase]:
    """Simulate ``truth``'s campaign on ``customers`` for ``days`` days from ``start``.

    Parameters
    ----------
    truth : CampaignTruth
        The arms and their true effects.
    customers : sequence of str
        The customers touched (distinct ids); each is touched once per touch period (see
        the module docstring).
    start : datetime
        When the campaign starts; timezone-aware.
    days : int
        Touches are sent before ``start + days``; their opens, clicks and purchases may
        come up to a window later.
    seed : int
        Seed of the simulation's random draws.
    chooser : callable, optional
        ``chooser(touch_id) -> arm`` for each touch, in event-time order (for example
        Thompson sampling over the figures so far: use :func:`iter_campaign` to see the
        events as they happen); by default each touch's arm is uniform at random.

    Returns
    -------
    list
        The touches, opens, clicks and purchases, sorted by event time. Ids are
        deterministic: touch ``n`` (in time order) is ``"{campaign_id}:t{n:07d}"``; its
        events are ``"{touch_id}:touch"``, ``":open"``, ``":click"`` and ``":purchase"``,
        the order it caused ``"{touch_id}:order"``.

    Raises
    ------
    ValueError
        If ``customers`` repeats an id, ``days`` is not positive, ``start`` is naive, or
        ``chooser`` returns an arm the truth does not have.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> truth = CampaignTruth.with_rates("spring", {"A": 1.0}, open_rate=1.0, click_rate=1.0)
    >>> events = simulate_campaign(truth, ["c1"], datetime(2026, 3, 1, tzinfo=UTC), 8, seed=1)
    >>> [event.event_id for event in events]  # doctest: +NORMALIZE_WHITESPACE
    ['spring:t0000001:touch', 'spring:t0000001:open', 'spring:t0000001:click',
     'spring:t0000001:purchase']
    """
    return list(iter_campaign(truth, customers, start, days, seed, chooser))


def caused_figures(events: Iterable[MarketingOrPurchase]) -> dict[str, ArmFigures]:
    """What the simulated events truly were, per arm: the ground truth to compare with.

    Counted from the simulator's own record, not by attribution: every touch, every open
    and click event (at most one each per touch), and every purchase as a conversion of
    the touch its ``order_id`` names (``"{touch_id}:order"``), with its amount and the
    touch's cost in cents.

    >>> from datetime import UTC, datetime
    >>> truth = CampaignTruth.with_rates("s", {"A": 1.0}, cost_cents=25)
    >>> events = simulate_campaign(truth, ["c1"], datetime(2026, 3, 1, tzinfo=UTC), 16, seed=1)
    >>> figures = caused_figures(events)["A"]
    >>> figures.touches, figures.conversions, figures.cost_cents
    (2, 2, 50)
    """
    arm_of: dict[str, str] = {}
    figures: dict[str, ArmFigures] = {}

    def add(touch_id: str, change: ArmFigures) -> None:
        arm = arm_of[touch_id]
        figures[arm] = figures.get(arm, ArmFigures()) + change

    # A touch comes before its own events in the simulator's order, but count the touches
    # first anyway, so that any order of the same events gives the same figures.
    events = list(events)
    for event in events:
        if isinstance(event, CampaignTouch):
            arm_of[event.touch_id] = event.arm
            add(event.touch_id, ArmFigures(touches=1, cost_cents=_cents(event.cost)))
    for event in events:
        match event:
            case TouchOpened():
                add(event.touch_id, ArmFigures(opens=1))
            case TouchClicked():
                add(event.touch_id, ArmFigures(clicks=1))
            case PurchaseEvent():
                touch_id = event.order_id.removesuffix(":order")
                add(touch_id, ArmFigures(conversions=1, revenue_cents=_cents(event.amount)))
    return figures


# --- one touch -------------------------------------------------------------------------------


def _touch(
    truth: CampaignTruth,
    arm: ArmTruth,
    arm_name: str,
    due: _Due,
    touch_id: str,
    at: datetime,
    rng: random.Random,
    push: Callable[[datetime, MarketingOrPurchase], None],
) -> Iterator[MarketingOrPurchase]:
    """Send one touch (yielded now) and schedule what it causes (pushed for later).

    The same draws are made in the same order whatever the arm and the outcome, so the
    arms share their random numbers: a touch that converts under an arm also converts
    under any arm with a higher rate for the customer's segment."""
    customer_id, window = due.customer_id, truth.window
    u_open, u_buy = rng.random(), rng.random()
    opened_at = at + _uniform(rng, _MINUTE, window / 4)
    clicked_at = opened_at + _uniform(rng, _MINUTE, _HOUR)
    bought_at = at + _uniform(rng, _HOUR, window - _HOUR)
    amount_cents = max(1, round(100 * math.exp(arm.amount_mu + arm.amount_sigma * rng.gauss())))
    items = rng.choice(_ITEMS)

    yield CampaignTouch(
        event_id=f"{touch_id}:touch",
        customer_id=customer_id,
        occurred_at=at,
        touch_id=touch_id,
        campaign_id=truth.campaign_id,
        arm=arm_name,
        channel=truth.channel,
        cost=arm.cost_cents / 100,
    )
    if u_open < arm.open_rate:
        push(
            opened_at,
            TouchOpened(
                event_id=f"{touch_id}:open",
                customer_id=customer_id,
                occurred_at=opened_at,
                touch_id=touch_id,
            ),
        )
    if u_open < arm.click_rate:
        push(
            clicked_at,
            TouchClicked(
                event_id=f"{touch_id}:click",
                customer_id=customer_id,
                occurred_at=clicked_at,
                touch_id=touch_id,
            ),
        )
    if u_buy < arm.conversion[due.segment]:
        push(
            bought_at,
            PurchaseEvent(
                event_id=f"{touch_id}:purchase",
                customer_id=customer_id,
                order_id=f"{touch_id}:order",
                amount=amount_cents / 100,
                items=items,
                channel="web",
                occurred_at=bought_at,
            ),
        )


def _choose_arm(
    chooser: Chooser | None, touch_id: str, arms: Sequence[str], arm_rng: random.Random
) -> str:
    if chooser is None:
        return arm_rng.choice(arms)
    arm = chooser(touch_id)
    if arm not in arms:
        raise ValueError(
            f"chooser {getattr(chooser, '__qualname__', chooser)!r} returned arm {arm!r}"
            f" for touch {touch_id!r}; the campaign's arms are {list(arms)}"
        )
    return arm


def _uniform(rng: random.Random, low: timedelta, high: timedelta) -> timedelta:
    """A time uniform in the open interval ``(low, high)`` (to the microsecond)."""
    span = high - low
    return low + max(_TINY, min(span * rng.random(), span - _TINY))


def _cents(amount: float) -> int:
    """Dollars made from whole cents (``cents / 100``) back to their cents."""
    return round(amount * 100)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], not {value}")


def _check_arguments(customers: Sequence[str], start: datetime, days: int) -> None:
    if len(set(customers)) != len(customers):
        raise ValueError("customers must be distinct")
    if days <= 0:
        raise ValueError(f"days must be > 0, not {days}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
