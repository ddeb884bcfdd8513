"""Quiet customers are re-scored as event time passes (the core, the sweep and the outbox)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from streamcrm.core.alerts import AlertRules
from streamcrm.core.events import CancellationEvent, PurchaseEvent
from streamcrm.core.records import MODEL_FIELDS, Alert, CustomerScore
from streamcrm.core.scoring import ScoringConfig, rescore_due_at, score_event, sweep_customer
from streamcrm.core.state import CustomerState
from streamcrm.models import ModelBundle
from streamcrm.store import InMemoryStateStore, OutboxRecord, PendingWrite, SaveResult
from streamcrm.worker.outbox import OutboxPublisher
from streamcrm.worker.pipeline import ScoringPipeline
from tests.outputs import FakeOutputs, outbox_outputs

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
CONFIG = ScoringConfig(rescore_interval=WEEK, rescore_horizon=timedelta(days=30))
_ids = itertools.count()


def order(customer_id: str, day: float) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"p{next(_ids)}",
        customer_id=customer_id,
        order_id=f"o{next(_ids)}",
        amount=50.0,
        items=1,
        channel="web",
        occurred_at=T0 + timedelta(days=day),
    )


def raw(event: PurchaseEvent) -> bytes:
    return event.model_dump_json().encode()


def weekly_buyer(models: ModelBundle, weeks: int = 4) -> CustomerState:
    state: CustomerState | None = None
    for week in range(weeks):
        state = score_event(state, order("steady", 7 * week), models, CONFIG).state
    assert state is not None
    return state


class QuietnessChurnModel:
    """A stand-in churn model whose P(churn) grows with silence (for the alert rules)."""

    n_learned = 0

    def predict_proba_one(self, features: Mapping[str, float]) -> float:
        return min(0.99, 0.1 + features["recency_in_horizons"])

    def explain_one(self, features: Mapping[str, float]) -> list[tuple[str, float]]:
        return [("recency_in_horizons", features["recency_in_horizons"])]

    def predict_and_explain(
        self, features: Mapping[str, float]
    ) -> tuple[float, list[tuple[str, float]]]:
        return self.predict_proba_one(features), self.explain_one(features)

    def learn_one(self, features: Mapping[str, float], churned: bool) -> None:
        return None


def test_a_quiet_customer_is_rescored_a_week_after_their_newest_score_as_of_that_moment() -> None:
    models = ModelBundle()
    state = weekly_buyer(models)  # purchases on days 0, 7, 14, 21
    assert rescore_due_at(state, CONFIG) == T0 + timedelta(days=28)

    too_early = sweep_customer(state, T0 + timedelta(days=27), models, CONFIG)
    swept = sweep_customer(state, T0 + timedelta(days=40), models, CONFIG)

    assert too_early.score is None
    assert swept.score is not None
    assert swept.score.trigger == "time"
    assert swept.score.as_of == T0 + timedelta(days=28)
    assert swept.score.recency_days == pytest.approx(7.0)  # measured at the moment, not at 21
    assert swept.score.usual_gap_days == pytest.approx(7.0)
    assert swept.score.event_id == "asof:steady:2026-01-29T00:00:00Z"
    assert swept.state.score_history[-1].as_of == swept.score.as_of
    # One re-score per visit: the next one (day 35) is owed at once.
    assert swept.due_at == T0 + timedelta(days=35)
    assert swept.state.events_applied == state.events_applied  # the state is otherwise unchanged


def test_at_the_horizon_the_last_rescore_says_lapsed_and_no_more_follow_until_an_event() -> None:
    models = ModelBundle()
    state = weekly_buyer(models)
    moments = []
    scores: list[CustomerScore] = []
    for _ in range(10):
        swept = sweep_customer(state, T0 + timedelta(days=200), models, CONFIG)
        if swept.score is None:
            break
        state = swept.state
        scores.append(swept.score)
        moments.append((swept.score.as_of - T0).days)

    assert moments == [28, 35, 42, 49, 51]  # the horizon (30 days after day 21) comes first
    assert [s.lapsed for s in scores] == [False] * 4 + [True]
    assert rescore_due_at(state, CONFIG) is None

    back = score_event(state, order("steady", 60), models, CONFIG)
    assert rescore_due_at(back.state, CONFIG) == T0 + timedelta(days=67)


def test_an_event_first_makes_the_rescores_its_customer_was_owed_before_it() -> None:
    models = ModelBundle()
    state = weekly_buyer(models, weeks=1)  # one purchase, day 0

    scored = score_event(state, order("steady", 16), models, CONFIG)

    assert [(s.as_of - T0).days for s, _ in scored.outputs] == [7, 14, 16]
    assert [s.trigger for s, _ in scored.outputs] == ["time", "time", "event"]


def test_a_cancelled_customer_is_not_rescored() -> None:
    models = ModelBundle()
    state = weekly_buyer(models, weeks=2)
    state = state.model_copy(update={"cancelled_at": T0 + timedelta(days=8)})

    assert rescore_due_at(state, CONFIG) is None


def test_a_cancellation_read_after_a_rescore_past_it_gives_the_in_order_final_score() -> None:
    # Live with the support topic far behind purchases: the sweep re-scores the customer a
    # week after their purchase before the cancellation of the next day is read. A cancelled
    # customer is never re-scored again, so that final score must be the in-order one.
    models = ModelBundle()
    bought = weekly_buyer(models, weeks=1)  # one purchase, day 0
    cancellation = CancellationEvent(
        event_id="c1", customer_id="steady", occurred_at=T0 + timedelta(days=1)
    )
    in_order = score_event(bought, cancellation, models, CONFIG)

    swept = sweep_customer(bought, T0 + timedelta(days=9), models, CONFIG)
    assert swept.score is not None and swept.score.as_of == T0 + WEEK
    read_late = score_event(swept.state, cancellation, models, CONFIG)

    assert read_late.score is not None and in_order.score is not None
    assert read_late.score.cancelled and read_late.score.as_of == T0 + timedelta(days=1)
    assert read_late.score.model_dump(exclude=set(MODEL_FIELDS)) == in_order.score.model_dump(
        exclude=set(MODEL_FIELDS)
    )
    assert rescore_due_at(read_late.state, CONFIG) is None


def test_a_quiet_customers_churn_alert_says_how_quiet_they_are_against_their_usual_gap() -> None:
    models = ModelBundle()
    models.churn = QuietnessChurnModel()  # type: ignore[assignment]
    config = ScoringConfig(
        rescore_interval=WEEK,
        alerts=AlertRules(
            churn_enter=0.7, churn_leave=0.6, value_at_risk_enter=1e12, value_at_risk_leave=1e12
        ),
    )
    state = weekly_buyer(models, weeks=6)
    alerts: list[Alert] = []
    for _ in range(12):
        swept = sweep_customer(state, T0 + timedelta(days=400), models, config)
        state = swept.state
        alerts += [a for a in swept.alerts if a.kind == "churn_risk"]

    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.event_id is not None and alert.event_id.startswith("asof:steady:")
    assert "quiet " in alert.message and "x their usual gap of 7.0 days" in alert.message
    assert alert.scores["trigger"] == "time"
    silence = alert.scores["silence_over_usual_gap"]
    assert isinstance(silence, float) and silence > 1.0


async def sweep_to_end(pipeline: ScoringPipeline, partition: int, limit: int = 500) -> int:
    made = 0
    while (report := await pipeline.sweep([partition], limit)).rescores:
        made += report.rescores
    return made


async def outputs_of(
    events: Sequence[PurchaseEvent], sweep_every: int | None
) -> tuple[list[str], list[str]]:
    """Score ``events`` through a pipeline, sweeping after every ``sweep_every`` events (None:
    only at the end), and return the re-score ids and alert ids published, in order."""
    store = InMemoryStateStore()
    pipeline = ScoringPipeline(store, CONFIG)
    for n, event in enumerate(events):
        await pipeline.handle(raw(event), "crm.purchases", 0, n)
        if sweep_every is not None and n % sweep_every == 0:
            await sweep_to_end(pipeline, 0)
    await sweep_to_end(pipeline, 0)
    published = await outbox_outputs(store)
    rescores = sorted(s.event_id for s, _ in published if s.trigger == "time")
    alerts = sorted(a.alert_id for _, alerts in published for a in alerts)
    return rescores, alerts


async def test_the_same_events_give_the_same_rescores_and_alerts_whenever_the_sweeps_run() -> None:
    events = sorted(
        [order(f"c{c}", day) for c in range(6) for day in range(0, 20 * (c + 1), 3 + c)]
        + [order("clock", day) for day in range(0, 220, 2)],
        key=lambda e: e.occurred_at,
    )

    never = await outputs_of(events, sweep_every=None)
    often = await outputs_of(events, sweep_every=1)
    sometimes = await outputs_of(events, sweep_every=17)

    assert never == often == sometimes
    assert len(never[0]) > 20  # the quiet customers were re-scored


async def test_a_sweep_visits_at_most_its_limit_of_customers_per_partition() -> None:
    pipeline = ScoringPipeline(InMemoryStateStore(), CONFIG)
    for n in range(10):
        await pipeline.handle(raw(order(f"q{n}", 0)), "crm.purchases", 0, n)
    await pipeline.handle(raw(order("clock", 100)), "crm.purchases", 0, 10)

    report = await pipeline.sweep([0], limit=4)

    assert (report.customers, report.rescores) == (4, 4)


class CountingStore(InMemoryStateStore):
    """The in-memory store, counting load and save calls; refusing the save of customer
    ``refuse`` if set (as Redis would a customer erased meanwhile) and stopping there."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.refuse: str | None = None

    async def load_many(
        self, customer_ids: Sequence[str], partitions: Mapping[str, int] | None = None
    ) -> dict[str, CustomerState | None]:
        self.calls["load"] += 1
        return await super().load_many(customer_ids, partitions)

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        self.calls["save"] += 1
        ids = [w.state.customer_id if w.state is not None else None for w in writes]
        if self.refuse in ids:
            refused = ids.index(self.refuse)
            return [*await super().save_batch(writes[:refused]), SaveResult.CUSTOMER_ERASED]
        return await super().save_batch(writes)


