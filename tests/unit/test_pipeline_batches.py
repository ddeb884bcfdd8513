"""``ScoringPipeline.handle_batch``: a batch ends exactly as its messages one by one would.

A batch is scored in memory (each customer's events on top of each other) and saved with one
store call that stops at the first refused write; what follows a refusal is handed back to be
handled one by one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from streamcrm.core.records import CustomerScore
from streamcrm.core.scoring import ScoredEvent, ScoringConfig
from streamcrm.errors import (
    InvalidEventError,
    LateEventError,
    StateBehindError,
    StoreUnavailableError,
)
from streamcrm.store import InMemoryStateStore, InputPosition, PendingWrite, SaveResult
from streamcrm.worker.outbox import OutboxPublisher
from streamcrm.worker.pipeline import BatchOutcome, ScoringPipeline
from tests.outputs import FakeOutputs, outbox_outputs
from tests.unit.test_pipeline import T0, privacy, purchase

TOPIC = "crm.purchases"


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore()


@dataclass(frozen=True)
class Message:
    value: bytes
    offset: int
    partition: int = 0
    topic: str = TOPIC
    key: bytes | None = None  # not checked: these pipelines leave require_keys off


def feedback(customer_id: str, day: float, rating: int = 8) -> bytes:
    return json.dumps(
        {
            "type": "feedback",
            "event_id": f"f-{customer_id}-{day}",
            "customer_id": customer_id,
            "occurred_at": (T0 + timedelta(days=day)).isoformat(),
            "rating": rating,
            "scale": "nps",
            "category": "brand",
        }
    ).encode()


def messages_from(
    values: Sequence[bytes], first_offset: int = 0, partition: int = 0
) -> list[Message]:
    return [Message(v, first_offset + i, partition) for i, v in enumerate(values)]


async def one_by_one(pipeline: ScoringPipeline, message: Message) -> BatchOutcome:
    """What the app does with one message: handle it, and mark it if it is dead-lettered."""
    try:
        return await pipeline.handle(
            message.value, message.topic, message.partition, message.offset
        )
    except InvalidEventError as error:
        await pipeline.note_dead_lettered(message.topic, message.partition, message.offset)
        return error


async def in_batch(pipeline: ScoringPipeline, messages: Sequence[Message]) -> list[BatchOutcome]:
    """What the app does with a batch: the pipeline's prefix, then the rest one by one."""
    outcomes = await pipeline.handle_batch(messages)
    for message in messages[len(outcomes) :]:
        outcomes.append(await one_by_one(pipeline, message))
    return outcomes


def summary(outcome: BatchOutcome) -> Any:
    if isinstance(outcome, ScoredEvent):
        score = outcome.score.model_dump() if outcome.score is not None else None
        return ("scored", outcome.duplicate, outcome.erased, score)
    return (type(outcome).__name__, str(outcome))


def shared_pipeline(store: InMemoryStateStore) -> ScoringPipeline:
    return ScoringPipeline(store, ScoringConfig(), shared_models=True)


def mixed_stream() -> list[bytes]:
    """Several customers, some twice in a row, a malformed message, a late event and a
    redelivered one (same event id)."""
    repeated = purchase("c2", day=3)
    return [
        purchase("c1", day=1),
        purchase("c2", day=2),
        purchase("c1", day=2, amount=80.0),
        b'{"type": "purchase"',
        repeated,
        feedback("c3", day=3),
        repeated,
        purchase("c1", day=9),
        purchase("c1", day=1),  # 8 days older than c1's newest: late
        purchase("c4", day=9),
    ]


async def test_a_batch_saves_scores_marks_and_learns_exactly_as_one_by_one() -> None:
    alone, batched = InMemoryStateStore(), InMemoryStateStore()
    first = purchase("c0", day=0)
    stream = mixed_stream()
    by_one, by_batch = shared_pipeline(alone), shared_pipeline(batched)
    await one_by_one(by_one, Message(first, 0))
    await one_by_one(by_batch, Message(first, 0))

    expected = [await one_by_one(by_one, m) for m in messages_from(stream, 1)]
    got = await by_batch.handle_batch(messages_from(stream, 1))

    assert [summary(o) for o in got] == [summary(o) for o in expected]
    assert isinstance(got[3], InvalidEventError) and isinstance(got[8], LateEventError)
    assert batched._states == alone._states and batched._scores == alone._scores
    assert batched._offsets == alone._offsets and batched._due == alone._due
    assert by_batch.outcomes == by_one.outcomes
    assert by_batch.drain_updates() == by_one.drain_updates()
    assert by_batch.watermark == by_one.watermark


