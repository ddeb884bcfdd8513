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
from datetime import timedelta

from streamcrm.core.alerts import AlertMemory, AlertRules, evaluate_alerts
from streamcrm.core.events import (
    CampaignTouch,
    Event,
    MarketingEvent,
    RetentionOffer,
    TouchClicked,
    TouchOpened,
)
from streamcrm.core.interventions import RetentionTally
from streamcrm.core.interventions import summed as summed_retention
from streamcrm.core.marketing import ArmFigures, Tally
from streamcrm.core.marketing import summed as summed_campaigns
from streamcrm.core.records import Alert, CustomerScore, ModelMetrics
from streamcrm.core.scoring import ScoringConfig, apply_marketing
from streamcrm.core.state import CustomerState, apply
from streamcrm.services.kafka import Record, poll_records, read_topic
from streamcrm.settings import Settings
from streamcrm.sim.campaigns import CampaignTruth, simulate_campaign
from streamcrm.store.base import OutboxRecord, campaigns_key, outbox_key
from streamcrm.store.codec import unpack
from tests.integration.worker_harness import redis_client, stored_customer_key

ARRIVAL_ORDER_FIELDS = {
    "pending_snapshots",
    "last_snapshot_at",
    "recent_event_ids",
    "alert_memory",
    "score_history",
    "last_scored_at",
    "alert_outcomes",
    "marketing",
}
"""State fields that depend on when the worker's sweeps ran (label ledgers, re-scores of quiet
customers), on the interleaving of topics, or on the scores (which depend on the shared
models' checkpoint timing), not on the events themselves: everything else must match
exactly. (``alert_outcomes`` holds the churn alerts raised, which follow the scores, until a
sweep settles them. ``marketing`` holds what attribution may still need, which each step
forgets up to a bound that depends on what the other topic had delivered; the campaign
figures it yields do not depend on it: :func:`check_campaigns` compares those.)"""


def expected_states(
    events: Iterable[Event | MarketingEvent], config: ScoringConfig | None = None
) -> dict[str, CustomerState]:
    """Every customer's state computed straight from the events, in one process, no broker
    (marketing events with ``config``'s rules, the worker's)."""
    return _in_event_time(events, config or ScoringConfig())[0]


def expected_campaigns(
    events: Iterable[Event | MarketingEvent], config: ScoringConfig
) -> dict[tuple[str, str], ArmFigures]:
    """The campaign figures per (campaign, arm) the events call for: the pure core's deltas
    summed in event-time order (summed over segments: the segment a touch is filed under is
    the customer's newest score's, which depends on the models at the time)."""
    return _in_event_time(events, config)[1].by_campaign_arm()


def _in_event_time(
    events: Iterable[Event | MarketingEvent], config: ScoringConfig
) -> tuple[dict[str, CustomerState], Tally]:
    states: dict[str, CustomerState | None] = {}
    figures = Tally()
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        state = states.get(event.customer_id)
        if isinstance(event, MARKETING_TYPES):
            step = apply_marketing(state, event, config)
            states[event.customer_id], change = step.state, step.campaigns
        else:
            transition = apply(state, event, config.rules)
            states[event.customer_id], change = transition.state, transition.campaigns
        figures = figures + change
    return {cid: state for cid, state in states.items() if state is not None}, figures


def stored_figures(settings: Settings) -> tuple[dict[tuple[str, str], ArmFigures], RetentionTally]:
    """The campaign figures per (campaign, arm) and the retention figures Redis holds, summed
    over every input partition's partial figures."""
    client = redis_client(settings, decode_responses=True)
    try:
        partials = [
            {
                str(k): int(v)
                for k, v in client.hgetall(
                    campaigns_key(settings.redis_namespace, partition)
                ).items()
            }
            for partition in range(settings.partitions)
        ]
    finally:
        client.close()
    campaigns = summed_campaigns(Tally.from_fields(fields) for fields in partials)
    retention = summed_retention(RetentionTally.from_fields(fields) for fields in partials)
    return campaigns.by_campaign_arm(), retention


def alerts_in_outboxes(settings: Settings) -> list[Alert]:
    """The alerts saved in the partitions' outboxes and not published yet."""
    client = redis_client(settings)
    try:
        raws = [
            raw
            for partition in range(settings.partitions)
            for raw in client.lrange(outbox_key(settings.redis_namespace, partition), 0, -1)
        ]
    finally:
        client.close()
    records = [OutboxRecord.from_json(raw) for raw in raws]
    return [Alert.model_validate_json(r.value) for r in records if r.kind == "alerts"]


@dataclass(frozen=True)
class CampaignCheck:
    """Campaign figures expected against Redis's, and churn alerts against their outcomes."""

    touches_expected: int
    arms_differing: int
    touches_lost: int
    touches_doubled: int
    conversions_expected: int
    conversions_off: int
    alerts_published: int | None
    """Distinct churn alerts on the alerts topic (None: not checked)."""
    alerts_settled: int
    alerts_pending: int

    @property
    def alerts_unaccounted(self) -> int | None:
        """Published churn alerts neither settled in the figures nor pending in a state,
        less those counted twice (0: each counted once; None: not checked)."""
        if self.alerts_published is None:
            return None
        return self.alerts_published - self.alerts_settled - self.alerts_pending

    def __str__(self) -> str:
        return (
            f"campaigns: {self.touches_expected} touches expected, {self.touches_lost} lost,"
            f" {self.touches_doubled} counted twice, {self.conversions_off} of"
            f" {self.conversions_expected} conversions off, {self.arms_differing} arms"
            f" differing; churn alerts: "
            + (
                f"{self.alerts_settled} settled, {self.alerts_pending} pending (not checked"
                " against the alerts topic)"
                if self.alerts_published is None
                else f"{self.alerts_published} published = {self.alerts_settled} settled +"
                f" {self.alerts_pending} pending ({self.alerts_unaccounted} unaccounted)"
            )
        )


