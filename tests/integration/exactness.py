"""Checking a worker's Redis state and outputs against what the events call for.

The fault tests share these: the expected state of every customer (the pure core applied to
the events in event-time order, no broker, no Redis), what Redis holds, and the lost and
double-counted events between the two; and the outputs (:func:`check_outputs`): every applied
event's score on the scores topic, and every alert those scores raise on the alerts topic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis

from streamcrm.core.alerts import AlertMemory, AlertRules, evaluate_alerts
from streamcrm.core.events import Event
from streamcrm.core.records import Alert, CustomerScore, ModelMetrics
from streamcrm.core.state import CustomerState, apply
from streamcrm.services.kafka import Record, poll_records, read_topic
from streamcrm.settings import Settings
from streamcrm.store import customer_key
from streamcrm.store.codec import unpack

ARRIVAL_ORDER_FIELDS = {
    "pending_snapshots",
    "last_snapshot_at",
    "recent_event_ids",
    "alert_memory",
    "score_history",
    "last_scored_at",
    "alert_outcomes",
}
"""State fields that depend on when the worker's sweeps ran (label ledgers, re-scores of quiet
customers), on the interleaving of topics, or on the scores (which depend on the shared
models' checkpoint timing), not on the events themselves: everything else must match
exactly. (``alert_outcomes`` holds the churn alerts raised, which follow the scores, until a
sweep settles them.)"""


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


@dataclass(frozen=True)
class OutputCheck:
    """Outputs expected against those found on the output topics."""

    scores_expected: int
    scores_lost: int
    scores_duplicated: int
    alerts_expected: int
    alerts_lost: int
    alerts_duplicated: int
    alerts_unexpected: int
    customers_rewritten: int = 0
    """Customers with a score published twice (writes Redis lost, re-made): their alerts
    are not checked (see :func:`check_outputs`)."""

    @property
    def expected(self) -> int:
        return self.scores_expected + self.alerts_expected

    @property
    def lost(self) -> int:
        return self.scores_lost + self.alerts_lost

    @property
    def duplicated(self) -> int:
        return self.scores_duplicated + self.alerts_duplicated

    @property
    def row(self) -> tuple[int, int, int]:
        """(expected, lost, duplicated): the fault table's output columns."""
        return self.expected, self.lost, self.duplicated

    def __str__(self) -> str:
        return (
            f"outputs: {self.scores_expected} event scores expected, {self.scores_lost} lost,"
            f" {self.scores_duplicated} sent twice; {self.alerts_expected} alerts expected,"
            f" {self.alerts_lost} lost, {self.alerts_duplicated} sent twice,"
            f" {self.alerts_unexpected} unexpected"
            + (
                f" (alerts of {self.customers_rewritten} customers with re-made scores not checked)"
                if self.customers_rewritten
                else ""
            )
        )


def check_outputs(
    events: Iterable[Event],
    stored: dict[str, CustomerState],
    score_records: Sequence[Record],
    alert_records: Sequence[Record],
    rules: AlertRules,
) -> OutputCheck:
    """Compare the output topics with what the events call for.

    - **Scores**: every input event applied has its score (``trigger`` "event", its
      ``event_id``) on the scores topic; only late events (counted in the stored states'
      ``late_events``) have none.
    - **Alerts**: which alerts a customer's scores raise is a pure function of those scores
      in the order they were saved (:func:`streamcrm.core.alerts.evaluate_alerts`), which is their
      order on the customer's scores partition. Folding it over the scores found
      (:func:`alerts_raised`) gives the alerts expected; each must be on the alerts topic.
      (A lost score is counted as lost above; its alerts cannot be expected from the topic.)
      Customers with a score published twice are left out of this check: after Redis lost
      writes and the worker re-made them, the alerts of the re-made scores depend on the
      alert memory at the rollback point, which the topics do not show.
    """
    all_scores: dict[str, list[CustomerScore]] = {}
    score_ids: Counter[str] = Counter()
    for record in sorted(score_records, key=lambda r: (r.partition, r.offset)):
        if record.value is None:
            continue
        score = CustomerScore.model_validate_json(record.value)
        score_ids[score.event_id] += 1
        all_scores.setdefault(score.customer_id, []).append(score)
    event_ids = {event.event_id for event in events}
    late = sum(state.late_events for state in stored.values())
    missing = event_ids - set(score_ids)
    # A customer with a score published twice had writes re-made (Redis lost them and the
    # worker re-applied the events): from outside, which alerts the re-made scores raised
    # depends on the alert memory at the rollback, which the topics do not show.
    touched = {
        customer
        for customer, scores in all_scores.items()
        if len({score.event_id for score in scores}) < len(scores)
    }
    expected_alerts: set[str] = set()
    for customer, scores in all_scores.items():
        if customer not in touched:
            expected_alerts |= alerts_raised(scores, rules)
    alert_ids = Counter(
        alert.alert_id
        for alert in (Alert.model_validate_json(r.value) for r in alert_records if r.value)
        if alert.customer_id is not None and alert.customer_id not in touched
    )
    return OutputCheck(
        scores_expected=len(event_ids) - late,
        scores_lost=max(len(missing) - late, 0),
        scores_duplicated=sum(n - 1 for n in score_ids.values()),
        alerts_expected=len(expected_alerts),
        alerts_lost=len(expected_alerts - set(alert_ids)),
        alerts_duplicated=sum(n - 1 for n in alert_ids.values()),
        alerts_unexpected=len(set(alert_ids) - expected_alerts),
        customers_rewritten=len(touched),
    )


def alerts_raised(scores: Sequence[CustomerScore], rules: AlertRules) -> set[str]:
    """The ids of the alerts one customer's scores raise, folded in the order the scores
    were published."""
    raised: set[str] = set()
    memory = AlertMemory()
    for score in scores:
        memory, alerts = evaluate_alerts(memory, score, rules)
        raised.update(alert.alert_id for alert in alerts)
    return raised


def outputs_on_topics(settings: Settings, events: Sequence[Event]) -> OutputCheck:
    """Read the scores and alerts topics from the beginning and check them against
    ``events`` (:func:`check_outputs`)."""
    assert settings.kafka_bootstrap is not None
    found: dict[str, list[Record]] = {}
    for topic in (settings.topics.scores, settings.topics.alerts):
        consumer = read_topic(settings.kafka_bootstrap, topic)
        records: list[Record] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3.0:
            polled = list(poll_records(consumer, timeout_ms=300))
            if polled:
                records.extend(polled)
                quiet_since = time.monotonic()
        consumer.close()
        found[topic] = records
    stored = stored_states(settings, sorted({e.customer_id for e in events}))
    return check_outputs(
        events,
        stored,
        found[settings.topics.scores],
        found[settings.topics.alerts],
        settings.scoring.alerts,
    )
