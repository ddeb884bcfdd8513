"""``streamcrm learner`` resumes where its checkpoint says: no acknowledged update lost, none
learned twice (the Kafka side is tested in tests/integration/test_learner_process.py)."""

from __future__ import annotations

from collections.abc import Sequence

from streamcrm.core.features import FEATURE_NAMES
from streamcrm.learner.learner import PositionedLearner
from streamcrm.learner.resume import position_field, resume_point
from streamcrm.models import ModelBundle, ModelUpdate, ModelUpdateBatch
from streamcrm.services.kafka import Record
from streamcrm.store import InMemoryStateStore
from streamcrm.worker.learning import MODEL_CHECKPOINT, SharedLearner

TOPIC, TOPIC_ID = "crm.model-updates", "Zq9"
HERE = position_field(TOPIC, TOPIC_ID)


def updates(count: int, first: int = 0) -> list[ModelUpdate]:
    """``count`` updates, labelled and scored in turn (both count in ``updates_learned``)."""
    made = []
    for n in range(first, first + count):
        features = {name: float((n * 7 + i) % 11) for i, name in enumerate(FEATURE_NAMES)}
        if n % 2:
            made.append(ModelUpdate(kind="labelled", features=features, churned=n % 3 == 0))
        else:
            made.append(ModelUpdate(kind="scored", features=features, satisfaction=4.0))
    return made


def topic_of(messages: int, per_message: int = 5) -> list[Record]:
    """A model-updates topic: ``messages`` batches of ``per_message`` updates each."""
    return [
        Record(
            TOPIC,
            0,
            offset,
            b"models",
            ModelUpdateBatch(updates=updates(per_message, offset * per_message))
            .model_dump_json()
            .encode(),
        )
        for offset in range(messages)
    ]


def learned_once(records: Sequence[Record]) -> ModelBundle:
    """What learning every update of ``records`` exactly once gives."""
    reference = PositionedLearner(InMemoryStateStore(), TOPIC, TOPIC_ID)
    reference.learn_records(records)
    return reference.models


def from_offset(records: Sequence[Record], start: int) -> list[Record]:
    return [record for record in records if record.offset >= start]


# --- where a learner resumes --------------------------------------------------------------


def test_a_learner_resumes_at_the_offset_its_checkpoint_stored() -> None:
    point = resume_point(True, {HERE: 42}, HERE, committed_by_workers=None)

    assert point.start == 42


def test_the_checkpoint_s_offset_wins_over_any_consumer_group_commit() -> None:
    """Commits are informational: one ahead of the checkpoint would lose updates."""
    point = resume_point(True, {HERE: 42}, HERE, committed_by_workers=90)

    assert point.start == 42


def test_with_no_checkpoint_a_learner_reads_every_update_from_the_earliest() -> None:
    assert resume_point(False, {}, HERE, committed_by_workers=None).start == "earliest"


def test_a_position_on_a_re_created_topic_of_that_name_resumes_from_the_earliest() -> None:
    """A re-created topic restarts its offsets at 0: all it holds came after the checkpoint."""
    older_topic = position_field(TOPIC, "older-id")

    point = resume_point(True, {older_topic: 4_000}, HERE, committed_by_workers=None)

    assert point.start == "earliest"


def test_a_checkpoint_from_an_in_worker_learner_resumes_at_the_workers_commit() -> None:
    """Switching a group from STREAMCRM_LEARNER=in-worker to process: that checkpoint has no
    position, and Faust's commit is the best estimate of what it learned."""
    point = resume_point(True, {}, HERE, committed_by_workers=310)

    assert point.start == 310


def test_a_checkpoint_with_no_position_and_no_commit_resumes_at_the_end_not_the_start() -> None:
    """Reading from the start would learn the topic's whole retention a second time."""
    assert resume_point(True, {}, HERE, committed_by_workers=None).start == "latest"


# --- learning and checkpointing together --------------------------------------------------


async def test_learning_messages_moves_the_position_past_the_last_one() -> None:
    learner = PositionedLearner(InMemoryStateStore(), TOPIC, TOPIC_ID)

    learned = learner.learn_records(topic_of(4, per_message=5))

    assert (learned.messages, learned.updates, learned.next_offset) == (4, 20, 4)
    assert learner.models.updates_learned == 20


async def test_a_checkpoint_stores_the_models_with_the_offset_they_read_next() -> None:
    store = InMemoryStateStore()
    learner = PositionedLearner(store, TOPIC, TOPIC_ID)
    learner.learn_records(topic_of(3))

    assert await learner.checkpoint()

    blob = await store.load_model(MODEL_CHECKPOINT)
    assert blob is not None and ModelBundle.from_bytes(blob).updates_learned == 15
    assert await store.load_model_next_offsets(MODEL_CHECKPOINT) == {HERE: 3}
    assert await store.load_model_version(MODEL_CHECKPOINT) == learner.models.version


