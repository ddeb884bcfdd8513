"""Marketing effect from events: campaign touches, opens, clicks and the purchases they win.

Pure, and in event time. A customer's marketing memory keeps their recent touches and
purchases; what they add to each campaign arm's figures is a function of that memory alone,
so arrival order does not matter (the purchases and marketing topics are consumed
independently: a purchase may be applied before the touch that won it).

**Attribution (last touch, in event time).** A purchase ``p`` is attributed to the customer's
latest touch ``t`` (ties by touch id) with::

    t.at <= p.at <= t.at + window

A touch **converts** if at least one purchase is attributed to it; its **attributed
revenue** is the sum of those purchases' amounts. Opens and clicks count touches opened or
clicked within the same window after it (each touch once, however many open events
arrive).

**Figures of a campaign arm** (summed over its touches)::

    effect          = attributed revenue − cost
    effect per touch = effect / touches
    ROI             = effect / cost            (None when nothing was spent)

**Exactly once, in any order.** Every change to a customer's memory gives a :class:`Tally`
delta: the arm figures of the new memory minus those of the old. A touch recorded after the
purchase it wins moves the conversion from the earlier touch (a −1 there, a +1 here), so the
running sums of the deltas always equal the figures of every event seen, whatever the order.
Money is counted in integer cents, so sums are exact in any order.

**By touch time and by delay.** Beside each arm's totals the tally keeps, per arm, the
touches and the conversions of the touches sent in each touch-time bucket (``window / 8``
wide, counted from 1970-01-01 UTC: figures ``touches@{bucket}`` and ``conversions@{bucket}``)
and the conversions by delay from touch to first attributed purchase (``window / 16`` wide
bins: ``delay@{bin}``). They are deltas like the rest, so exact in any order; a reader that
knows how far event time has got (a watermark) can tell from them which touches may still
convert (:mod:`streamcrm.core.delayed`).

Old entries are dropped (:func:`forget_before`) once no event still to come can change
their attribution; dropping makes no delta.

>>> from datetime import datetime, timedelta, UTC
>>> day = datetime(2026, 3, 1, tzinfo=UTC)
>>> memory = MarketingMemory()
>>> memory, first = record_touch(memory, Touch("t1", "spring", "A", day, 25), WEEK)
>>> memory, second = record_purchase(memory, Purchase("o1", day + timedelta(days=2), 8000), WEEK)
>>> total = first + second
>>> arm = total.arms[ArmKey("spring", "A")]
>>> arm.touches, arm.conversions, arm.revenue_cents, arm.effect_cents
(1, 1, 8000, 7975)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

WEEK = timedelta(days=7)
DEFAULT_ATTRIBUTION_WINDOW = WEEK
"""How long after a touch a purchase is still attributed to it, by default."""

TOUCH_BUCKETS_PER_WINDOW = 8
"""Touch-time buckets per attribution window (``touches@{bucket}``, ``conversions@{bucket}``)."""
DELAY_BINS = 16
"""Bins of the delay from a touch to its first attributed purchase, over the window."""
TIME_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)
"""Touch-time bucket 0 starts here."""


def touch_bucket(at: datetime, window: timedelta) -> int:
    """The touch-time bucket of ``at``: ``floor((at − 1970-01-01) / (window / 8))``.

    >>> touch_bucket(datetime(1970, 1, 2, tzinfo=UTC), timedelta(days=8))
    1
    """
    return (at - TIME_ORIGIN) // (window / TOUCH_BUCKETS_PER_WINDOW)


def bucket_start(bucket: int, window: timedelta) -> datetime:
    """When touch-time bucket ``bucket`` starts (the inverse of :func:`touch_bucket`)."""
    return TIME_ORIGIN + bucket * (window / TOUCH_BUCKETS_PER_WINDOW)


def closed_bucket_fields(fields: Iterable[str], before: datetime, window: timedelta) -> list[str]:
    """The ``touches@{bucket}`` and ``conversions@{bucket}`` fields (of any arm) of the
    buckets that ended a whole window before ``before``: every touch in them has its window
    closed, so they count fully and the arm's totals carry them
    (:mod:`streamcrm.core.delayed`). Dropping them from the store changes no report; that is
    what bounds the stored fields. Should a late increment make one again, it is read the
    same and dropped again.

    >>> week = timedelta(days=7)
    >>> old = touch_bucket(datetime(2026, 3, 1, tzinfo=UTC), week)
    >>> names = [f"c|A||touches@{old}", f"c|A||touches@{old + 8}", "c|A||touches", "c|A||delay@3"]
    >>> closed_bucket_fields(names, datetime(2026, 3, 10, tzinfo=UTC), week) == [names[0]]
    True
    """
    closed = []
    for name in fields:
        figure = name.rpartition("|")[2]
        kind, at, bucket = figure.partition("@")
        if not at or kind not in ("touches", "conversions") or name.startswith("~"):
            continue
        if bucket_start(int(bucket) + 1, window) + window <= before:
            closed.append(name)
    return closed


def delay_bin(delay: timedelta, window: timedelta) -> int:
    """The bin, 0 to ``DELAY_BINS − 1``, of a conversion ``delay`` after its touch.

    >>> delay_bin(timedelta(hours=1), WEEK), delay_bin(WEEK, WEEK)
    (0, 15)
    """
    return min(DELAY_BINS - 1, max(0, delay // (window / DELAY_BINS)))


@dataclass(frozen=True, order=True)
class ArmKey:
    """One arm (variant) of one campaign, optionally within a customer segment."""

    campaign_id: str
    arm: str
    segment: str = ""
    """The customer's segment when the touch was recorded ("" when unknown)."""