async def test_a_sweep_loads_a_partitions_due_customers_at_once_and_saves_them_in_one_step() -> (
    None
):
    store = CountingStore()
    pipeline = ScoringPipeline(store, CONFIG)
    for n in range(10):
        await pipeline.handle(raw(order(f"q{n}", 0)), "crm.purchases", 0, n)
    await pipeline.handle(raw(order("clock", 100)), "crm.purchases", 0, 10)
    store.calls.clear()

    report = await pipeline.sweep([0])

    assert (report.customers, report.rescores) == (10, 10)
    assert store.calls == {"load": 1, "save": 1}


async def six_quiet_customers(store: InMemoryStateStore) -> tuple[ScoringPipeline, list[str]]:
    """A pipeline whose partition 0 has six customers quiet since day 0 and event time at day
    100, nothing queued for the learner yet; and the due customers in sweep order."""
    pipeline = ScoringPipeline(store, CONFIG, shared_models=True)
    for n in range(6):
        await pipeline.handle(raw(order(f"q{n}", 0)), "crm.purchases", 0, n)
    await pipeline.handle(raw(order("clock", 100)), "crm.purchases", 0, 6)
    pipeline.drain_updates()
    return pipeline, await store.due_customers(0, T0 + timedelta(days=100), 100)


async def test_a_refused_write_in_a_sweep_leaves_it_and_the_later_customers_due_and_unlearned() -> (
    None
):
    control, due = await six_quiet_customers(CountingStore())
    await control.sweep([0])
    every_update = control.drain_updates()
    store = CountingStore()
    pipeline, _ = await six_quiet_customers(store)
    before = await store.load_many(due, dict.fromkeys(due, 0))
    store.refuse = due[3]

    report = await pipeline.sweep([0])

    assert report.rescores == 3
    after = await store.load_many(due, dict.fromkeys(due, 0))
    assert [after[c] == before[c] for c in due] == [False] * 3 + [True] * 3
    assert set(due[3:]) <= set(await store.due_customers(0, T0 + timedelta(days=100), 100))
    per_customer = len(every_update) // len(due)
    assert per_customer > 0
    assert pipeline.drain_updates() == every_update[: 3 * per_customer]


