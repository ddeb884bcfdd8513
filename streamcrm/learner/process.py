"""``streamcrm learner``: the shared learner as a process of its own, on a plain Kafka consumer.

One kafka-python consumer, assigned the model-updates topic's one partition by hand (no group
membership, so no rebalance can pause learning or hand the partition to someone else), reads
the workers' update batches in order; a :class:`~streamcrm.learner.learner.PositionedLearner`
learns them in a thread and checkpoints every ``model_checkpoint_interval_s`` with the offset
it reads next. On start it seeks to the checkpoint's offset (see
:mod:`streamcrm.learner.resume`); the consumer group ``{app_id}-learner`` only receives the
checkpointed offset afterwards, for lag tools. Run exactly one learner per worker group: two
would each learn every update and overwrite each other's checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamcrm.learner.learner import PositionedLearner
from streamcrm.learner.resume import Start
from streamcrm.services.collector import settle_collector
from streamcrm.services.connections import kafka_client_options, redis_state_store
from streamcrm.services.kafka import Record, topic_ids
from streamcrm.settings import Settings
from streamcrm.store.retrying import RetryingStore

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
"""How long one poll waits for messages (and so how soon a stop request is noticed)."""
MAX_MESSAGES_PER_POLL = 20
"""Messages learned between two checks of the checkpoint clock (each up to 500 updates)."""
MAX_FETCH_BYTES = 16 * 1024 * 1024
"""What one fetch of the partition may bring (kafka-python's default is 1 MiB)."""
DEFAULT_FETCH_MAX_WAIT_MS = 500
"""kafka-python's own fetch wait, kept where ``kafka_fetch_max_wait_ms`` is not set."""


def learner_group(settings: Settings) -> str:
    """The consumer group the learner commits its checkpointed offset to (informational).

    >>> learner_group(Settings(app_id="streamcrm"))
    'streamcrm-learner'
    """
    return f"{settings.app_id}-learner"


class ModelUpdatesConsumer:
    """The model-updates topic's one partition, read by a consumer assigned to it by hand."""

    def __init__(self, settings: Settings) -> None:
        assert settings.kafka_bootstrap is not None
        self.settings = settings
        self.partition = TopicPartition(settings.topics.model_updates, 0)
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=learner_group(settings),
            client_id=learner_group(settings),
            enable_auto_commit=False,
            # A stored offset retention has already deleted: the oldest update left.
            auto_offset_reset="earliest",
            # A backlog (after a restart) comes in a few large fetches, not 1 MiB ones.
            max_partition_fetch_bytes=MAX_FETCH_BYTES,
            # Tansu waits out the fetch wait even with data there (docs/tansu.md).
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms or DEFAULT_FETCH_MAX_WAIT_MS,
            **kafka_client_options(settings),
        )
        self._consumer.assign([self.partition])

    def committed_by_workers(self) -> int | None:
        """The scoring workers' (Faust's, group ``app_id``) committed offset on the topic: what
        an in-worker learner had acknowledged; None if there is none."""
        assert self.settings.kafka_bootstrap is not None
        reader = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.app_id,
            enable_auto_commit=False,
            **kafka_client_options(self.settings),
        )
        try:
            committed: int | None = reader.committed(self.partition)
            return committed
        finally:
            reader.close()

    def seek(self, start: Start) -> int:
        """Read next from ``start``; returns the offset that is (an end resolved)."""
        if start == "earliest":
            self._consumer.seek_to_beginning(self.partition)
        elif start == "latest":
            self._consumer.seek_to_end(self.partition)
        else:
            self._consumer.seek(self.partition, start)
        position: int = self._consumer.position(self.partition)
        return position

    def poll(self, timeout_ms: int = POLL_TIMEOUT_MS) -> list[Record]:
        """The next messages, in offset order (none after ``timeout_ms``)."""
        fetched = self._consumer.poll(timeout_ms=timeout_ms, max_records=MAX_MESSAGES_PER_POLL)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value)
            for m in fetched.get(self.partition, [])
        ]

    def commit(self, offset: int) -> None:
        """Tell the learner's consumer group where the checkpoint reads next (informational:
        never read back while the checkpoint has a position)."""
        self._consumer.commit({self.partition: OffsetAndMetadata(offset, "", -1)})

    def close(self) -> None:
        self._consumer.close()


def alive_file(settings: Settings) -> Path:
    """The file the learner touches at every turn of its loop: a health check reads its age
    (docker-compose.yml), so a learner stuck (Redis away, a hung broker) shows unhealthy.

    >>> alive_file(Settings(data_dir=Path("/data"))).as_posix()
    '/data/learner-alive'
    """
    return settings.data_dir / "learner-alive"


async def run_learner(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Learn the model-updates topic until ``stop`` is set (default: SIGTERM or SIGINT),
    checkpointing every ``model_checkpoint_interval_s`` and once more before returning."""
    assert settings.kafka_bootstrap is not None and settings.redis_url is not None
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    topic = settings.topics.model_updates
    topic_id = topic_ids(settings.kafka_bootstrap, [topic], kafka_client_options(settings))[topic]
    store = redis_state_store(settings)
    learner = PositionedLearner(RetryingStore(store), topic, topic_id)
    updates = await asyncio.to_thread(ModelUpdatesConsumer, settings)
    try:
        point = await learner.resume(await asyncio.to_thread(updates.committed_by_workers))
        position = await asyncio.to_thread(updates.seek, point.start)
        if point.start == "latest":  # a later restart must not start at a later end
            learner.started_at(position)
        logger.info(
            "learner: models %s; reading %s from offset %d (%s)",
            learner.models.version,
            topic,
            position,
            point.why,
        )
        settle_collector()
        due = time.monotonic() + settings.model_checkpoint_interval_s
        alive = alive_file(settings)
        alive.parent.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            alive.touch()
            records = await asyncio.to_thread(updates.poll)
            if records:
                await asyncio.to_thread(learner.learn_records, records)
            if time.monotonic() >= due:
                await _checkpoint(learner, updates)
                due = time.monotonic() + settings.model_checkpoint_interval_s
        await _checkpoint(learner, updates)
    finally:
        await asyncio.to_thread(updates.close)
        await store.close()


async def _checkpoint(learner: PositionedLearner, updates: ModelUpdatesConsumer) -> None:
    """Checkpoint if anything was learned, then commit the offset for lag tools. While Redis
    is away the store retries and learning waits, so blob and offset stay one moment; any
    other failure ends the process, and a restart resumes from the last checkpoint."""
    if not await learner.checkpoint():
        return
    assert learner.checkpointed_offset is not None
    logger.info(
        "checkpointed models %s, next offset %d",
        learner.models.version,
        learner.checkpointed_offset,
    )
    try:
        await asyncio.to_thread(updates.commit, learner.checkpointed_offset)
    except Exception as error:  # noqa: BLE001 - informational only: the checkpoint holds it
        logger.warning("offset %d not committed (%r)", learner.checkpointed_offset, error)