@dataclass(frozen=True)
class Touch:
    """A campaign touch sent to the customer (an e-mail, a push, a retention offer)."""

    touch_id: str
    campaign_id: str
    arm: str
    at: datetime
    cost_cents: int
    segment: str = ""

    @property
    def key(self) -> ArmKey:
        return ArmKey(self.campaign_id, self.arm, self.segment)


@dataclass(frozen=True)
class Purchase:
    """A purchase, as attribution needs it: its id, time and amount in cents."""

    purchase_id: str
    at: datetime
    amount_cents: int


@dataclass(frozen=True)
class ArmFigures:
    """Counts and money of one campaign arm; add and subtract like vectors."""

    touches: int = 0
    opens: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue_cents: int = 0
    cost_cents: int = 0

    def __add__(self, other: ArmFigures) -> ArmFigures:
        return ArmFigures(
            self.touches + other.touches,
            self.opens + other.opens,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.revenue_cents + other.revenue_cents,
            self.cost_cents + other.cost_cents,
        )

    def __neg__(self) -> ArmFigures:
        return ArmFigures(
            -self.touches,
            -self.opens,
            -self.clicks,
            -self.conversions,
            -self.revenue_cents,
            -self.cost_cents,
        )

    def __sub__(self, other: ArmFigures) -> ArmFigures:
        return self + -other

    @property
    def is_zero(self) -> bool:
        return self == ArmFigures()

    @property
    def effect_cents(self) -> int:
        """Attributed revenue − cost."""
        return self.revenue_cents - self.cost_cents

    @property
    def effect_per_touch_cents(self) -> float | None:
        """(Attributed revenue − cost) / touches; None before any touch."""
        return self.effect_cents / self.touches if self.touches else None

    @property
    def roi(self) -> float | None:
        """(Attributed revenue − cost) / cost; None when nothing was spent."""
        return self.effect_cents / self.cost_cents if self.cost_cents else None

    @property
    def conversion_rate(self) -> float | None:
        """Conversions / touches; None before any touch."""
        return self.conversions / self.touches if self.touches else None


FIGURE_NAMES = ("touches", "opens", "clicks", "conversions", "revenue_cents", "cost_cents")
"""The figures of an arm, as stored (one field each)."""