async def test_a_partition_whose_topic_still_has_messages_holds_its_watermark_back() -> None:
    pipeline = ScoringPipeline(InMemoryStateStore(), CONFIG)
    await pipeline.handle(raw(order("quiet", 0)), "crm.purchases", 0, 0)
    await pipeline.handle(raw(order("clock", 100)), "crm.purchases", 1, 0)

    def feedback_pending(partition: int) -> Iterable[str]:
        return ["crm.feedback"] if partition == 0 else []

    held = await pipeline.sweep([0], holding_back=feedback_pending)
    free = await pipeline.sweep([0])

    assert pipeline.partition_watermark(0, ["crm.purchases"]) == T0 - timedelta(days=2)
    assert held.rescores == 0  # feedback of partition 0 might still hold an event of day 5
    assert free.rescores == 1


async def filled_outbox(records: int) -> InMemoryStateStore:
    store = InMemoryStateStore()
    state = CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0)
    outbox = tuple(OutboxRecord("scores", f"c{n}", "{}", f"id{n}") for n in range(records))
    await store.save(state, None, None, None, outbox)
    return store


async def test_the_outbox_is_published_once_and_cleared() -> None:
    store, outputs = await filled_outbox(5), FakeOutputs()
    publisher = OutboxPublisher(store, outputs, batch=2)

    assert await publisher.drain(0) == 5
    assert await publisher.drain(0) == 0
    assert outputs.ids() == [f"id{n}" for n in range(5)]
    assert await store.outbox(0, 10) == []


