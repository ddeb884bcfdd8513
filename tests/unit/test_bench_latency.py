"""The steady-state latency stream: a later stream re-dated to move at wall-clock pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streamcrm.bench.latency import at_wall_clock_pace, later_events
from streamcrm.core.events import Event
from streamcrm.sim.simulator import simulate

NEWEST = datetime(2026, 1, 15, 12, tzinfo=UTC)


def by_customer(events: list[Event]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for event in events:
        order.setdefault(event.customer_id, []).append(event.event_id)
    return order


def test_the_nth_event_is_dated_its_send_offset_after_the_newest() -> None:
    later = list(simulate(customers=30, days=14, seed=3).events)

    paced = at_wall_clock_pace(later, NEWEST, rate=50.0)

    assert [e.occurred_at for e in paced] == [
        NEWEST + timedelta(seconds=n / 50.0) for n in range(len(later))
    ]


def test_each_customer_keeps_the_order_of_their_events() -> None:
    later = list(simulate(customers=30, days=14, seed=3).events)
    shuffled = later[::2] + later[1::2]  # the input's order does not matter: time does

    paced = at_wall_clock_pace(shuffled, NEWEST, rate=200.0, id_prefix="")

    in_time_order = sorted(later, key=lambda e: e.occurred_at)
    assert by_customer(paced) == by_customer(in_time_order)


def test_ids_are_new_and_everything_but_the_date_is_kept() -> None:
    later = list(simulate(customers=5, days=14, seed=3).events)

    paced = at_wall_clock_pace(later, NEWEST, rate=10.0)

    originals = {e.event_id: e for e in later}
    assert {e.event_id for e in paced}.isdisjoint(originals)
    for event in paced:
        original = originals[event.event_id.removeprefix("steady-")]
        assert (
            event.model_copy(
                update={"event_id": original.event_id, "occurred_at": original.occurred_at}
            )
            == original
        )


def test_the_later_stream_continues_the_same_customers_after_the_first() -> None:
    first = list(simulate(customers=20, days=14, seed=1).events)

    later = later_events(first)

    assert {e.customer_id for e in later} <= {e.customer_id for e in first}
    assert min(e.occurred_at for e in later) >= min(e.occurred_at for e in first) + timedelta(
        days=13
    )