@dataclass(frozen=True)
class Tally:
    """Figures per campaign arm: a customer's contribution, a delta, or a partition's sum.

    Arms whose figures are all zero are left out, so equal tallies compare equal.
    """

    arms: Mapping[ArmKey, ArmFigures] = field(default_factory=lambda: MappingProxyType({}))
    timing: Mapping[tuple[ArmKey, str], int] = field(default_factory=lambda: MappingProxyType({}))
    """(arm, ``touches@{bucket}`` / ``conversions@{bucket}`` / ``delay@{bin}``) → count: the
    arm's touches and conversions by touch-time bucket and its conversions by delay (see the
    module docstring); zeros left out."""

    def __add__(self, other: Tally) -> Tally:
        summed = dict(self.arms)
        for key, figures in other.arms.items():
            summed[key] = summed.get(key, ArmFigures()) + figures
        timing = dict(self.timing)
        for where, count in other.timing.items():
            timing[where] = timing.get(where, 0) + count
        return Tally(
            MappingProxyType({k: v for k, v in summed.items() if not v.is_zero}),
            MappingProxyType({k: v for k, v in timing.items() if v}),
        )

    def __sub__(self, other: Tally) -> Tally:
        return self + Tally(
            MappingProxyType({k: -v for k, v in other.arms.items()}),
            MappingProxyType({k: -v for k, v in other.timing.items()}),
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Tally)
            and dict(self.arms) == dict(other.arms)
            and dict(self.timing) == dict(other.timing)
        )

    def __hash__(self) -> int:
        return hash((frozenset(self.arms.items()), frozenset(self.timing.items())))

    @property
    def is_zero(self) -> bool:
        return not self.arms and not self.timing

    def increments(self) -> tuple[tuple[str, int], ...]:
        """The tally as store increments: ``("{campaign}|{arm}|{segment}|{figure}", amount)``
        for every figure that is not zero, then the timing figures (see :meth:`from_fields`).

        >>> Tally({ArmKey("c", "A", "new"): ArmFigures(touches=1, cost_cents=25)},
        ...       {(ArmKey("c", "A", "new"), "touches@9"): 1}).increments()
        (('c|A|new|touches', 1), ('c|A|new|cost_cents', 25), ('c|A|new|touches@9', 1))
        """
        totals = tuple(
            (f"{key.campaign_id}|{key.arm}|{key.segment}|{name}", amount)
            for key, figures in sorted(self.arms.items())
            for name in FIGURE_NAMES
            if (amount := getattr(figures, name))
        )
        timing = tuple(
            (f"{key.campaign_id}|{key.arm}|{key.segment}|{name}", amount)
            for (key, name), amount in sorted(self.timing.items())
        )
        return totals + timing

    @classmethod
    def from_fields(cls, fields: Mapping[str, int]) -> Tally:
        """The tally whose :meth:`increments` summed to ``fields`` (a partition's partials).

        >>> Tally.from_fields({"c|A|new|touches": 2, "c|A|new|cost_cents": 50}).arms[
        ...     ArmKey("c", "A", "new")].cost_cents
        50
        """
        arms: dict[ArmKey, dict[str, int]] = {}
        timing: dict[tuple[ArmKey, str], int] = {}
        for name, amount in fields.items():
            if name.startswith("~"):  # other figures kept beside (alert retention)
                continue
            campaign, arm, rest = name.split("|", 2)
            segment, _, figure = rest.rpartition("|")
            key = ArmKey(campaign, arm, segment)
            if "@" in figure:
                if amount:
                    timing[(key, figure)] = amount
            else:
                arms.setdefault(key, {})[figure] = amount
        return Tally(
            MappingProxyType(
                {
                    key: ArmFigures(**figures)
                    for key, figures in arms.items()
                    if any(figures.values())
                }
            ),
            MappingProxyType(timing),
        )

    def by_campaign_arm(self) -> dict[tuple[str, str], ArmFigures]:
        """The figures summed over segments: per (campaign, arm)."""
        out: dict[tuple[str, str], ArmFigures] = {}
        for key, figures in self.arms.items():
            where = (key.campaign_id, key.arm)
            out[where] = out.get(where, ArmFigures()) + figures
        return out


