"""The Faust application: thin agents around :class:`~streamcrm.worker.pipeline.ScoringPipeline`.

One model for the whole group: scoring agents only read the models and publish what they
should learn to the single-partition ``model-updates`` topic; the ``shared-learner`` agent
(wherever that partition is assigned) learns everything and checkpoints to Redis; every
worker loads the newest checkpoint on the checkpoint timer, so all score with one version.

One agent per input topic, each with ``concurrency=1`` so a partition's events are applied in
order. Every message ends in exactly one output: a score on ``crm.scores``, a dead letter on
``crm.deadletter``, or nothing for a duplicate. No exception leaves the agent loop: a Faust
agent that raises would ack the message and skip it forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, Protocol

import aiokafka
import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamcrm.core.alerts import drift_alert, privacy_failure_alert
from streamcrm.core.records import Alert, CustomerScore, DeadLetter
from streamcrm.errors import InvalidEventError, StateBehindError, StoreUnavailableError
from streamcrm.models import ModelUpdate, ModelUpdateBatch
from streamcrm.services.connections import (
    faust_broker_credentials,
    kafka_client_options,
    redis_client_options,
)
from streamcrm.services.kafka import OutputReader, read_range, topic_ids
from streamcrm.settings import Settings
from streamcrm.store import OutboxRecord, RedisStateStore
from streamcrm.worker.dashboard import register_dashboard
from streamcrm.worker.metrics import WorkerMetrics
from streamcrm.worker.outbox import OutboxPublisher
from streamcrm.worker.pipeline import InputMessage, ScoringPipeline, SharedLearner, SweepReport
from streamcrm.worker.web import (
    SAMPLE_INTERVAL_S,
    forget_customers,
    message_timestamp,
    register_web_views,
    scored_in,
)

logger = logging.getLogger(__name__)


def create_app(settings: Settings, pipeline: ScoringPipeline | None = None) -> faust.App:
    """Wire topics, agents and the checkpoint timer for ``settings`` (broker and Redis set)."""
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise ValueError("create_app needs kafka_bootstrap and redis_url; see streamcrm.cli.main")
    store = RedisStateStore.from_url(
        settings.redis_url,
        settings.redis_namespace,
        settings.customer_retention,
        privacy_key=settings.privacy_key_bytes,
        client_options=redis_client_options(settings),
    )
    if settings.privacy_key is None:
        logger.warning(
            "STREAMCRM_PRIVACY_KEY is not set: erased customers are named by an unkeyed hash"
        )
    if pipeline is None:
        pipeline = ScoringPipeline(
            store,
            settings.scoring,
            shared_models=True,
            max_event_time_skew=settings.max_event_time_skew,
            pseudonymise=settings.pseudonymise,
            require_keys=settings.require_message_keys,
        )
    pipeline.topic_ids = topic_ids(
        settings.kafka_bootstrap,
        (*settings.topics.inputs, settings.topics.privacy),
        kafka_client_options(settings),
    )
    logger.info("input topic ids: %s", pipeline.topic_ids)
    learner = SharedLearner(store)
    output_reader = OutputReader(settings.kafka_bootstrap, kafka_client_options(settings))
    fetch_wait_at_most(settings.kafka_fetch_max_wait_ms)
    datadir = settings.data_dir / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_bind,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
    )
    topics = settings.topics
    deadletter_topic = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")
    metrics_topic = app.topic(topics.model_metrics, key_serializer="raw", value_serializer="raw")
    alerts_topic = app.topic(topics.alerts, key_serializer="raw", value_serializer="raw")
    recent_alerts: deque[Alert] = deque(maxlen=RECENT_ALERTS)
    """The alerts this worker sent, newest last (read by the web views)."""
    output_topics = FaustOutputTopics(
        app,
        {"scores": topics.scores, "alerts": topics.alerts},
        settings.partitions,
        output_reader,
    )
    outbox = OutboxPublisher(store, output_topics)
    updates_topic = app.topic(topics.model_updates, key_serializer="raw", value_serializer="raw")

    unsent: list[ModelUpdate] = []

    async def publish_model_updates(flush: bool = False) -> None:
        """Queue what the models should learn; send it as one batch when enough has gathered
        (or at the flush timer): one Kafka message per update cost as much as the event."""
        unsent.extend(pipeline.drain_updates())
        if unsent and (flush or len(unsent) >= MODEL_UPDATE_BATCH):
            batch = ModelUpdateBatch(updates=list(unsent))
            unsent.clear()
            await updates_topic.send(key=b"models", value=batch.model_dump_json().encode())

    async def flush_model_updates() -> None:
        await publish_model_updates(flush=True)

    app.timer(MODEL_UPDATE_FLUSH_S, name="flush-model-updates")(flush_model_updates)

    worker_name = f"{settings.app_id}@{socket.gethostname()}:{os.getpid()}"
    input_topics = (*topics.inputs, topics.privacy)
    metrics = WorkerMetrics(
        worker_name,
        input_topics,
        pipeline.outcomes,
        pipeline.dead_letters,
        sample_interval_s=SAMPLE_INTERVAL_S,
        started_at=datetime.now(UTC),
    )

    kafka_options = kafka_client_options(settings)
    bootstrap = settings.kafka_bootstrap
    catch_up_chunk = 5_000

    async def catch_up(behind: StateBehindError, upto: int) -> None:
        """Re-apply ``[behind.resume_at, upto)`` of the partition, read by a side consumer:
        the store lost those writes (or Kafka's committed offset is past them). The agent is
        busy here, so nothing of the topic overtakes the re-read; no seek of Faust's own
        consumer is needed (a seek races with batches Faust has already fetched)."""
        logger.warning("%s", behind)
        outbox.recheck()
        before = dict(pipeline.outcomes)
        start = behind.resume_at
        while start < upto:
            end = min(upto, start + catch_up_chunk)
            records = await asyncio.to_thread(
                read_range,
                bootstrap,
                behind.topic,
                behind.partition,
                start,
                end,
                kafka_options,
            )
            for record in records:
                pipeline.outcomes["re-applied"] += 1
                await handle_message(record, catching_up=True)
            start = end
        changes = {
            k: v - before.get(k, 0) for k, v in pipeline.outcomes.items() if v != before.get(k, 0)
        }
        logger.info(
            "%s[%d]: caught up to offset %d (%s)", behind.topic, behind.partition, upto, changes
        )

    async def send_dead_letter(message: Incoming, error: Exception) -> None:
        if not isinstance(error, InvalidEventError):
            logger.error(
                "processing failed at %s[%d]@%d",
                message.topic,
                message.partition,
                message.offset,
                exc_info=error,
            )
        letter = dead_letter_for(message, error)
        pipeline.dead_letters[letter.reason_code] += 1
        await deadletter_topic.send(key=message.key, value=letter.model_dump_json().encode())
        if message.topic == topics.privacy:
            # A request to erase (or consent) that was not applied: never silent.
            metrics.privacy_failures[letter.reason_code] += 1
            alert = privacy_failure_alert(letter, datetime.now(UTC))
            logger.error("%s", alert.message)
            await send_alert(PRIVACY_ALERT_KEY, alert)

    async def dead_letter(message: Incoming, error: Exception, catching_up: bool) -> None:
        if not catching_up:  # a re-read message was dead-lettered the first time already
            await send_dead_letter(message, error)
        elif not isinstance(error, InvalidEventError):
            logger.error("processing failed again at re-read offset %d", message.offset)
        while True:
            try:
                await pipeline.note_dead_lettered(message.topic, message.partition, message.offset)
                return
            except StateBehindError as behind:
                await catch_up(behind, message.offset)

    partition_locks: dict[tuple[str, int], asyncio.Lock] = {}
    """One lock per input partition: a timer's catch-up, a sweep and the agent never
    interleave."""
    next_to_apply: dict[tuple[str, int], int] = {}
    """Per input partition, the offset after the newest message this worker handled."""

    def handled(messages: Sequence[Incoming]) -> None:
        for message in messages:
            where = (message.topic, message.partition)
            next_to_apply[where] = max(next_to_apply.get(where, 0), message.offset + 1)

    def holding_back(partition: int) -> list[str]:
        """The input topics whose partition ``partition`` still has messages to apply here:
        never fetched yet, or a high-water mark beyond what was handled (and committed)."""
        consumer: Any = app.consumer  # _committed_offset is not on ConsumerT
        holding = []
        for topic in topics.inputs:
            tp = TP(topic, partition)
            highwater = consumer.highwater(tp)
            committed = consumer._committed_offset.get(tp) or 0  # Faust has no accessor
            done = max(next_to_apply.get((topic, partition), 0), committed)
            if highwater is None or done < highwater:
                holding.append(topic)
        return holding

    def partition_lock(topic: str, partition: int) -> asyncio.Lock:
        return partition_locks.setdefault((topic, partition), asyncio.Lock())

    async def handle_batch(messages: Sequence[Incoming]) -> None:
        """Apply a batch of one input topic's messages: scored together where the pipeline
        can (see ``ScoringPipeline.handle_batch``), the rest one by one; never raises."""
        async with AsyncExitStack() as held:
            for topic, partition in sorted({(m.topic, m.partition) for m in messages}):
                await held.enter_async_context(partition_lock(topic, partition))
            try:
                outcomes = await pipeline.handle_batch(messages)
            except Exception:  # noqa: BLE001 - nothing of the batch is lost: one by one instead
                logger.exception(
                    "batch of %d messages failed; handling them one by one", len(messages)
                )
                outcomes = []
            for message, outcome in zip(messages, outcomes, strict=False):
                if isinstance(outcome, Exception):
                    await send_dead_letter(message, outcome)
            done = len(outcomes)
            handled(messages[:done])
        await publish_outputs({m.partition for m in messages[:done]})
        metrics.note_scores(scored_in(messages, outcomes), time.time())
        for message in messages[done:]:
            await handle_message(message)
        await publish_model_updates()

    async def publish_outputs(partitions: Iterable[int]) -> None:
        """Publish the outboxes the event path has just written to (scores and alerts), so
        they go out as soon as they are saved; what fails stays for the next try."""
        for partition in sorted(partitions):
            await drain_outbox(partition)

    async def send_alert(key: bytes, alert: Alert) -> None:
        await alerts_topic.send(key=key, value=alert.model_dump_json().encode())
        recent_alerts.append(alert)

    async def handle_message(message: Incoming, catching_up: bool = False) -> None:
        """Apply one message: score, privacy action or dead letter; never raises."""
        if catching_up:  # the caller holds the partition's lock
            await apply_message(message, catching_up)
            return
        async with partition_lock(message.topic, message.partition):
            await apply_message(message, catching_up)
        handled([message])

    async def apply_message(message: Incoming, catching_up: bool) -> None:
        while True:
            try:
                if message.topic == topics.privacy:
                    outcome = await pipeline.handle_privacy(
                        message.value or b"",
                        message.topic,
                        message.partition,
                        message.offset,
                        key=message.key,
                    )
                    await publish_model_updates()
                    if outcome.action == "erasure":
                        forget_customers({outcome.customer_id}, metrics, recent_alerts)
                    if outcome.tombstone:
                        # A null value on the compacted scores topic deletes the record.
                        await app.producer.send(
                            topics.scores, outcome.customer_id.encode(), None, None, None, None
                        )
                        metrics.count_out(topics.scores)  # the bare producer passes no sensor
                    return
                scored = await pipeline.handle(
                    message.value or b"",
                    message.topic,
                    message.partition,
                    message.offset,
                    key=message.key,
                )
            except StateBehindError as behind:
                await catch_up(behind, message.offset)
                continue  # then this message, on a store that is whole again
            except Exception as error:  # noqa: BLE001 - every failure is dead-lettered
                await dead_letter(message, error, catching_up)
                await publish_outputs([message.partition])  # a late event's, if any
                return
            await publish_outputs([message.partition])
            if scored.score is not None:
                metrics.note_scores([(message_timestamp(message), scored.score)], time.time())
            await publish_model_updates()
            return

    batch_max, batch_wait_s = settings.batch_max_events, settings.batch_max_wait_ms / 1000
    for topic_name in topics.inputs:
        source = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

        async def score_events(stream: faust.StreamT[bytes]) -> None:
            # Faust acks a batch's messages once the loop body is done with them.
            assert isinstance(stream, faust.Stream)  # take_events is not on StreamT
            async for events in stream.take_events(batch_max, within=batch_wait_s):
                await handle_batch([event.message for event in events])

        app.agent(source, name=f"score-{topic_name}", concurrency=1)(score_events)

    privacy_source = app.topic(topics.privacy, key_serializer="raw", value_serializer="raw")

    async def apply_privacy_events(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await handle_message(event.message)

    app.agent(privacy_source, name="apply-privacy-events", concurrency=1)(apply_privacy_events)

    async def learn_model_updates(stream: faust.StreamT[bytes]) -> None:
        async for raw in stream:
            try:
                updates = model_updates_in(raw)
            except ValueError:
                logger.exception("unreadable model update skipped")
                continue
            await learner.learn_all(updates)

    app.agent(updates_topic, name="shared-learner", concurrency=1)(learn_model_updates)

    async def checkpoint() -> None:
        # A timer that raises crashes the whole Faust app: a failed checkpoint is retried
        # at the next tick instead.
        try:
            if await learner.checkpoint() and learner.models is not None:
                logger.info("checkpointed models %s", learner.models.version)
            if await pipeline.refresh_models():
                logger.info("scoring with models %s", pipeline.models.version)
        except StoreUnavailableError as error:
            logger.warning("model checkpoint failed (%s); will retry", error)

    app.timer(settings.model_checkpoint_interval_s, name="checkpoint-models")(checkpoint)

    async def sweep_quiet_customers() -> None:
        """Sweep each owned partition (label ledgers and as-of re-scores), then publish its
        outbox, holding the partition's input locks throughout: no event of the partition is
        scored in between, so a customer's scores reach the scores topic in the order their
        states were saved, and the last one there is the one in the store."""
        # Only the partitions this worker owns: their customers' events come here alone.
        owned = sorted(
            {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.purchases}
        )
        outbox.release(owned)
        report = SweepReport()
        try:
            for partition in owned:
                async with AsyncExitStack() as held:
                    for topic in sorted(topics.inputs):
                        await held.enter_async_context(partition_lock(topic, partition))
                    report = report + await pipeline.sweep(
                        [partition], settings.sweep_max_customers, holding_back
                    )
                    await drain_outbox(partition)
        except StoreUnavailableError as error:
            logger.warning("sweep skipped (%s); will retry", error)
            return
        except Exception:  # noqa: BLE001 - a timer that raises crashes the Faust app
            logger.exception("sweep failed; will retry")
            return
        await publish_model_updates()
        if report.customers:
            logger.info(
                "sweep: %d customers, %d examples learned, %d heartbeats, %d re-scores"
                " (%d lapsed), %d alerts",
                report.customers,
                report.examples_learned,
                report.heartbeats,
                report.rescores,
                report.lapsed,
                report.alerts,
            )

    async def drain_outbox(partition: int) -> None:
        # A timer that raises crashes the whole Faust app: what is not published stays in
        # the outbox for the next tick.
        try:
            await outbox.drain(partition)
        except Exception as error:  # noqa: BLE001 - retried at the next sweep
            logger.warning(
                "outbox of partition %d not published (%r); will retry", partition, error
            )

    output_topics.on_sent = lambda records: note_outputs(records)

    def note_outputs(records: Sequence[OutboxRecord]) -> None:
        """Count what the outbox published; show its alerts, and its re-scores (event scores
        are shown by the agents, with their latency)."""
        rescores = []
        for record in records:
            metrics.count_out(output_topics.topic_names[record.kind])
            if record.kind == "scores":
                score = CustomerScore.model_validate_json(record.value)
                if score.trigger != "event":
                    rescores.append((None, score))
            elif record.kind == "alerts":
                recent_alerts.append(Alert.model_validate_json(record.value))
        metrics.note_scores(rescores, time.time())

    app.timer(settings.sweep_interval_s, name="sweep-quiet-customers")(sweep_quiet_customers)

    async def check_offset_marks() -> None:
        # Redis may come back without its last writes while a partition has nothing more to
        # deliver (no save would notice): compare every mark with what was applied.
        for topic, partition in pipeline.partitions_applied():
            async with partition_lock(topic, partition):
                try:
                    lost = await pipeline.check_partition(topic, partition)
                except StoreUnavailableError as error:
                    logger.warning("offset mark check skipped (%s); will retry", error)
                    return
                if lost is not None:
                    await catch_up(*lost)

    app.timer(settings.sweep_interval_s, name="check-offset-marks")(check_offset_marks)

    async def publish_model_metrics() -> None:
        report = pipeline.model_metrics(worker_name, datetime.now(UTC))
        report = report.model_copy(update={"topics": metrics.topic_summary()})
        metrics.note_model_report(report)
        await metrics_topic.send(key=worker_name.encode(), value=report.model_dump_json().encode())
        alert = drift_alert(report, report.published_at)
        if alert is not None:
            await send_alert(MODEL_ALERT_KEY, alert)

    app.timer(settings.metrics_interval_s, name="publish-model-metrics")(publish_model_metrics)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def final_checkpoint(sender: faust.App, **_: Any) -> None:
        await publish_model_updates(flush=True)  # for the next learner, if not this one
        await checkpoint()
        output_reader.close()

    register_web_views(app, pipeline, metrics, (*input_topics, topics.model_updates), recent_alerts)
    register_dashboard(app)
    return app


class FaustOutputTopics:
    """The outbox's broker (:class:`streamcrm.worker.outbox.OutputTopics`): Faust's producer for the
    sends, a kafka-python reader (in a thread) for end offsets and the recovery check.

    A record goes to the partition the producer's default partitioner would choose for its key
    (murmur2, as for the scores the agents send), given explicitly so the recovery check reads
    exactly where it went; output topics have ``partitions`` partitions (``ensure_topics``).
    """

    ID_FIELDS = {"scores": "event_id", "alerts": "alert_id"}

    def __init__(
        self, app: faust.App, topic_names: dict[str, str], partitions: int, reader: OutputReader
    ) -> None:
        self.app = app
        self.topic_names = topic_names
        self.partitions = list(range(partitions))
        self.reader = reader
        self.on_sent: Callable[[Sequence[OutboxRecord]], None] = lambda records: None
        self._partitioner = DefaultPartitioner()
        self._reading = asyncio.Lock()

    def topic_partition(self, record: OutboxRecord) -> tuple[str, int]:
        key = record.key.encode()
        return (
            self.topic_names[record.kind],
            self._partitioner(key, self.partitions, self.partitions),
        )

    async def end_offsets(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        async with self._reading:
            return await asyncio.to_thread(self.reader.end_offsets, list(partitions))

    async def fingerprints_since(self, partition: tuple[str, int], offset: int) -> set[str]:
        topic, number = partition
        kind = next(k for k, name in self.topic_names.items() if name == topic)
        async with self._reading:
            return await asyncio.to_thread(
                self.reader.fingerprints_since, topic, number, offset, self.ID_FIELDS[kind]
            )

    async def send_all(self, records: Sequence[OutboxRecord]) -> None:
        deliveries = []
        for record in records:
            topic, partition = self.topic_partition(record)
            deliveries.append(
                await self.app.producer.send(
                    topic,
                    record.key.encode(),
                    record.value.encode(),
                    partition=partition,
                    timestamp=None,
                    headers=None,
                )
            )
        await asyncio.gather(*deliveries)
        self.on_sent(records)


_faust_consumer_factory = AIOKafkaConsumerThread._create_worker_consumer


def fetch_wait_at_most(milliseconds: int | None) -> None:
    """Make Faust's consumer ask the broker to answer each fetch within ``milliseconds``
    (None: Faust's own 1500 ms).

    Faust fixes aiokafka's ``fetch_max_wait_ms`` at 1500 with no setting. Apache Kafka answers
    a fetch as soon as data arrives, so there it costs nothing; Tansu waits the time out
    (docs/tansu.md), which made up most of a score's latency. Faust builds its consumer in
    ``AIOKafkaConsumerThread``; this wraps that one factory, for the whole process.
    """
    if milliseconds is None:
        AIOKafkaConsumerThread._create_worker_consumer = _faust_consumer_factory  # type: ignore[method-assign]
        return

    def create_worker_consumer(
        thread: AIOKafkaConsumerThread, transport: Any
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = _faust_consumer_factory(thread, transport)
        consumer._fetch_max_wait_ms = milliseconds  # read when the consumer starts
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign,assignment]


class Incoming(InputMessage, Protocol):
    """What the agents need of a message (a Faust message or a re-read ``Record``): what the
    pipeline needs, and the key for a dead letter."""

    @property
    def key(self) -> bytes | None: ...


RECENT_ALERTS = 50
"""Alerts a worker keeps in memory for its web views (``/api/overview``)."""
MODEL_ALERT_KEY = b"model"
"""The alerts-topic key of model-wide alerts (customer alerts are keyed by customer id)."""
PRIVACY_ALERT_KEY = b"privacy"
"""The alerts-topic key of failed privacy requests (no customer id: see
:func:`streamcrm.core.alerts.privacy_failure_alert`)."""
MODEL_UPDATE_BATCH = 500
"""Model updates sent in one message at most (and at least, between flushes)."""
MODEL_UPDATE_FLUSH_S = 0.25
"""How long model updates may wait for a batch to fill."""


def model_updates_in(raw: bytes) -> list[ModelUpdate]:
    """The updates of one model-updates message: a batch, or one update (older workers)."""
    try:
        return ModelUpdateBatch.model_validate_json(raw).updates
    except ValueError:
        return [ModelUpdate.model_validate_json(raw)]


def dead_letter_for(message: Incoming, error: Exception) -> DeadLetter:
    """The dead-letter record for a message that failed with ``error``."""
    reason = error.reason if isinstance(error, InvalidEventError) else f"{error}"
    return DeadLetter.of(
        message.value or b"",
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        error_type=type(error).__name__,
        reason_code=error.code if isinstance(error, InvalidEventError) else "processing_error",
        reason=reason or type(error).__name__,
    )