async def test_the_first_messages_of_a_partition_in_a_process_go_one_by_one(
    store: InMemoryStateStore,
) -> None:
    pipeline = shared_pipeline(store)
    batch = messages_from([purchase("c1", day=1), purchase("c2", day=1)], partition=3)

    assert await pipeline.handle_batch(batch) == []  # its stored mark is checked first

    await one_by_one(pipeline, batch[0])
    assert len(await pipeline.handle_batch(batch[1:])) == 1


async def test_a_redelivered_batch_finds_its_duplicates_and_learns_nothing_twice(
    store: InMemoryStateStore,
) -> None:
    stream = messages_from([purchase(f"c{i % 3}", day=i) for i in range(8)])
    pipeline = shared_pipeline(store)
    await in_batch(pipeline, stream[:5])  # applied up to offset 4, then the worker died
    restarted = shared_pipeline(store)
    await one_by_one(restarted, stream[0])  # its first message goes alone: a duplicate

    handled = await restarted.handle_batch(stream[1:])

    assert [o.duplicate for o in handled if isinstance(o, ScoredEvent)] == [True] * 4 + [False] * 3
    assert len(restarted.drain_updates()) == 3
    assert store._offsets[InputPosition(TOPIC, None, 0, 0).mark_field] == 7


async def test_a_batch_stops_at_a_message_the_store_marks_applied_and_the_rest_go_alone(
    store: InMemoryStateStore,
) -> None:
    stream = messages_from([purchase(f"c{i}", day=i) for i in range(8)])
    pipeline = shared_pipeline(store)
    await in_batch(pipeline, stream[:5])
    pipeline.drain_updates()
    # Another worker owned the partition meanwhile and applied offsets 5 and 6 (ids unknown here).
    store.lose_writes_since({InputPosition(TOPIC, None, 0, 0).mark_field: 6})

    assert await pipeline.handle_batch(stream[5:]) == []
    assert pipeline.drain_updates() == []
    rest = [await one_by_one(pipeline, m) for m in stream[5:]]
    assert [o.duplicate for o in rest if isinstance(o, ScoredEvent)] == [True, True, False]
    assert await store.load("c5") is None and await store.load("c7") is not None


async def test_a_batch_on_a_store_that_lost_writes_stops_there_and_the_rewind_follows(
    store: InMemoryStateStore,
) -> None:
    pipeline = shared_pipeline(store)
    stream = messages_from([purchase("c1", day=i) for i in range(6)])
    await in_batch(pipeline, stream[:3])
    pipeline.drain_updates()
    store.lose_writes_since({InputPosition(TOPIC, None, 0, 0).mark_field: 0})

    assert await pipeline.handle_batch(stream[3:]) == []
    assert pipeline.drain_updates() == []
    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle(stream[3].value, TOPIC, 0, 3)
    assert behind.value.resume_at == 1


class FailsOverOnNextSave(InMemoryStateStore):
    """A store whose replica takes over between a load and the save that follows it: the
    save lands on the replica, which lacks the writes made since it was copied."""

    taking_over: InMemoryStateStore | None = None

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        if self.taking_over is not None:
            self.fail_over_to(self.taking_over)
            self.taking_over = None
        return await super().save_batch(writes)


def hours(n: float) -> float:
    return n / 24


async def test_a_state_read_before_a_failover_dropped_writes_of_another_topic_is_not_saved() -> (
    None
):
    store = FailsOverOnNextSave()
    pipeline = shared_pipeline(store)
    purchases = [purchase("c1", day=hours(i)) for i in range(5)]
    for offset in range(2):
        await pipeline.handle(purchases[offset], "crm.purchases", 0, offset)
    await pipeline.handle(feedback("c1", hours(2)), "crm.feedback", 0, 0)
    replica = store.replica()
    for offset in (2, 3):  # made on the master only: the failover drops them
        await pipeline.handle(purchases[offset], "crm.purchases", 0, offset)
    store.taking_over = replica

    # The feedback is scored on the state read before the failover (with purchases 2 and 3),
    # but that state must not land on the replica: their scores would never be made again.
    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle(feedback("c1", hours(4)), "crm.feedback", 0, 1)
    assert (behind.value.topic, behind.value.resume_at) == ("crm.feedback", 1)
    assert (await store.load("c1")).events_applied == 3  # type: ignore[union-attr]
    await pipeline.handle(feedback("c1", hours(4)), "crm.feedback", 0, 1)
    # The purchases the failover dropped are applied again before the topic's next message.
    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle(purchases[4], "crm.purchases", 0, 4)
    assert (behind.value.topic, behind.value.resume_at) == ("crm.purchases", 2)
    for offset in (2, 3, 4):
        await pipeline.handle(purchases[offset], "crm.purchases", 0, offset)

    state = await store.load("c1")
    assert state is not None and (state.events_applied, state.order_count) == (7, 5)
    scored = [score.event_id for score, _ in await outbox_outputs(store)]
    assert sorted(scored) == sorted(
        [json.loads(raw)["event_id"] for raw in purchases]
        + [f"f-c1-{hours(2)}", f"f-c1-{hours(4)}"]
    )


