"""Behaviour of the seam where the core meets I/O: ``ScoringPipeline`` over the in-memory store."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamcrm.core.events import decode_event
from streamcrm.core.features import FEATURE_NAMES
from streamcrm.core.records import CustomerScore
from streamcrm.core.scoring import ScoredEvent, ScoringConfig, score_event
from streamcrm.core.state import RECENT_EVENT_IDS, CustomerState
from streamcrm.errors import (
    EventValidationError,
    InvalidEventError,
    LateEventError,
    MessageKeyError,
    StateBehindError,
    StoreUnavailableError,
    WrongTopicError,
)
from streamcrm.models import ModelBundle, ModelUpdate
from streamcrm.store import (
    InMemoryStateStore,
    InputPosition,
    LedgerDue,
    OutboxRecord,
    SaveResult,
)
from streamcrm.worker.learning import MODEL_CHECKPOINT, SharedLearner
from streamcrm.worker.locks import KeyedLocks
from streamcrm.worker.pipeline import ScoringPipeline
from tests.outputs import outbox_outputs

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ids = itertools.count()


def purchase(customer_id: str = "c1", day: float = 0.0, **fields: Any) -> bytes:
    return json.dumps(
        {
            "type": "purchase",
            "event_id": f"p{next(_ids)}",
            "customer_id": customer_id,
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
            "order_id": "o1",
            "amount": 40.0,
            "items": 1,
            "channel": "web",
            **fields,
        }
    ).encode()


class YieldingStore(InMemoryStateStore):
    """The in-memory store, but every call yields to the event loop like real I/O does.

    Without the yield, an unlocked load → score → save could never interleave and a
    concurrency test would pass whether or not the pipeline locks.
    """

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        await asyncio.sleep(0)
        return await super().load(customer_id, partition)

    async def save(
        self,
        state: CustomerState,
        score: CustomerScore | None,
        due: LedgerDue | None = None,
        position: InputPosition | None = None,
        outbox: Sequence[OutboxRecord] = (),
    ) -> SaveResult:
        await asyncio.sleep(0)
        return await super().save(state, score, due, position, outbox)


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore()


@pytest.fixture
def pipeline(store: InMemoryStateStore) -> ScoringPipeline:
    return ScoringPipeline(store, ScoringConfig())


async def test_handle_saves_the_new_state_and_score(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    scored = await pipeline.handle(purchase(amount=75.0), topic="crm.purchases")

    assert scored.score is not None
    assert await store.load("c1") == scored.state
    assert await store.load_score("c1") == scored.score
    assert scored.state.order_count == 1
    assert scored.score.monetary == 75.0


async def test_handle_carries_state_from_one_event_to_the_next(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    await pipeline.handle(purchase(day=0))
    await pipeline.handle(purchase(day=10))

    state = await store.load("c1")
    assert state is not None
    assert state.order_count == 2
    assert [s.purchased for s in state.pending_snapshots] == [True, False]


async def test_customers_are_kept_apart(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    await pipeline.handle(purchase("alice"))
    await pipeline.handle(purchase("alice"))
    await pipeline.handle(purchase("bob"))

    alice, bob = await store.load("alice"), await store.load("bob")
    assert alice is not None and bob is not None
    assert (alice.order_count, bob.order_count) == (2, 1)


@pytest.mark.parametrize(
    ("raw", "topic", "error"),
    [
        (b"{not json", "crm.purchases", InvalidEventError),
        (purchase(amount=-5.0), "crm.purchases", EventValidationError),
        (purchase(), "crm.feedback", WrongTopicError),
    ],
    ids=["undecodable", "invalid", "wrong-topic"],
)
async def test_invalid_message_raises_and_saves_nothing(
    pipeline: ScoringPipeline,
    store: InMemoryStateStore,
    raw: bytes,
    topic: str,
    error: type[InvalidEventError],
) -> None:
    with pytest.raises(error):
        await pipeline.handle(raw, topic=topic)

    assert await store.load("c1") is None
    assert await store.load_score("c1") is None
    assert await store.load_model(MODEL_CHECKPOINT) is None
    assert pipeline.models.version == ModelBundle().version


async def test_duplicate_message_is_reported_and_changes_nothing(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    raw = purchase()
    first = await pipeline.handle(raw)
    version = pipeline.models.version

    again = await pipeline.handle(raw)

    assert again.duplicate is True
    assert again.score is None
    assert await store.load("c1") == first.state
    assert await store.load_score("c1") == first.score
    assert pipeline.models.version == version


async def test_checkpoint_saves_only_when_the_models_changed(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    assert await pipeline.checkpoint_models() is False  # nothing loaded, nothing learned

    await pipeline.handle(purchase())
    assert await pipeline.checkpoint_models() is True
    assert await pipeline.checkpoint_models() is False

    await pipeline.handle(purchase())
    assert await pipeline.checkpoint_models() is True

    blob = await store.load_model(MODEL_CHECKPOINT)
    assert blob is not None
    assert ModelBundle.from_bytes(blob).version == pipeline.models.version


async def test_a_message_redelivered_after_its_id_was_forgotten_is_stopped_by_the_offset_mark(
    store: InMemoryStateStore,
) -> None:
    pipeline = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    first = purchase("c1", day=0)
    await pipeline.handle(first, "crm.purchases", partition=2, offset=0)
    for n in range(1, RECENT_EVENT_IDS + 5):  # more events than the state remembers ids for
        await pipeline.handle(purchase("c1", day=n / 10), "crm.purchases", 2, offset=n)
    assert pipeline.updates is not None
    pipeline.updates.drain()
    before = await store.load("c1")

    again = await pipeline.handle(first, "crm.purchases", partition=2, offset=0)

    assert again.duplicate and again.score is None
    assert await store.load("c1") == before
    assert pipeline.updates.drain() == []  # nothing to learn twice


async def test_offset_marks_are_per_topic_incarnation_and_partition(
    store: InMemoryStateStore,
) -> None:
    pipeline = ScoringPipeline(store, ScoringConfig())
    pipeline.topic_ids = {"crm.purchases": "id-1"}
    await pipeline.handle(purchase("c1", day=0), "crm.purchases", partition=0, offset=0)
    await pipeline.handle(purchase("c1", day=1), "crm.purchases", partition=0, offset=7)

    other_partition = await pipeline.handle(purchase("c2", day=0), "crm.purchases", 1, offset=0)
    pipeline.topic_ids = {"crm.purchases": "id-2"}  # the topic was re-created: offsets restart
    recreated = await pipeline.handle(purchase("c3", day=0), "crm.purchases", 0, offset=0)

    assert other_partition.score is not None and recreated.score is not None


async def test_a_duplicate_does_not_make_a_new_checkpoint(pipeline: ScoringPipeline) -> None:
    raw = purchase()
    await pipeline.handle(raw)
    await pipeline.checkpoint_models()

    await pipeline.handle(raw)

    assert await pipeline.checkpoint_models() is False


async def test_a_new_pipeline_resumes_from_the_checkpoint(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    for day in (0, 100, 200):  # each purchase's watermark closes the previous window
        await pipeline.handle(purchase(day=day))
    await pipeline.checkpoint_models()

    resumed = ScoringPipeline(store, ScoringConfig())
    await resumed.load_models()

    assert resumed.models.version == pipeline.models.version == "churn-2.segments-3.clv-0"
    assert await resumed.checkpoint_models() is False


async def test_models_are_loaded_once_per_process(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    await pipeline.load_models()
    await store.save_model(MODEL_CHECKPOINT, ModelBundle().to_bytes(), "churn-0.segments-0.clv-0")
    models = pipeline.models

    await pipeline.load_models()

    assert pipeline.models is models


class SlowFirstCheckpointStore(InMemoryStateStore):
    """The in-memory store whose first ``load_model`` waits until ``release`` is set.

    Real stores answer concurrent reads in any order; this one makes the order certain.
    """

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.model_reads = 0

    async def load_model(self, name: str) -> bytes | None:
        self.model_reads += 1
        if self.model_reads == 1:
            await self.release.wait()
        return await super().load_model(name)


async def test_concurrent_start_up_does_not_forget_what_the_models_learned() -> None:
    store = SlowFirstCheckpointStore()
    checkpoint = ModelBundle()
    await store.save_model(MODEL_CHECKPOINT, checkpoint.to_bytes(), checkpoint.version)
    pipeline = ScoringPipeline(store, ScoringConfig())

    slow = asyncio.create_task(pipeline.handle(purchase("c1")))
    await asyncio.sleep(0)  # the first handle() is now waiting for its checkpoint read
    second = asyncio.create_task(pipeline.handle(purchase("c2")))
    await asyncio.sleep(0)  # the second arrives while the checkpoint is still being read
    store.release.set()
    await asyncio.wait_for(asyncio.gather(slow, second), timeout=5)

    assert pipeline.models.segments.n_learned == 2
    assert store.model_reads == 1


async def test_concurrent_events_of_one_customer_are_applied_one_at_a_time() -> None:
    store = YieldingStore()
    pipeline = ScoringPipeline(store, ScoringConfig())

    results = await asyncio.gather(*(pipeline.handle(purchase("c1", day=i)) for i in range(50)))

    state = await store.load("c1")
    assert state is not None
    assert state.order_count == 50
    assert state.events_applied == 50
    assert not any(result.duplicate for result in results)
    assert len(pipeline._locks) == 0


async def test_yielding_store_really_lets_unlocked_updates_race() -> None:
    # The control for the test above: without the lock, the same burst loses updates.
    store = YieldingStore()
    pipeline = ScoringPipeline(store, ScoringConfig())
    await pipeline.load_models()

    async def unlocked(raw: bytes) -> None:
        event = decode_event(raw)
        scored = score_event(await store.load("c1"), event, pipeline.models, pipeline.config)
        assert scored.score is not None
        await store.save(scored.state, scored.score)

    await asyncio.gather(*(unlocked(purchase("c1", day=i)) for i in range(50)))

    state = await store.load("c1")
    assert state is not None
    assert state.order_count < 50


async def test_keyed_locks_serialise_holders_of_one_key_and_then_forget_it() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    overlaps: list[int] = []

    async def hold(key: str, tag: str) -> None:
        async with locks.hold(key):
            inside.append(tag)
            overlaps.append(len(inside))
            await asyncio.sleep(0)
            inside.remove(tag)

    await asyncio.gather(*(hold("a", f"a{i}") for i in range(10)))

    assert overlaps == [1] * 10
    assert len(locks) == 0


async def test_keyed_locks_let_different_keys_proceed_together() -> None:
    locks = KeyedLocks()
    both_inside = asyncio.Event()
    entered: set[str] = set()

    async def hold(key: str) -> None:
        async with locks.hold(key):
            entered.add(key)
            if len(entered) == 2:
                both_inside.set()
            await asyncio.wait_for(both_inside.wait(), timeout=1.0)

    await asyncio.gather(hold("a"), hold("b"))

    assert len(locks) == 0


async def test_keyed_locks_are_released_when_the_holder_fails() -> None:
    locks = KeyedLocks()

    with pytest.raises(RuntimeError):
        async with locks.hold("a"):
            raise RuntimeError("boom")

    assert len(locks) == 0
    async with locks.hold("a"):
        assert len(locks) == 1


class FlakyStore(InMemoryStateStore):
    """Unavailable for the first ``failures`` loads and the first ``failures`` saves."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.load_failures = failures
        self.save_failures = failures

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        if self.load_failures:
            self.load_failures -= 1
            raise StoreUnavailableError("down")
        return await super().load(customer_id, partition)

    async def save(
        self,
        state: CustomerState,
        score: CustomerScore | None,
        due: LedgerDue | None = None,
        position: InputPosition | None = None,
        outbox: Sequence[OutboxRecord] = (),
    ) -> SaveResult:
        if self.save_failures:
            self.save_failures -= 1
            raise StoreUnavailableError("down")
        return await super().save(state, score, due, position, outbox)


