"""Delayed churn labels in event time: the prediction ledger of each customer.

Every time a customer is scored, the features that were scored are kept as a *pending
snapshot* (learning later from exactly those features prevents leakage). A snapshot taken at
``s`` is labelled when its churn window ``W`` closes in event time, whatever the outcome:

- ``0`` (retained) if the customer purchased in ``(s, s + W]``,
- ``1`` (churned) if not,

and it is learned only once the event-time *watermark* has passed ``s + W``. Learning every
snapshot at the same delay matters: learning retained customers at their next purchase and
churned ones only when the window closes biases the model badly. An explicit cancellation
settles every pending snapshot at once (``1`` unless a purchase already fell in its window).

Customers who go quiet produce no events, so the ledger adds *heartbeat* snapshots every
``H`` of event time while they stay quiet (up to a horizon), so the model sees long recency
gaps too. Everything here is pure; the pipeline supplies the watermark.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from streamcrm.core.state import PendingSnapshot

MAX_PENDING_SNAPSHOTS = 8
"""Snapshots awaiting a label per customer; the oldest is dropped beyond this."""

MIN_SNAPSHOT_SPACING = timedelta(days=1)
"""A snapshot this close to the newest pending one replaces it, so a burst of events (one
ticket's steps, say) teaches the model once, not many times over."""

MAX_HEARTBEATS_PER_SWEEP = 12


@dataclass(frozen=True)
class LabelledExample:
    """Features that were scored, and what then happened (True = churned)."""

    features: Mapping[str, float]
    churned: bool
    scored_at: datetime | None = None
    """When the snapshot was taken (benchmarks score other predictors on the same labels)."""


def record_purchase(
    pending: Sequence[PendingSnapshot], purchased_at: datetime, churn_window: timedelta
) -> tuple[PendingSnapshot, ...]:
    """Mark the snapshots whose window ``(s, s + W]`` contains this purchase."""
    return tuple(
        s.model_copy(update={"purchased": True})
        if not s.purchased and s.scored_at < purchased_at <= s.scored_at + churn_window
        else s
        for s in pending
    )


def settle_closed(
    pending: Sequence[PendingSnapshot], watermark: datetime, churn_window: timedelta
) -> tuple[list[LabelledExample], tuple[PendingSnapshot, ...]]:
    """Label the snapshots whose window closed by ``watermark``; return them and the rest.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> quiet = PendingSnapshot(scored_at=t0, features={"x": 1.0})
    >>> labelled, rest = settle_closed([quiet], t0 + timedelta(days=91), timedelta(days=90))
    >>> labelled[0].churned, rest
    (True, ())
    """
    closed = [s for s in pending if s.scored_at + churn_window <= watermark]
    still_open = tuple(s for s in pending if s.scored_at + churn_window > watermark)
    return [LabelledExample(s.features, not s.purchased, s.scored_at) for s in closed], still_open


def settle_on_cancellation(
    pending: Sequence[PendingSnapshot], cancelled_at: datetime
) -> tuple[list[LabelledExample], tuple[PendingSnapshot, ...]]:
    """An explicit cancellation settles every snapshot taken before it, at once."""
    settled = [s for s in pending if s.scored_at <= cancelled_at]
    later = tuple(s for s in pending if s.scored_at > cancelled_at)
    return [LabelledExample(s.features, not s.purchased, s.scored_at) for s in settled], later


def add_snapshot(
    pending: Sequence[PendingSnapshot],
    snapshot: PendingSnapshot,
    capacity: int = MAX_PENDING_SNAPSHOTS,
) -> tuple[PendingSnapshot, ...]:
    """Add a snapshot: it replaces a pending one less than a day older (keeping that one's
    purchase mark), and at most ``capacity`` are kept (the newest)."""
    if pending and snapshot.scored_at - pending[-1].scored_at < MIN_SNAPSHOT_SPACING:
        replaced = snapshot.model_copy(update={"purchased": pending[-1].purchased})
        return (*pending[:-1], replaced)
    return (*pending, snapshot)[-capacity:]


def heartbeat_times(
    last_snapshot_at: datetime,
    last_activity_at: datetime,
    watermark: datetime,
    interval: timedelta,
    horizon: timedelta,
) -> Iterator[datetime]:
    """Event times at which a quiet customer is snapshotted again: every ``interval`` after
    the last snapshot, up to the watermark, while quiet for less than ``horizon``.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> [t.day for t in heartbeat_times(t0, t0, t0 + timedelta(days=25), timedelta(days=10),
    ...                                 timedelta(days=15))]
    [11]
    """
    moment = last_snapshot_at + interval
    count = 0
    while (
        moment <= watermark
        and moment - last_activity_at < horizon
        and count < MAX_HEARTBEATS_PER_SWEEP
    ):
        yield moment
        moment += interval
        count += 1


def next_due(
    pending: Sequence[PendingSnapshot],
    last_snapshot_at: datetime | None,
    last_activity_at: datetime,
    churn_window: timedelta,
    heartbeat_interval: timedelta,
    heartbeat_horizon: timedelta,
    cancelled: bool,
) -> datetime | None:
    """When the ledger next needs the watermark: a window closing or a heartbeat falling due."""
    moments = [s.scored_at + churn_window for s in pending]
    if not cancelled and last_snapshot_at is not None:
        heartbeat = last_snapshot_at + heartbeat_interval
        if heartbeat - last_activity_at < heartbeat_horizon:
            moments.append(heartbeat)
    return min(moments) if moments else None