def check_campaigns(
    settings: Settings, events: Sequence[Event | MarketingEvent], alerts: bool = True
) -> CampaignCheck:
    """Compare Redis's campaign figures with the pure core's, and (``alerts``) count each
    churn alert published on the alerts topic once: settled into the retention figures or
    still pending in its customer's state, both saved in the step that raised it."""
    stored = stored_states(settings, sorted({e.customer_id for e in events}))
    alert_records = records_on(settings, settings.topics.alerts) if alerts else None
    expected = expected_campaigns(events, settings.scoring)
    found, retention = stored_figures(settings)
    arms = set(expected) | set(found)
    touches = {
        arm: (expected.get(arm, ArmFigures()).touches, found.get(arm, ArmFigures()).touches)
        for arm in arms
    }
    published = None
    if alert_records is not None:
        # The outboxes too: a worker stopped right after a sweep leaves its outputs there,
        # for the next worker to publish (docs/reliability.md).
        on_topic = [Alert.model_validate_json(r.value) for r in alert_records if r.value]
        published = len(
            {
                alert.alert_id
                for alert in [*on_topic, *alerts_in_outboxes(settings)]
                if alert.kind == "churn_risk" and alert.customer_id in stored
            }
        )
    return CampaignCheck(
        touches_expected=sum(e for e, _ in touches.values()),
        arms_differing=sum(expected.get(arm) != found.get(arm) for arm in arms),
        touches_lost=sum(max(e - f, 0) for e, f in touches.values()),
        touches_doubled=sum(max(f - e, 0) for e, f in touches.values()),
        conversions_expected=sum(f.conversions for f in expected.values()),
        conversions_off=sum(
            abs(
                expected.get(arm, ArmFigures()).conversions
                - found.get(arm, ArmFigures()).conversions
            )
            for arm in arms
        ),
        alerts_published=published,
        alerts_settled=sum(f.alerts for f in retention.groups.values()),
        alerts_pending=sum(len(state.alert_outcomes.pending) for state in stored.values()),
    )


def stored_states(settings: Settings, customer_ids: list[str]) -> dict[str, CustomerState]:
    """What Redis holds for these customers (those it has a state for)."""
    client = redis_client(settings)
    try:
        pipe = client.pipeline()
        for cid in customer_ids:
            pipe.hget(stored_customer_key(settings, cid), "state")
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


MARKETING_TYPES = (CampaignTouch, RetentionOffer, TouchOpened, TouchClicked)


def with_campaign(
    history: Sequence[Event], seed: int, share: float = 0.3, days: int = 90
) -> list[Event | MarketingEvent]:
    """``history`` with a simulated two-arm campaign (touches, opens, clicks and the
    purchases they cause) on a ``share`` of its customers for ``days`` days from its 90th
    day, merged in event-time order (each topic is sent in order)."""
    customers = sorted({event.customer_id for event in history})
    touched = customers[: max(1, int(len(customers) * share))]
    start = min(event.occurred_at for event in history) + timedelta(days=90)
    truth = CampaignTruth.with_rates("fault-campaign", {"A": 0.05, "B": 0.12})
    campaign = simulate_campaign(truth, touched, start, days, seed)
    merged: list[Event | MarketingEvent] = [*history, *campaign]
    return sorted(merged, key=lambda event: (event.occurred_at, event.event_id))


def scored_events(events: Iterable[Event | MarketingEvent]) -> list[Event]:
    """The events that are scored (all but marketing events)."""
    return [event for event in events if not isinstance(event, MARKETING_TYPES)]


def touches_applied(settings: Settings) -> int:
    """Campaign touches counted in Redis's figures, in all."""
    return sum(figures.touches for figures in stored_figures(settings)[0].values())


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


def outputs_on_topics(settings: Settings, events: Sequence[Event | MarketingEvent]) -> OutputCheck:
    """Read the scores and alerts topics from the beginning and check them against
    ``events`` (:func:`check_outputs`; marketing events are not scored)."""
    scored = scored_events(events)
    stored = stored_states(settings, sorted({e.customer_id for e in scored}))
    return check_outputs(
        scored,
        stored,
        records_on(settings, settings.topics.scores),
        records_on(settings, settings.topics.alerts),
        settings.scoring.alerts,
    )


def records_on(settings: Settings, topic: str, quiet_s: float = 3.0) -> list[Record]:
    """Every record of ``topic`` from the beginning, until none came for ``quiet_s``."""
    assert settings.kafka_bootstrap is not None
    consumer = read_topic(settings.kafka_bootstrap, topic)
    records: list[Record] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            polled = list(poll_records(consumer, timeout_ms=300))
            if polled:
                records.extend(polled)
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return records