async def test_an_unavailable_store_is_waited_for_and_the_models_learn_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamcrm.store.retrying.FIRST_RETRY_DELAY_S", 0.001)
    store = FlakyStore(failures=0)
    pipeline = ScoringPipeline(store, ScoringConfig())
    await pipeline.handle(purchase("c1", day=0))
    store.load_failures = store.save_failures = 3

    scored = await pipeline.handle(purchase("c1", day=100))

    assert scored.examples_learned == 1
    assert pipeline.models.churn.n_learned == 1  # not once per retry
    state = await store.load("c1")
    assert state is not None and state.order_count == 2


async def test_a_late_event_is_counted_saved_and_reported_not_applied(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    await pipeline.handle(purchase("c1", day=10))
    score_before = await store.load_score("c1")

    with pytest.raises(LateEventError, match=r"72\.0h older than the newest purchases event"):
        await pipeline.handle(purchase("c1", day=7))

    state = await store.load("c1")
    assert state is not None and state.late_events == 1 and state.order_count == 1
    assert await store.load_score("c1") == score_before


async def test_an_unknown_currency_is_reported_and_nothing_is_saved(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    with pytest.raises(EventValidationError, match="unknown currency 'XYZ'"):
        await pipeline.handle(purchase("c1", currency="XYZ"))

    assert await store.load("c1") is None


async def test_the_metrics_report_counts_outcomes_and_measures_the_churn_model(
    pipeline: ScoringPipeline,
) -> None:
    for day in (0, 100, 200):
        await pipeline.handle(purchase("c1", day=day))
    await pipeline.handle(purchase("c1", day=300, event_id="p-repeat"))
    await pipeline.handle(purchase("c1", day=300, event_id="p-repeat"))
    with pytest.raises(InvalidEventError):
        await pipeline.handle(b"{")
    now = datetime(2026, 6, 1, tzinfo=UTC)

    report = pipeline.model_metrics("w1", now)

    assert report.events == {"duplicate": 1, "invalid": 1, "scored": 4}
    assert report.labelled_examples == pipeline.models.churn.n_learned == 3
    assert report.churned_examples == 3  # each window closed before the next purchase
    assert report.roc_auc is None  # one class only: AUC is undefined, not 0
    assert report.brier is not None and report.log_loss is not None
    assert report.model_version == pipeline.models.version
    assert report.event_time == T0 + timedelta(days=300)
    assert sum(report.segment_shares.values()) == pytest.approx(1.0)
    assert pipeline.model_metrics("w1", now).segment_shares == {}  # a new interval began


async def test_a_metrics_report_raises_model_drift_once_for_each_new_detection(
    pipeline: ScoringPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert pipeline.model_metrics("w1", now).model_drift is False

    pipeline.models.churn.drifts_detected = 1  # as ADWIN does when the error rate rises
    flagged = pipeline.model_metrics("w1", now)
    again = pipeline.model_metrics("w1", now)

    assert (flagged.model_drift, flagged.drifts_detected) == (True, 1)
    assert (again.model_drift, again.drifts_detected) == (False, 1)
    assert sum("model drift" in record.getMessage() for record in caplog.records) == 1


async def test_a_sweep_labels_a_quiet_customer_once_the_watermark_passes_the_window(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    await pipeline.handle(purchase("quiet", day=0), partition=2)
    await pipeline.handle(purchase("busy", day=1), partition=2)
    assert (await pipeline.sweep([2])).examples_learned == 0  # nobody's window has closed

    await pipeline.handle(purchase("busy", day=120), partition=2)  # moves the watermark
    report = await pipeline.sweep([2])

    quiet = await store.load("quiet")
    assert quiet is not None
    # Heartbeats on days 30, 60 and 90 (< watermark 118), and the day-0 window closed.
    assert report.heartbeats == 3
    assert [s.scored_at for s in quiet.pending_snapshots] == [
        T0 + timedelta(days=d) for d in (30, 60, 90)
    ]
    assert report.examples_learned == 1
    assert pipeline.models.churn.n_churned >= 1


async def test_a_sweep_only_visits_the_partitions_it_is_given(
    pipeline: ScoringPipeline, store: InMemoryStateStore
) -> None:
    await pipeline.handle(purchase("elsewhere", day=0), partition=1)
    await pipeline.handle(purchase("mover", day=200), partition=0)

    assert (await pipeline.sweep([0])).customers == 0
    assert (await pipeline.sweep([1])).customers == 1


async def test_shared_pipelines_queue_updates_and_score_with_the_learners_checkpoint(
    store: InMemoryStateStore,
) -> None:
    first = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    second = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    learner = SharedLearner(store)
    await first.handle(purchase("a", day=0))
    await second.handle(purchase("b", day=100))
    assert first.models.version == second.models.version == "churn-0.segments-0.clv-0"

    for update in first.drain_updates() + second.drain_updates():
        await learner.learn(update)
    assert await learner.checkpoint()
    assert await first.refresh_models() and await second.refresh_models()

    assert first.models.version == second.models.version == "churn-0.segments-2.clv-0"
    scored = await second.handle(purchase("c", day=101))
    assert scored.score is not None and scored.score.model_version == "churn-0.segments-2.clv-0"


async def test_a_learner_never_overwrites_a_newer_checkpoint(store: InMemoryStateStore) -> None:
    ahead, behind = SharedLearner(store), SharedLearner(store)
    scored_update = ModelUpdate(kind="scored", features=dict.fromkeys(FEATURE_NAMES, 1.0))
    await behind.learn(scored_update)
    for _ in range(3):
        await ahead.learn(scored_update)
    assert await ahead.checkpoint()

    assert await behind.checkpoint() is False
    assert await store.load_model_version(MODEL_CHECKPOINT) == "churn-0.segments-3.clv-0"


async def test_an_event_dated_too_far_ahead_of_the_clock_is_rejected_and_saves_nothing(
    store: InMemoryStateStore,
) -> None:
    from streamcrm.errors import FutureEventError

    now = T0 + timedelta(days=10)
    guarded = ScoringPipeline(
        store, ScoringConfig(), max_event_time_skew=timedelta(hours=24), clock=lambda: now
    )
    await guarded.handle(purchase("c1", day=10.9), "crm.purchases")
    with pytest.raises(FutureEventError):
        await guarded.handle(purchase("c2", day=11.5), "crm.purchases")
    assert await store.load("c2") is None
    assert guarded.outcomes["invalid"] == 1


def touch(customer_id: str, day: float) -> bytes:
    return json.dumps(
        {
            "type": "touch",
            "event_id": f"m{next(_ids)}",
            "customer_id": customer_id,
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
            "touch_id": f"t{next(_ids)}",
            "campaign_id": "spring",
            "arm": "A",
            "channel": "email",
        }
    ).encode()


async def test_a_marketing_event_dated_too_far_ahead_of_the_clock_is_rejected_and_saves_nothing(
    store: InMemoryStateStore,
) -> None:
    """As any other event: a touch dated years ahead, once applied, would make every later
    touch of its customer late (their attribution horizon would be in the future)."""
    from streamcrm.errors import FutureEventError

    now = T0 + timedelta(days=10)
    guarded = ScoringPipeline(
        store, ScoringConfig(), max_event_time_skew=timedelta(hours=24), clock=lambda: now
    )
    await guarded.handle_marketing(touch("c1", day=10.9), "crm.marketing", 0, 0)
    with pytest.raises(FutureEventError):
        await guarded.handle_marketing(touch("c1", day=11.5), "crm.marketing", 0, 1)
    with pytest.raises(FutureEventError):
        await guarded.handle_marketing(touch("c2", day=365 * 70), "crm.marketing", 0, 2)
    await guarded.handle_marketing(touch("c1", day=10.5), "crm.marketing", 0, 3)

    c1 = await store.load("c1")
    assert c1 is not None and len(c1.marketing.touches) == 2 and c1.late_events == 0
    assert await store.load("c2") is None
    assert guarded.outcomes["invalid"] == 2


def privacy(kind: str, customer_id: str = "c1", day: float = 0.0) -> bytes:
    return json.dumps(
        {
            "type": kind,
            "event_id": f"r{next(_ids)}",
            "customer_id": customer_id,
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
        }
    ).encode()


async def test_an_erasure_forgets_the_customer_everywhere_and_asks_for_a_tombstone(
    store: InMemoryStateStore,
) -> None:
    shared = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    await shared.handle(purchase("c1"), "crm.purchases", 0, 0)
    shared.drain_updates()

    outcome = await shared.handle_privacy(privacy("erasure", day=1), "crm.privacy", 0, 0)

    assert outcome.tombstone and outcome.erasure is not None and outcome.erasure.state_deleted
    assert await store.load("c1") is None and await store.load_score("c1") is None
    assert [(u.kind, u.customer_id) for u in shared.drain_updates()] == [("forget", "c1")]


async def test_a_redelivered_erasure_asks_again_for_the_tombstone_and_the_forget(
    store: InMemoryStateStore,
) -> None:
    """What followed the first delivery may have died with its worker; both are harmless
    twice."""
    shared = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    request = privacy("erasure", day=1)
    await shared.handle_privacy(request, "crm.privacy", 0, 0)
    shared.drain_updates()

    again = await shared.handle_privacy(request, "crm.privacy", 0, 0)

    assert again.duplicate and again.tombstone
    assert [(u.kind, u.customer_id) for u in shared.drain_updates()] == [("forget", "c1")]
    assert [r["action"] for r in await store.audit_records()] == ["erasure"]


async def test_a_malformed_first_message_of_a_privacy_partition_is_marked_and_known(
    store: InMemoryStateStore, pipeline: ScoringPipeline
) -> None:
    """Its dead letter moves the partition's mark, so the partition must be one the
    offset-mark check knows (it once crashed the worker's timer)."""
    with pytest.raises(InvalidEventError):
        await pipeline.handle_privacy(b"{not json", "crm.privacy", 2, 0)
    await pipeline.note_dead_lettered("crm.privacy", 2, 0)

    assert pipeline.partitions_applied() == [("crm.privacy", 2)]
    assert await pipeline.check_partition("crm.privacy", 2) is None


async def test_a_late_event_of_an_erased_customer_is_dropped_unsaved_and_unlearned(
    store: InMemoryStateStore,
) -> None:
    shared = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    await shared.handle_privacy(privacy("erasure", day=1), "crm.privacy", 0, 0)
    shared.drain_updates()

    late = await shared.handle(purchase("c1", day=0.5), "crm.purchases", 0, 0)

    assert late.erased and late.score is None
    assert await store.load("c1") is None
    assert shared.drain_updates() == []
    assert shared.outcomes["erased customer"] == 1


async def test_after_recorded_consent_the_customer_starts_again_as_new(
    store: InMemoryStateStore, pipeline: ScoringPipeline
) -> None:
    await pipeline.handle(purchase("c1", day=0), "crm.purchases", 0, 0)
    await pipeline.handle_privacy(privacy("erasure", day=1), "crm.privacy", 0, 0)
    consent = await pipeline.handle_privacy(privacy("consent", day=2), "crm.privacy", 0, 1)

    again = await pipeline.handle(purchase("c1", day=3), "crm.purchases", 0, 1)

    assert not consent.tombstone and again.score is not None
    assert again.state.order_count == 1  # nothing of the erased history came back


async def test_a_learner_checkpoints_a_model_that_only_forgot_a_customer(
    store: InMemoryStateStore,
) -> None:
    learner = SharedLearner(store)
    await learner.learn(ModelUpdate(kind="labelled", features={"x": 1.0}, churned=False))
    assert await learner.checkpoint()

    await learner.learn(ModelUpdate(kind="forget", customer_id="c1"))

    assert await learner.checkpoint()


async def test_a_first_message_beyond_the_stored_mark_asks_to_rewind_to_the_mark(
    store: InMemoryStateStore,
) -> None:
    first = ScoringPipeline(store, ScoringConfig())
    for offset in range(3):
        await first.handle(purchase("c1", day=offset), "crm.purchases", 0, offset)
    # Kafka's committed offset went on to 9, but the store (Redis) kept only up to 2:
    restarted = ScoringPipeline(store, ScoringConfig())

    with pytest.raises(StateBehindError) as behind:
        await restarted.handle(purchase("c1", day=9), "crm.purchases", 0, 9)

    assert (behind.value.partition, behind.value.resume_at) == (0, 3)
    resumed = await restarted.handle(purchase("c1", day=3), "crm.purchases", 0, 3)
    assert resumed.score is not None


async def test_a_fresh_store_with_a_partition_already_consumed_asks_to_rewind_to_the_start(
    store: InMemoryStateStore, pipeline: ScoringPipeline
) -> None:
    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle(purchase("c1"), "crm.purchases", 2, 40)
    assert behind.value.resume_at == 0


async def test_writes_lost_by_the_store_mid_stream_are_detected_and_nothing_is_learned(
    store: InMemoryStateStore,
) -> None:
    shared = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    for offset in range(5):
        await shared.handle(purchase("c1", day=offset), "crm.purchases", 0, offset)
    shared.drain_updates()
    store.lose_writes_since({InputPosition("crm.purchases", None, 0, 0).mark_field: 1})

    with pytest.raises(StateBehindError) as behind:
        await shared.handle(purchase("c2", day=5), "crm.purchases", 0, 5)

    assert behind.value.resume_at == 2
    assert await store.load("c2") is None and shared.drain_updates() == []
    for offset in range(2, 6):  # the re-read applies again what the store lost
        again = await shared.handle(purchase("c3", day=offset), "crm.purchases", 0, offset)
        assert again.score is not None


@pytest.mark.parametrize("next_request", ["erasure", "consent"])
async def test_a_privacy_request_the_store_lost_is_applied_again_before_the_next_one(
    next_request: str, store: InMemoryStateStore, pipeline: ScoringPipeline
) -> None:
    """An erasure lost with Redis's last writes must not be skipped by the next request
    moving the mark past it: the customer's data would stay."""
    await pipeline.handle_privacy(privacy("erasure", "c1"), "crm.privacy", 0, 0)
    await pipeline.handle_privacy(privacy("erasure", "c2"), "crm.privacy", 0, 1)
    store.lose_writes_since({InputPosition("crm.privacy", None, 0, 0).mark_field: 0})

    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle_privacy(privacy(next_request, "c1"), "crm.privacy", 0, 2)

    assert behind.value.resume_at == 1
    assert await store.applied_offset(InputPosition("crm.privacy", None, 0, 0)) == 0


async def test_a_dead_lettered_message_moves_the_mark_so_a_restart_does_not_rewind(
    store: InMemoryStateStore, pipeline: ScoringPipeline
) -> None:
    await pipeline.handle(purchase("c1"), "crm.purchases", 0, 0)
    with pytest.raises(InvalidEventError):
        await pipeline.handle(b"{", "crm.purchases", 0, 1)
    await pipeline.note_dead_lettered("crm.purchases", 0, 1)

    restarted = ScoringPipeline(store, ScoringConfig())
    after = await restarted.handle(purchase("c1", day=1), "crm.purchases", 0, 2)

    assert after.score is not None


async def test_a_quiet_partition_whose_writes_were_lost_is_found_by_the_mark_check(
    store: InMemoryStateStore, pipeline: ScoringPipeline
) -> None:
    for offset in range(4):
        await pipeline.handle(purchase("c1", day=offset), "crm.purchases", 1, offset)
    assert pipeline.partitions_applied() == [("crm.purchases", 1)]
    assert await pipeline.check_partition("crm.purchases", 1) is None

    store.lose_writes_since({InputPosition("crm.purchases", None, 1, 0).mark_field: 1})
    lost = await pipeline.check_partition("crm.purchases", 1)

    assert lost is not None
    behind, upto = lost
    assert (behind.topic, behind.partition, behind.resume_at, upto) == ("crm.purchases", 1, 2, 4)


async def test_pseudonymised_ids_never_reach_the_store_and_erasure_still_finds_them(
    store: InMemoryStateStore,
) -> None:
    from streamcrm.core.privacy import pseudonym

    hide = lambda customer_id: pseudonym(b"secret", customer_id)  # noqa: E731
    pipeline = ScoringPipeline(store, ScoringConfig(), pseudonymise=hide)

    scored = await pipeline.handle(purchase("alice"), "crm.purchases", 0, 0)

    assert scored.score is not None and scored.score.customer_id == hide("alice")
    assert await store.load("alice") is None and await store.load(hide("alice")) is not None
    erased = await pipeline.handle_privacy(privacy("erasure", "alice", day=1), "crm.privacy", 0, 0)
    assert erased.customer_id == hide("alice") and erased.tombstone
    assert await store.load(hide("alice")) is None


def test_model_updates_travel_in_batches_and_single_updates_of_older_workers_still_read() -> None:
    from streamcrm.models import ModelUpdateBatch
    from streamcrm.worker.worker import model_updates_in

    first = ModelUpdate(kind="labelled", features={"x": 1.0}, churned=True)
    second = ModelUpdate(kind="forget", customer_id="c1")
    batch = ModelUpdateBatch(updates=[first, second]).model_dump_json().encode()

    assert model_updates_in(batch) == [first, second]
    assert model_updates_in(first.model_dump_json().encode()) == [first]


def cancellation(customer_id: str = "c1", day: float = 1.0) -> bytes:
    return json.dumps(
        {
            "type": "cancellation",
            "event_id": f"x{next(_ids)}",
            "customer_id": customer_id,
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
        }
    ).encode()


@dataclass(frozen=True)
class SupportMessage:
    value: bytes
    offset: int
    partition: int = 0
    topic: str = "crm.support"
    key: bytes | None = None  # not checked: this pipeline leaves require_keys off


async def test_handle_writes_each_score_with_the_alerts_it_raised_to_the_outbox(
    pipeline: ScoringPipeline,
) -> None:
    await pipeline.handle(purchase("c1", day=0), "crm.purchases")
    cancelled = await pipeline.handle(cancellation("c1"), "crm.support")

    published = await outbox_outputs(pipeline.store)
    assert [len(alerts) for _, alerts in published] == [0, 1]
    score, [alert] = published[1]
    assert score == cancelled.score
    assert (alert.kind, alert.event_id, alert.customer_id) == ("churn_risk", score.event_id, "c1")
    assert list(cancelled.alerts) == [alert]


async def test_a_redelivered_message_writes_neither_score_nor_alert_again(
    pipeline: ScoringPipeline,
) -> None:
    await pipeline.handle(purchase("c1", day=0), "crm.purchases", 0, 0)
    message = cancellation("c1")
    await pipeline.handle(message, "crm.support", 0, 0)

    again = await pipeline.handle(message, "crm.support", 0, 0)

    assert again.duplicate
    assert [len(alerts) for _, alerts in await outbox_outputs(pipeline.store)] == [0, 1]


async def test_a_batch_writes_each_score_with_its_alerts_in_order(
    pipeline: ScoringPipeline,
) -> None:
    # The partition's first message goes one by one (its stored mark is checked first).
    await pipeline.handle(cancellation("c0"), "crm.support", 0, 0)
    batch = [
        SupportMessage(cancellation("c1"), offset=1),
        SupportMessage(cancellation("c2"), offset=2),
    ]

    outcomes = await pipeline.handle_batch(batch)

    published = (await outbox_outputs(pipeline.store))[1:]
    assert [score.customer_id for score, _ in published] == ["c1", "c2"]
    assert [[a.kind for a in alerts] for _, alerts in published] == [
        ["churn_risk"],
        ["churn_risk"],
    ]
    assert [o.alerts for o in outcomes if isinstance(o, ScoredEvent)] == [
        tuple(alerts) for _, alerts in published
    ]


async def test_an_events_outputs_wait_in_the_outbox_of_the_partition_it_came_from(
    pipeline: ScoringPipeline,
) -> None:
    scored = await pipeline.handle(cancellation("c1"), "crm.support", 3, 0)

    assert await pipeline.store.outbox(0, 10) == []
    assert await outbox_outputs(pipeline.store, 3) == [(scored.score, list(scored.alerts))]


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "missing_key"),
        (b"", "missing_key"),
        (b"c2", "key_mismatch"),
        (b"c1 ", "key_mismatch"),
        (b"x" * 100_000, "key_too_long"),
    ],
)
async def test_a_message_not_keyed_by_its_customer_is_invalid_and_saves_nothing(
    store: InMemoryStateStore, key: bytes | None, code: str
) -> None:
    keyed = ScoringPipeline(store, ScoringConfig(), require_keys=True)

    with pytest.raises(MessageKeyError) as refused:
        await keyed.handle(purchase(), topic="crm.purchases", key=key)

    assert refused.value.code == code
    assert len(refused.value.reason) < 200  # a 100 KB key is not copied into the reason
    assert await store.load("c1") is None


async def test_a_message_keyed_by_its_customer_or_the_customers_pseudonym_is_scored(
    store: InMemoryStateStore,
) -> None:
    keyed = ScoringPipeline(store, ScoringConfig(), require_keys=True)
    assert (await keyed.handle(purchase(), topic="crm.purchases", key=b"c1")).score is not None

    hidden = ScoringPipeline(
        InMemoryStateStore(), ScoringConfig(), require_keys=True, pseudonymise=lambda c: f"p-{c}"
    )
    for key in (b"c1", b"p-c1"):  # a producer may key by either
        scored = await hidden.handle(purchase(day=1.0 if key == b"c1" else 2.0), key=key)
        assert scored.score is not None and scored.score.customer_id == "p-c1"


async def test_in_a_batch_a_wrongly_keyed_message_is_invalid_and_the_rest_are_scored(
    store: InMemoryStateStore,
) -> None:
    @dataclass(frozen=True)
    class Keyed:
        value: bytes
        offset: int
        key: bytes | None
        partition: int = 0
        topic: str = "crm.purchases"

    keyed = ScoringPipeline(store, ScoringConfig(), require_keys=True)
    # A partition's first message goes one by one (its stored mark is checked first).
    await keyed.handle(purchase("c0", 0.0), "crm.purchases", 0, 0, key=b"c0")
    outcomes = await keyed.handle_batch(
        [
            Keyed(purchase("c1", 0.0), 1, b"c1"),
            Keyed(purchase("c2", 0.0), 2, b"c1"),  # keyed by another customer
            Keyed(purchase("c3", 0.0), 3, None),
        ]
    )

    assert isinstance(outcomes[0], ScoredEvent)
    assert [getattr(o, "code", None) for o in outcomes[1:]] == ["key_mismatch", "missing_key"]
    assert await store.load("c2") is None and await store.load("c3") is None


async def test_an_erasure_not_keyed_by_its_customer_is_invalid_and_erases_nothing(
    store: InMemoryStateStore,
) -> None:
    keyed = ScoringPipeline(store, ScoringConfig(), require_keys=True)
    await keyed.handle(purchase(), "crm.purchases", 0, 0, key=b"c1")

    with pytest.raises(MessageKeyError) as refused:
        await keyed.handle_privacy(privacy("erasure", day=1), key=b"c2")

    assert refused.value.code == "key_mismatch"
    assert await store.load("c1") is not None  # not erased by a request keyed elsewhere
    outcome = await keyed.handle_privacy(privacy("erasure", day=1), key=b"c1")
    assert outcome.tombstone and await store.load("c1") is None