@dataclass(frozen=True)
class MarketingMemory:
    """A customer's recent touches, opens, clicks and purchases (see the module docstring).

    Kept in the customer's state (plain mappings, so it serialises with it); every function
    here returns a new memory and never changes one."""

    touches: tuple[Touch, ...] = ()
    """Sorted by (time, id)."""
    opened: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    """Touch id → the times it was opened, sorted (an open may arrive before its touch)."""
    clicked: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    """Touch id → the times it was clicked, sorted."""
    purchases: tuple[Purchase, ...] = ()
    """Sorted by (time, id)."""

    def touch(self, touch_id: str) -> Touch | None:
        return next((t for t in self.touches if t.touch_id == touch_id), None)


def attribution(memory: MarketingMemory, window: timedelta) -> dict[str, str]:
    """Each attributed purchase's id → the id of the touch it is attributed to (last touch
    within ``window`` before the purchase, in event time)."""
    attributed: dict[str, str] = {}
    for purchase in memory.purchases:
        winner: Touch | None = None
        for touch in memory.touches:  # sorted: the last eligible one wins
            if touch.at <= purchase.at <= touch.at + window:
                winner = touch
        if winner is not None:
            attributed[purchase.purchase_id] = winner.touch_id
    return attributed


def tally(memory: MarketingMemory, window: timedelta) -> Tally:
    """What the customer's memory adds to each arm's figures."""
    won: dict[str, list[Purchase]] = {}
    by_id = {p.purchase_id: p for p in memory.purchases}
    for purchase_id, touch_id in attribution(memory, window).items():
        won.setdefault(touch_id, []).append(by_id[purchase_id])
    arms: dict[ArmKey, ArmFigures] = {}
    timing: dict[tuple[ArmKey, str], int] = {}

    def count(where: tuple[ArmKey, str]) -> None:
        timing[where] = timing.get(where, 0) + 1

    for touch in memory.touches:
        purchases = won.get(touch.touch_id, [])
        figures = ArmFigures(
            touches=1,
            opens=int(_within(memory.opened, touch, window)),
            clicks=int(_within(memory.clicked, touch, window)),
            conversions=int(bool(purchases)),
            revenue_cents=sum(p.amount_cents for p in purchases),
            cost_cents=touch.cost_cents,
        )
        arms[touch.key] = arms.get(touch.key, ArmFigures()) + figures
        bucket = touch_bucket(touch.at, window)
        count((touch.key, f"touches@{bucket}"))
        if purchases:
            count((touch.key, f"conversions@{bucket}"))
            first = min(p.at for p in purchases)
            count((touch.key, f"delay@{delay_bin(first - touch.at, window)}"))
    return Tally(
        MappingProxyType({k: v for k, v in arms.items() if not v.is_zero}),
        MappingProxyType(timing),
    )


def _within(seen: Mapping[str, tuple[datetime, ...]], touch: Touch, window: timedelta) -> bool:
    """Whether ``touch`` was opened (or clicked) within its window: at a time in
    ``[touch.at, touch.at + window]``."""
    return any(touch.at <= at <= touch.at + window for at in seen.get(touch.touch_id, ()))


def _changed(
    before: MarketingMemory, after: MarketingMemory, window: timedelta
) -> tuple[MarketingMemory, Tally]:
    if not before.touches and not after.touches:
        # Every figure is a touch's, so both tallies are empty and so is the delta: the
        # purchases of a customer no campaign reached (most of them) cost no tallying.
        return after, Tally()
    return after, tally(after, window) - tally(before, window)