async def test_a_sweep_that_read_a_state_before_a_failover_saves_nothing_and_is_reread() -> None:
    store = FailsOverOnNextSave()
    pipeline = shared_pipeline(store)
    await pipeline.handle(purchase("c1", day=0), "crm.purchases", 0, 0)
    await pipeline.handle(feedback("c2", 0), "crm.feedback", 0, 0)
    replica = store.replica()
    await pipeline.handle(purchase("c1", day=1), "crm.purchases", 0, 1)  # dropped
    await pipeline.handle(purchase("c2", day=400), "crm.purchases", 0, 2)  # dropped
    store.taking_over = replica

    report = await pipeline.sweep([0])

    assert (report.rescores, report.behind) == (0, (0,))
    assert (await store.load("c1")).events_applied == 1  # type: ignore[union-attr]
    # The purchases topic is quiet: the mark check finds what it has to apply again.
    lost = await pipeline.check_partition("crm.purchases", 0)
    assert lost is not None
    behind, upto = lost
    assert (behind.resume_at, upto) == (1, 3)
    assert await pipeline.check_partition("crm.feedback", 0) is None


async def test_a_topic_set_back_while_its_batch_waits_for_a_customer_is_reread_first() -> None:
    store = FailsOverOnNextSave()
    pipeline = shared_pipeline(store)
    await pipeline.handle(purchase("c1", day=0), "crm.purchases", 0, 0)
    await pipeline.handle(feedback("c1", 0.1), "crm.feedback", 0, 0)
    replica = store.replica()
    await pipeline.handle(feedback("c1", 0.2), "crm.feedback", 0, 1)  # dropped
    store.fail_over_to(replica)
    batch = [Message(feedback("c1", 0.3), 2, topic="crm.feedback")]

    async with pipeline._locks.hold("c1"):  # another step of c1 is under way
        waiting = asyncio.create_task(pipeline.handle_batch(batch))
        await asyncio.sleep(0)
        # Meanwhile another customer's purchase finds the store behind (its write holds the
        # feedback mark) and sets the partition back; nothing of purchases was lost.
        with pytest.raises(StateBehindError) as purchases_behind:
            await pipeline.handle(purchase("c2", day=0.4), "crm.purchases", 0, 1)
        assert purchases_behind.value.resume_at == 1

    # The batch must not be written over the lost feedback: it goes one by one, which
    # re-reads the feedback from offset 1 first.
    assert await waiting == []
    assert await store.applied_offset(InputPosition("crm.feedback", None, 0, 0)) == 0
    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle(batch[0].value, "crm.feedback", 0, 2)
    assert behind.value.resume_at == 1


async def test_an_erased_customers_event_ends_the_batch_after_it_and_is_not_learned(
    store: InMemoryStateStore,
) -> None:
    pipeline = shared_pipeline(store)
    await one_by_one(pipeline, Message(purchase("c1", day=0), 0))
    await pipeline.handle_privacy(privacy("erasure", "c2", day=0), "crm.privacy", 0, 0)
    pipeline.drain_updates()
    stream = messages_from([purchase("c1", day=1), purchase("c2", day=1), purchase("c1", day=2)], 1)

    handled = await pipeline.handle_batch(stream)

    assert [summary(o)[:3] for o in handled] == [("scored", False, False), ("scored", False, True)]
    assert await store.load("c2") is None
    assert len(pipeline.drain_updates()) == 1  # c1's first event only; its second goes alone
    assert summary(await one_by_one(pipeline, stream[2]))[:2] == ("scored", False)


async def test_concurrent_batches_sharing_customers_neither_deadlock_nor_lose_an_update(
    store: InMemoryStateStore,
) -> None:
    pipeline = shared_pipeline(store)
    await one_by_one(pipeline, Message(purchase("a", day=0), 0))
    await one_by_one(pipeline, Message(purchase("b", day=0), 0, partition=1))
    forward = messages_from([purchase("a", day=1), purchase("b", day=1)], 1)
    backward = messages_from([purchase("b", day=2), purchase("a", day=2)], 1, partition=1)

    results = await asyncio.wait_for(
        asyncio.gather(pipeline.handle_batch(forward), pipeline.handle_batch(backward)), 5
    )

    assert [len(r) for r in results] == [2, 2]
    for customer in ("a", "b"):
        state = await store.load(customer)
        assert state is not None and state.order_count == 3


