"""The prediction ledger: delayed churn labels in event time, settled when windows close."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamcrm.core.labels import (
    MAX_PENDING_SNAPSHOTS,
    add_snapshot,
    heartbeat_times,
    next_due,
    record_purchase,
    settle_closed,
    settle_on_cancellation,
)
from streamcrm.core.state import PendingSnapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W = timedelta(days=90)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def snapshot(on: float, purchased: bool = False) -> PendingSnapshot:
    return PendingSnapshot(scored_at=day(on), features={"marker": on}, purchased=purchased)


def test_a_purchase_inside_the_window_marks_the_snapshot_but_does_not_label_it_yet() -> None:
    pending = record_purchase([snapshot(0)], day(30), W)

    assert pending[0].purchased
    labelled, still_pending = settle_closed(pending, day(60), W)
    assert labelled == [] and still_pending == pending  # the window is still open


def test_a_retained_snapshot_is_labelled_0_when_its_window_closes() -> None:
    pending = record_purchase([snapshot(0)], day(30), W)

    labelled, still_pending = settle_closed(pending, day(90), W)

    assert [example.churned for example in labelled] == [False]
    assert still_pending == ()


def test_a_snapshot_without_a_purchase_in_its_window_is_labelled_1_when_it_closes() -> None:
    labelled, _ = settle_closed([snapshot(0)], day(91), W)

    assert [example.churned for example in labelled] == [True]
    assert labelled[0].features == {"marker": 0}


def test_both_outcomes_are_learned_at_the_same_delay() -> None:
    # Whatever happened, nothing is labelled before the window closes, everything after.
    retained = record_purchase([snapshot(0)], day(5), W)
    churned = [snapshot(0)]
    for watermark in (day(10), day(89)):
        assert settle_closed(retained, watermark, W)[0] == []
        assert settle_closed(churned, watermark, W)[0] == []
    assert len(settle_closed(retained, day(90), W)[0]) == 1
    assert len(settle_closed(churned, day(90), W)[0]) == 1


def test_window_bounds_a_purchase_at_the_snapshot_is_outside_at_the_edge_inside() -> None:
    at_snapshot = record_purchase([snapshot(10)], day(10), W)
    at_edge = record_purchase([snapshot(10)], day(100), W)
    after_edge = record_purchase([snapshot(10)], day(100.5), W)

    assert [at_snapshot[0].purchased, at_edge[0].purchased, after_edge[0].purchased] == [
        False,
        True,
        False,
    ]


def test_a_cancellation_settles_every_earlier_snapshot_at_once() -> None:
    pending = (snapshot(0, purchased=True), snapshot(20), snapshot(40))

    labelled, later = settle_on_cancellation(pending, day(30))

    assert [example.churned for example in labelled] == [False, True]
    assert later == (snapshot(40),)


def test_a_new_snapshot_within_a_day_replaces_the_newest_keeping_its_purchase_mark() -> None:
    pending = add_snapshot((snapshot(0, purchased=True),), snapshot(0.5))

    assert len(pending) == 1
    assert pending[0].scored_at == day(0.5) and pending[0].purchased


def test_at_most_the_newest_snapshots_are_kept() -> None:
    pending: tuple[PendingSnapshot, ...] = ()
    for on in range(MAX_PENDING_SNAPSHOTS + 3):
        pending = add_snapshot(pending, snapshot(on))

    assert [s.features["marker"] for s in pending] == list(range(3, MAX_PENDING_SNAPSHOTS + 3))


def test_a_quiet_customer_gets_heartbeats_every_interval_until_the_horizon() -> None:
    times = list(
        heartbeat_times(
            last_snapshot_at=day(0),
            last_activity_at=day(0),
            watermark=day(400),
            interval=timedelta(days=30),
            horizon=timedelta(days=100),
        )
    )

    assert times == [day(30), day(60), day(90)]


def test_no_heartbeat_is_due_before_the_watermark_reaches_it() -> None:
    assert list(heartbeat_times(day(0), day(0), day(29), timedelta(days=30), W)) == []


def test_the_ledger_is_next_due_at_the_earliest_window_close_or_heartbeat() -> None:
    pending = (snapshot(10), snapshot(20))

    assert next_due(pending, day(20), day(20), W, timedelta(days=30), W, False) == day(50)
    assert next_due(pending, day(20), day(20), W, timedelta(days=300), W, False) == day(100)
    assert next_due((), day(20), day(20), W, timedelta(days=30), W, True) is None