async def test_nothing_learned_since_the_last_checkpoint_saves_nothing() -> None:
    store = InMemoryStateStore()
    learner = PositionedLearner(store, TOPIC, TOPIC_ID)
    assert not await learner.checkpoint()  # nothing learned at all
    learner.learn_records(topic_of(2))
    await learner.checkpoint()

    assert not await learner.checkpoint()


async def test_a_restart_resumes_with_the_checkpointed_models_at_their_offset() -> None:
    store = InMemoryStateStore()
    first = PositionedLearner(store, TOPIC, TOPIC_ID)
    first.learn_records(topic_of(6))
    await first.checkpoint()

    restarted = PositionedLearner(store, TOPIC, TOPIC_ID)
    point = await restarted.resume()

    assert point.start == 6
    assert restarted.models.updates_learned == 30
    assert not restarted.unsaved


async def test_a_learner_killed_between_checkpoints_learns_every_update_exactly_once() -> None:
    """Killed after learning past its last checkpoint: the restart reads again exactly what
    the dead process learned unsaved, and nothing the checkpoint holds."""
    topic = topic_of(10)
    store = InMemoryStateStore()
    doomed = PositionedLearner(store, TOPIC, TOPIC_ID)
    await doomed.resume()
    doomed.learn_records(topic[:4])
    await doomed.checkpoint()
    doomed.learn_records(topic[4:7])  # learned, never checkpointed: the process dies here

    restarted = PositionedLearner(store, TOPIC, TOPIC_ID)
    point = await restarted.resume()
    assert isinstance(point.start, int)
    restarted.learn_records(from_offset(topic, point.start))
    await restarted.checkpoint()

    expected = learned_once(topic)
    assert restarted.models.updates_learned == expected.updates_learned == 50
    assert restarted.models.version == expected.version


async def test_control_resuming_from_a_commit_made_apart_from_the_checkpoint_is_not_exact() -> None:
    """Without the offset in the checkpoint, a consumer-group commit ahead of it loses
    updates and one behind it learns some twice: the test above would catch either."""
    topic = topic_of(10)
    store = InMemoryStateStore()
    doomed = PositionedLearner(store, TOPIC, TOPIC_ID)
    doomed.learn_records(topic[:4])
    await doomed.checkpoint()
    expected = learned_once(topic).updates_learned

    for commit in (7, 2):  # committed after more was learned; committed before the checkpoint
        restarted = PositionedLearner(store, TOPIC, TOPIC_ID)
        await restarted.resume()
        restarted.learn_records(from_offset(topic, commit))
        assert restarted.models.updates_learned != expected


async def test_an_unreadable_message_is_skipped_once_and_the_position_moves_past_it() -> None:
    store = InMemoryStateStore()
    topic = topic_of(3)
    topic[1] = Record(TOPIC, 0, 1, b"models", b"{not an update")
    learner = PositionedLearner(store, TOPIC, TOPIC_ID)

    learned = learner.learn_records(topic)

    assert (learned.updates, learned.unreadable, learned.next_offset) == (10, 1, 3)


async def test_a_learner_started_at_an_end_of_the_log_keeps_that_place_at_its_checkpoint() -> None:
    """Started at the end (a checkpoint from an in-worker learner, no commit), it stores where
    it started even before any update comes: a restart would otherwise start at a later end
    and skip what came in between."""
    store = InMemoryStateStore()
    await store.save_model(MODEL_CHECKPOINT, ModelBundle().to_bytes(), ModelBundle().version)
    learner = PositionedLearner(store, TOPIC, TOPIC_ID)
    assert (await learner.resume()).start == "latest"

    learner.started_at(120)

    assert await learner.checkpoint()
    assert await store.load_model_next_offsets(MODEL_CHECKPOINT) == {HERE: 120}


async def test_a_checkpoint_of_an_in_worker_learner_keeps_no_position_for_the_learner() -> None:
    """The in-worker learner saves without positions, which clears the stored ones."""
    store = InMemoryStateStore()
    process = PositionedLearner(store, TOPIC, TOPIC_ID)
    process.learn_records(topic_of(2))
    await process.checkpoint()
    in_worker = SharedLearner(store)
    await in_worker.learn_all(updates(20, first=100))

    await in_worker.checkpoint()

    assert await store.load_model_next_offsets(MODEL_CHECKPOINT) == {}