async def test_scores_are_published_in_the_order_their_states_were_saved(
    store: InMemoryStateStore,
) -> None:
    """The scores topic is compacted: a customer's last score there must be the stored one,
    even when two topics' batches of the customer race and their outbox drains overlap."""
    outputs = FakeOutputs(send_delay_s=0.01)  # a send that yields, as Faust's does
    publisher = OutboxPublisher(store, outputs)
    pipeline = shared_pipeline(store)
    await one_by_one(pipeline, Message(purchase("a", day=0), 0))
    await one_by_one(pipeline, Message(feedback("a", day=0), 0, topic="crm.feedback"))
    purchases = messages_from([purchase("a", day=1 + i / 10) for i in range(5)], 1)
    ratings = [
        Message(feedback("a", day=1 + i / 10), 1 + i, topic="crm.feedback") for i in range(5)
    ]

    async def handle_then_publish(batch: list[Message]) -> None:
        await pipeline.handle_batch(batch)
        await publisher.drain(0)

    await asyncio.gather(handle_then_publish(purchases), handle_then_publish(ratings))

    published = [
        CustomerScore.model_validate_json(record.value)
        for log in outputs.logs.values()
        for record in log
        if record.kind == "scores"
    ]
    assert len(published) == 12  # each event's score once: the two first ones' and the batches'
    assert published[-1] == await store.load_score("a")


class LosesOneReply(InMemoryStateStore):
    """A store that makes the writes of one save, then fails as if the reply had been lost
    (the connection broke, or the client's read timed out while its event loop was busy):
    the retry (RetryingStore's, or redis-py's own) finds them made, ``ALREADY_APPLIED``."""

    lose_next_reply = False

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        results = await super().save_batch(writes)
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise StoreUnavailableError("Redis unavailable: reply lost")
        return results


async def test_writes_whose_reply_was_lost_are_still_held_and_their_loss_is_found() -> None:
    """The open cut-off failover defect: a batch's writes made on the master, their reply
    lost and the retry answered ``ALREADY_APPLIED`` at its first write, left the worker
    holding the marks from before the batch (its messages, handled again one by one, were
    duplicates by event id), so a failover that dropped exactly those writes went unnoticed
    and the partition's next write was made over the lost ones."""
    store = LosesOneReply()
    pipeline = shared_pipeline(store)
    stream = messages_from([purchase(f"c{i % 3}", day=hours(i)) for i in range(8)])
    other = messages_from([purchase("d", day=hours(i)) for i in range(2)], partition=1)
    await one_by_one(pipeline, stream[0])
    await one_by_one(pipeline, other[0])
    replica = store.replica()  # the replica stops following here
    store.lose_next_reply = True

    # Made on the master alone; the retry stops at the first write (partition 1's).
    handled = await in_batch(pipeline, [other[1], *stream[1:5]])

    assert [summary(o)[:2] for o in handled] == [("scored", True)] * 5
    assert store._offsets[InputPosition(TOPIC, None, 0, 0).mark_field] == 4
    store.fail_over_to(replica)
    with pytest.raises(StateBehindError) as behind:
        await pipeline.handle(stream[5].value, TOPIC, 0, 5)
    assert (behind.value.partition, behind.value.resume_at) == (0, 1)
    for message in stream[1:]:
        await one_by_one(pipeline, message)
    applied = [await store.load(f"c{i}") for i in range(3)]
    assert [s.order_count for s in applied if s is not None] == [3, 3, 2]


async def test_a_batch_asks_once_a_partition_which_topics_hold_it_back_and_is_held_by_them() -> (
    None
):
    # The feedback topic of partition 0 still has messages to apply: the purchases' watermark
    # may not pass the newest feedback seen, whichever way the batch is scored.
    asked: list[int] = []

    def feedback_pending(partition: int) -> list[str]:
        asked.append(partition)
        return ["crm.feedback"] if partition == 0 else []

    alone, batched = InMemoryStateStore(), InMemoryStateStore()
    by_one, by_batch = shared_pipeline(alone), shared_pipeline(batched)
    warm_up = [
        Message(feedback("c0", day=0), 0, topic="crm.feedback"),
        *(Message(purchase(f"c{8 + partition}", day=0), 0, partition) for partition in (0, 1)),
    ]
    for pipeline in (by_one, by_batch):
        pipeline.holding_back = feedback_pending
        for message in warm_up:
            await one_by_one(pipeline, message)
    stream = [Message(purchase(f"c{i}", day=40 + i), 1 + i // 2, partition=i % 2) for i in range(6)]
    expected = [await one_by_one(by_one, message) for message in stream]
    asked.clear()

    got = await by_batch.handle_batch(stream)

    assert sorted(asked) == [0, 1]
    assert [summary(o) for o in got] == [summary(o) for o in expected]
    assert batched._states == alone._states and batched._due == alone._due