def record_touch(
    memory: MarketingMemory, touch: Touch, window: timedelta
) -> tuple[MarketingMemory, Tally]:
    """Add a touch (a repeated touch id changes nothing); the new memory and the delta."""
    if memory.touch(touch.touch_id) is not None:
        return memory, Tally()
    touches = tuple(sorted((*memory.touches, touch), key=lambda t: (t.at, t.touch_id)))
    return _changed(memory, replace(memory, touches=touches), window)


def _seen_at(
    seen: Mapping[str, tuple[datetime, ...]], touch_id: str, at: datetime
) -> Mapping[str, tuple[datetime, ...]]:
    return {**seen, touch_id: tuple(sorted({*seen.get(touch_id, ()), at}))}


def record_open(
    memory: MarketingMemory, touch_id: str, at: datetime, window: timedelta
) -> tuple[MarketingMemory, Tally]:
    """The customer opened a touch at ``at`` (counted once per touch, even when the open
    arrives before the touch)."""
    return _changed(memory, replace(memory, opened=_seen_at(memory.opened, touch_id, at)), window)


def record_click(
    memory: MarketingMemory, touch_id: str, at: datetime, window: timedelta
) -> tuple[MarketingMemory, Tally]:
    """The customer clicked a touch at ``at`` (counted once per touch; a click is an open)."""
    after = replace(
        memory,
        opened=_seen_at(memory.opened, touch_id, at),
        clicked=_seen_at(memory.clicked, touch_id, at),
    )
    return _changed(memory, after, window)


def record_purchase(
    memory: MarketingMemory, purchase: Purchase, window: timedelta
) -> tuple[MarketingMemory, Tally]:
    """Add a purchase (a repeated purchase id changes nothing); the new memory and delta."""
    if any(p.purchase_id == purchase.purchase_id for p in memory.purchases):
        return memory, Tally()
    purchases = tuple(sorted((*memory.purchases, purchase), key=lambda p: (p.at, p.purchase_id)))
    return _changed(memory, replace(memory, purchases=purchases), window)


def forget_before(
    memory: MarketingMemory, settled_before: datetime, window: timedelta
) -> MarketingMemory:
    """Drop what no event still to come can change: touches whose window closed before
    ``settled_before`` (with their opens, clicks and the purchases attributed to them), and
    purchases before it that no touch won.

    The caller passes the earliest event time a new event of the customer may still have
    (for example the customer's newest event time less the allowed lateness). A purchase at
    or after it can only be won by a touch whose window is still open then, which is kept;
    a touch at or after it cannot win a purchase before it. A purchase before it stays while
    the touch that won it stays, so that touch's conversion is never counted twice. So
    dropping changes no delta still to come, and the sums of the deltas stay exact.
    """
    touches = tuple(t for t in memory.touches if t.at + window >= settled_before)
    kept = {t.touch_id for t in touches}
    dropped = {t.touch_id for t in memory.touches} - kept
    won = attribution(memory, window)
    purchases = tuple(
        p for p in memory.purchases if p.at >= settled_before or won.get(p.purchase_id) in kept
    )

    def still_open(
        seen: Mapping[str, tuple[datetime, ...]],
    ) -> Mapping[str, tuple[datetime, ...]]:
        # The opens of a dropped touch go; so do the opens before ``settled_before`` of a
        # touch never seen (the touch, before its open, can no longer arrive).
        kept_times = {
            touch_id: times if touch_id in kept else tuple(t for t in times if t >= settled_before)
            for touch_id, times in seen.items()
            if touch_id not in dropped
        }
        return {touch_id: times for touch_id, times in kept_times.items() if times}

    return MarketingMemory(
        touches=touches,
        opened=still_open(memory.opened),
        clicked=still_open(memory.clicked),
        purchases=purchases,
    )


def summed(tallies: Iterable[Tally]) -> Tally:
    """The sum of several tallies (the partial tallies of every partition, when read)."""
    total = Tally()
    for part in tallies:
        total = total + part
    return total