async def test_a_drain_that_read_less_than_a_batch_does_not_read_the_outbox_again() -> None:
    store, outputs = await filled_outbox(5), FakeOutputs()
    publisher = OutboxPublisher(store, outputs, batch=2)
    reads = 0
    read = store.outbox

    async def counted(partition: int, limit: int) -> list[OutboxRecord]:
        nonlocal reads
        reads += 1
        return await read(partition, limit)

    store.outbox = counted  # type: ignore[method-assign]

    assert await publisher.drain(0) == 5
    assert reads == 3  # 2 + 2 + 1: the short read was the last


@pytest.mark.parametrize("sent_before_crash", [0, 2, 3])
async def test_a_publisher_killed_mid_drain_loses_and_doubles_nothing_after_a_restart(
    sent_before_crash: int,
) -> None:
    store, outputs = await filled_outbox(3), FakeOutputs()
    outputs.fail_after = sent_before_crash if sent_before_crash < 3 else None
    clear = store.clear_outbox

    async def killed_before_clearing(partition: int, records: Sequence[OutboxRecord]) -> int:
        raise ConnectionError("killed")  # every send acknowledged, the outbox not cleared

    store.clear_outbox = killed_before_clearing  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await OutboxPublisher(store, outputs).drain(0)

    store.clear_outbox = clear  # type: ignore[method-assign]
    outputs.fail_after = None
    restarted = OutboxPublisher(store, outputs)
    await restarted.drain(0)

    assert outputs.ids() == ["id0", "id1", "id2"]
    assert restarted.recovered == sent_before_crash


async def test_two_drains_of_one_outbox_at_once_send_each_output_once() -> None:
    store, outputs = await filled_outbox(6), FakeOutputs(send_delay_s=0.001)
    publisher = OutboxPublisher(store, outputs, batch=2)

    await asyncio.gather(publisher.drain(0), publisher.drain(0))

    assert outputs.ids() == sorted(f"id{n}" for n in range(6))
    assert await store.outbox(0, 10) == []


async def test_an_old_owner_clearing_late_at_a_handover_leaves_what_was_appended_since() -> None:
    """At a handover the partition's old owner may still be sending when its new owner
    drains the same outputs (sent twice: at least once) and scores the next event. The old
    owner clears after that: it must not take the new event's output, which no one sent."""
    store = await filled_outbox(3)
    new_outputs, old_outputs = FakeOutputs(), FakeOutputs()
    old_outputs.logs = new_outputs.logs  # the same topics
    acknowledged = asyncio.Event()
    send = old_outputs.send_all

    async def slow_acknowledgement(records: Sequence[OutboxRecord]) -> None:
        await acknowledged.wait()
        await send(records)

    old_outputs.send_all = slow_acknowledgement  # type: ignore[method-assign]
    old_owner, new_owner = OutboxPublisher(store, old_outputs), OutboxPublisher(store, new_outputs)
    old_drain = asyncio.create_task(old_owner.drain(0))
    await asyncio.sleep(0)  # the old owner has read the outbox and is sending
    await new_owner.drain(0)
    await store.save(
        CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0),
        None,
        None,
        None,
        (OutboxRecord("scores", "c9", "{}", "id9"),),
    )
    acknowledged.set()
    await old_drain  # sends id0-id2 again, then clears
    await new_owner.drain(0)

    assert set(new_outputs.ids()) == {"id0", "id1", "id2", "id9"}
    assert await store.outbox(0, 10) == []


