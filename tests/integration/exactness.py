"""Checking a worker's Redis state against the state computed straight from the events.

The fault tests share these: the expected state of every customer (the pure core applied to
the events in event-time order, no broker, no Redis), what Redis holds, and the lost and
double-counted events between the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis

from streamcrm.events import Event, ModelMetrics
from streamcrm.kafka_io import Record
from streamcrm.settings import Settings
from streamcrm.state import CustomerState, apply
from streamcrm.store import customer_key
from streamcrm.stored_json import unpack

ARRIVAL_ORDER_FIELDS = {
    "pending_snapshots",
    "last_snapshot_at",
    "recent_event_ids",
    "alert_memory",
    "score_history",
    "last_scored_at",
}
"""State fields that depend on when the worker's sweeps ran (label ledgers, re-scores of quiet
customers), on the interleaving of topics, or on the scores (which depend on the shared
models' checkpoint timing), not on the events themselves: everything else must match
exactly."""


def expected_states(events: Iterable[Event]) -> dict[str, CustomerState]:
    """Every customer's state computed straight from the events, in one process, no broker."""
    states: dict[str, CustomerState | None] = {}
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        states[event.customer_id] = apply(states.get(event.customer_id), event).state
    return {cid: state for cid, state in states.items() if state is not None}


def stored_states(settings: Settings, customer_ids: list[str]) -> dict[str, CustomerState]:
    """What Redis holds for these customers (those it has a state for)."""
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url)
    try:
        pipe = client.pipeline()
        for cid in customer_ids:
            pipe.hget(customer_key(settings.redis_namespace, cid), "state")
        raws = pipe.execute()
    finally:
        client.close()
    return {
        cid: CustomerState.model_validate_json(unpack(raw))
        for cid, raw in zip(customer_ids, raws, strict=True)
        if raw is not None
    }


def applied_events(settings: Settings, customer_ids: list[str]) -> int:
    """Events applied to these customers' stored states, in all."""
    return sum(s.events_applied for s in stored_states(settings, customer_ids).values())


def lost_and_doubled(
    expected: dict[str, CustomerState], stored: dict[str, CustomerState]
) -> tuple[int, int]:
    """Events missing from the stored states, and events counted more than once."""
    lost = doubled = 0
    for cid, state in expected.items():
        got = stored[cid].events_applied if cid in stored else 0
        lost += max(state.events_applied - got, 0)
        doubled += max(got - state.events_applied, 0)
    return lost, doubled


def comparable(state: CustomerState) -> dict[str, object]:
    """The state without the fields that depend on arrival order and sweep timing."""
    return state.model_dump(mode="json", exclude=ARRIVAL_ORDER_FIELDS)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.2)


def worker_report(records: Iterable[Record], pid: int) -> ModelMetrics | None:
    """The newest metrics report of the worker process ``pid``."""
    reports = [
        ModelMetrics.model_validate_json(r.value)
        for r in records
        if r.value is not None and f":{pid}".encode() in (r.key or b"")
    ]
    return reports[-1] if reports else None