async def test_end_offsets_are_saved_again_only_for_new_destinations_or_after_many_sends() -> None:
    store, outputs = InMemoryStateStore(), FakeOutputs()
    publisher = OutboxPublisher(store, outputs, resave_after=4)

    for n in range(6):
        await store.save(
            CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0),
            None,
            None,
            None,
            (OutboxRecord("scores", "c", "{}", f"id{n}"),),
        )
        await publisher.drain(0)

    # The first drain saves; the next three reuse it (the same destination); the fifth send
    # is past resave_after, so it saves again.
    assert outputs.end_offset_requests == 2


async def test_a_crash_after_a_drain_that_reused_older_saved_offsets_still_doubles_nothing() -> (
    None
):
    store, outputs = await filled_outbox(2), FakeOutputs()
    first = OutboxPublisher(store, outputs, resave_after=1_000)
    await first.drain(0)  # saves the end offsets, sends id0, id1
    await store.save(
        CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0),
        None,
        None,
        None,
        tuple(OutboxRecord("scores", f"c{n}", "{}", f"id{n}") for n in range(2, 4)),
    )

    async def killed_before_clearing(partition: int, records: Sequence[OutboxRecord]) -> int:
        raise ConnectionError("killed")

    clear = store.clear_outbox
    store.clear_outbox = killed_before_clearing  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await first.drain(0)  # sends id2, id3 from the offsets saved before id0
    store.clear_outbox = clear  # type: ignore[method-assign]

    restarted = OutboxPublisher(store, outputs)
    await restarted.drain(0)

    assert outputs.ids() == ["id0", "id1", "id2", "id3"]
    assert restarted.recovered == 2


async def test_a_drain_that_failed_after_sending_checks_the_topics_before_sending_again() -> None:
    """Redis went away between the acknowledgement and the clearing: the same publisher's
    next drain must not send those outputs a second time."""
    store, outputs = await filled_outbox(3), FakeOutputs()
    publisher = OutboxPublisher(store, outputs)
    await publisher.drain(0)  # a first drain: the partition is checked
    await store.save(
        CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0),
        None,
        None,
        None,
        tuple(OutboxRecord("scores", f"c{n}", "{}", f"id{n}") for n in range(3, 5)),
    )
    clear = store.clear_outbox

    async def redis_gone(partition: int, records: Sequence[OutboxRecord]) -> int:
        raise ConnectionError("Redis restarting")

    store.clear_outbox = redis_gone  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await publisher.drain(0)
    store.clear_outbox = clear  # type: ignore[method-assign]

    await publisher.drain(0)

    assert outputs.ids() == [f"id{n}" for n in range(5)]
    assert await store.outbox(0, 10) == []


async def test_a_recovery_sends_an_output_re_made_under_a_published_id_but_not_a_copy() -> None:
    """After Redis lost writes the worker re-makes them: a score with the id of one already
    published but other figures is news (the compacted topic must end on it); an unchanged
    one restored with the lost clearing is not."""
    store, outputs = InMemoryStateStore(), FakeOutputs()
    published = OutboxRecord("scores", "c", '{"churn": 0.2}', "e1")
    await store.save(
        CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0),
        None,
        None,
        None,
        (published, OutboxRecord("scores", "c", '{"churn": 0.3}', "e2")),
    )
    await OutboxPublisher(store, outputs).drain(0)
    remade = OutboxRecord("scores", "c", '{"churn": 0.4}', "e2")
    await store.save(
        CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0),
        None,
        None,
        None,
        (published, remade),  # the first restored unchanged, the second re-made
    )

    restarted = OutboxPublisher(store, outputs)
    await restarted.drain(0)

    assert [r.value for log in outputs.logs.values() for r in log] == [
        '{"churn": 0.2}',
        '{"churn": 0.3}',
        '{"churn": 0.4}',
    ]
    assert restarted.recovered == 1


async def test_an_output_appended_twice_by_a_retried_save_is_sent_once() -> None:
    """A re-score has no offset mark: a save retried after its reply was lost (Redis
    restarting) appends it again. Same id and bytes: the publisher sends it once, whether the
    copy is in the same drain or the next."""
    store, outputs = InMemoryStateStore(), FakeOutputs()
    publisher = OutboxPublisher(store, outputs)
    state = CustomerState(customer_id="c", first_seen_at=T0, last_event_at=T0)
    rescore = OutboxRecord("scores", "c", '{"churn": 0.5}', "asof:c:2026-01-08T00:00:00Z")
    await store.save(state, None, None, None, (rescore, rescore))
    await publisher.drain(0)
    await store.save(state, None, None, None, (rescore,))

    await publisher.drain(0)

    assert outputs.ids() == ["asof:c:2026-01-08T00:00:00Z"]
    assert await store.outbox(0, 10) == []


async def test_an_erasure_removes_the_customers_unpublished_outputs() -> None:
    store = InMemoryStateStore()
    for customer in ("erased", "kept"):
        state = CustomerState(customer_id=customer, first_seen_at=T0, last_event_at=T0)
        await store.save(
            state, None, None, None, (OutboxRecord("scores", customer, "{}", customer),)
        )

    await store.erase("erased", 0, None, T0)

    assert [r.key for r in await store.outbox(0, 10)] == ["kept"]


def test_an_outbox_record_keeps_a_score_whole() -> None:
    models = ModelBundle()
    swept = sweep_customer(weekly_buyer(models), T0 + timedelta(days=40), models, CONFIG)
    assert swept.score is not None

    record = OutboxRecord.from_json(OutboxRecord.of_score(swept.score).to_json())

    assert CustomerScore.model_validate_json(record.value) == swept.score
    assert (record.kind, record.key, record.record_id) == ("scores", "steady", swept.score.event_id)
    assert json.loads(record.value)["schema_version"] == 2


async def test_a_restarted_worker_sweeps_to_its_watermark_before_any_new_message() -> None:
    store = InMemoryStateStore()
    first = ScoringPipeline(store, CONFIG)
    await first.handle(raw(order("quiet", 0)), "crm.purchases", 0, 0)
    await first.handle(raw(order("clock", 30)), "crm.purchases", 0, 1)

    restarted = ScoringPipeline(store, CONFIG)  # nothing new to consume
    report = await restarted.sweep([0])

    assert restarted.watermark == T0 + timedelta(days=28)
    assert report.rescores == 1


async def test_the_last_rescore_is_the_same_whatever_order_the_topics_were_consumed_in() -> None:
    from streamcrm.core.events import FeedbackEvent
    from streamcrm.core.records import MODEL_FIELDS

    purchases = [order("c", day) for day in (0, 10, 20)]
    rating = FeedbackEvent(
        event_id="f1",
        customer_id="c",
        rating=4,
        scale="csat",
        category="product",
        occurred_at=T0 + timedelta(days=45),
    )
    clock = [order("clock", day) for day in range(0, 120, 5)]

    async def final_score(first: Sequence[PurchaseEvent | FeedbackEvent]) -> dict[str, object]:
        store = InMemoryStateStore()
        pipeline = ScoringPipeline(store, CONFIG)
        rest = [e for e in (*purchases, rating) if e not in first]
        offsets: Counter[str] = Counter()
        for event in [*first, *clock, *rest]:
            topic = "crm.feedback" if isinstance(event, FeedbackEvent) else "crm.purchases"
            await pipeline.handle(event.model_dump_json().encode(), topic, 0, offsets[topic])
            offsets[topic] += 1
            await sweep_to_end(pipeline, 0)
        score = await store.load_score("c")
        assert score is not None
        # Like event_id, trigger names what made the record: arrival order decides that.
        return score.model_dump(mode="json", exclude={*MODEL_FIELDS, "event_id", "trigger"})

    in_order = await final_score([])
    feedback_far_ahead = await final_score([rating])

    assert in_order == feedback_far_ahead
    assert in_order["lapsed"] is True
    assert in_order["as_of"] == "2026-03-17T00:00:00Z"  # the lapse moment: day 45 + 30
