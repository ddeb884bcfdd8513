"""The Faust application: agents and timers around a :class:`~streamcrm.worker.worker.Worker`.

One model for the whole group: scoring agents only read the models and publish what they
should learn to the single-partition ``model-updates`` topic; the ``shared-learner`` agent
(wherever that partition is assigned) learns everything and checkpoints to Redis; every
worker loads the newest checkpoint on the checkpoint timer, so all score with one version.
With ``STREAMCRM_LEARNER=process`` there is no ``shared-learner`` agent: ``streamcrm learner``
(:mod:`streamcrm.learner`) learns and checkpoints in a process of its own.

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
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiokafka
import faust
from aiokafka.partitioner import DefaultPartitioner
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamcrm.services.collector import settle_collector
from streamcrm.services.connections import (
    faust_broker_credentials,
    kafka_client_options,
    redis_state_store,
)
from streamcrm.services.kafka import OutputReader, Record, read_range, topic_ids
from streamcrm.settings import Settings
from streamcrm.store import OutboxRecord
from streamcrm.worker.dashboard import register_dashboard
from streamcrm.worker.learning import SharedLearner
from streamcrm.worker.metrics import WorkerMetrics
from streamcrm.worker.outbox import OutboxPublisher
from streamcrm.worker.pipeline import ScoringPipeline
from streamcrm.worker.web import (
    SAMPLE_INTERVAL_S,
    register_web_views,
)
from streamcrm.worker.worker import MODEL_UPDATE_FLUSH_S, Worker

logger = logging.getLogger(__name__)


def create_app(settings: Settings, pipeline: ScoringPipeline | None = None) -> faust.App:
    """Wire a :class:`~streamcrm.worker.worker.Worker` into a Faust app for ``settings``
    (broker and Redis set): the store, the topics, one agent per input topic, the privacy
    and shared-learner agents, the timers and the web views."""
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise ValueError("create_app needs kafka_bootstrap and redis_url; see streamcrm.cli.main")
    store = redis_state_store(settings)
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
    pipeline.retention = settings.retention_plan
    topics = settings.topics
    pipeline.topic_ids = topic_ids(
        settings.kafka_bootstrap,
        (*topics.inputs, topics.privacy, topics.marketing),
        kafka_client_options(settings),
    )
    logger.info("input topic ids: %s", pipeline.topic_ids)
    fetch_wait_at_most(settings.kafka_fetch_max_wait_ms)
    app = _faust_app(settings)

    input_topics = (*topics.inputs, topics.privacy, topics.marketing)
    metrics = WorkerMetrics(
        f"{settings.app_id}@{socket.gethostname()}:{os.getpid()}",
        input_topics,
        pipeline.outcomes,
        pipeline.dead_letters,
        sample_interval_s=SAMPLE_INTERVAL_S,
        started_at=datetime.now(UTC),
    )
    output_reader = OutputReader(settings.kafka_bootstrap, kafka_client_options(settings))
    output_names = {"scores": topics.scores, "alerts": topics.alerts}
    output_topics = FaustOutputTopics(app, output_names, settings.partitions, output_reader)
    worker = Worker(
        settings,
        pipeline,
        SharedLearner(store),
        metrics,
        OutboxPublisher(store, output_topics),
        FaustBroker(app, settings, metrics),
        output_names,
    )
    output_topics.on_sent = worker.note_outputs

    batch_max, batch_wait_s = settings.batch_max_events, settings.batch_max_wait_ms / 1000
    for topic_name in topics.inputs:

        async def score_events(stream: faust.StreamT[bytes]) -> None:
            # Faust acks a batch's messages once the loop body is done with them.
            assert isinstance(stream, faust.Stream)  # take_events is not on StreamT
            async for events in stream.take_events(batch_max, within=batch_wait_s):
                await worker.handle_batch([event.message for event in events])

        app.agent(_raw_topic(app, topic_name), name=f"score-{topic_name}", concurrency=1)(
            score_events
        )

    async def apply_privacy_events(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await worker.handle_message(event.message)

    app.agent(_raw_topic(app, topics.privacy), name="apply-privacy-events", concurrency=1)(
        apply_privacy_events
    )

    async def apply_marketing_events(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await worker.handle_message(event.message)

    app.agent(_raw_topic(app, topics.marketing), name="apply-marketing-events", concurrency=1)(
        apply_marketing_events
    )

    if settings.learner == "in-worker":
        # Else `streamcrm learner` learns them, in its own process (streamcrm.learner).

        async def learn_model_updates(stream: faust.StreamT[bytes]) -> None:
            async for raw in stream:
                await worker.learn_model_updates(raw)

        app.agent(_raw_topic(app, topics.model_updates), name="shared-learner", concurrency=1)(
            learn_model_updates
        )

    app.timer(MODEL_UPDATE_FLUSH_S, name="flush-model-updates")(worker.flush_model_updates)
    app.timer(settings.model_checkpoint_interval_s, name="checkpoint-models")(worker.checkpoint)
    app.timer(settings.sweep_interval_s, name="sweep-quiet-customers")(worker.sweep_quiet_customers)
    app.timer(settings.sweep_interval_s, name="check-offset-marks")(worker.check_offset_marks)
    app.timer(settings.metrics_interval_s, name="publish-campaign-metrics")(
        worker.publish_campaign_metrics
    )
    app.timer(settings.metrics_interval_s, name="publish-model-metrics")(
        worker.publish_model_metrics
    )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def finish_publishing(sender: faust.App, revoked: Any, **_: Any) -> None:
        # Faust sends this after the agents finished their batches, before the hand-over.
        await worker.finish_publishing()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def final_checkpoint(sender: faust.App, **_: Any) -> None:
        await worker.before_shutdown()
        output_reader.close()

    register_web_views(
        app,
        pipeline,
        metrics,
        (*input_topics, topics.model_updates),
        worker.recent_alerts,
        lambda: worker.marketing_reports,
    )
    register_dashboard(app)
    return app


def _faust_app(settings: Settings) -> faust.App:
    assert settings.kafka_bootstrap is not None
    datadir = settings.data_dir / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
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


def _raw_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_serializer="raw", value_serializer="raw")


class FaustBroker:
    """The worker's :class:`~streamcrm.worker.worker.Broker` on a Faust app: records sent
    through Faust topics (counted by the app's sensor), tombstones through the bare producer
    (counted here), and the consumer's assignment, high-water marks and committed offsets."""

    def __init__(self, app: faust.App, settings: Settings, metrics: WorkerMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self._topics: dict[str, faust.TopicT] = {}

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            # A Faust topic would serialise None; the bare producer sends a real null.
            await self.app.producer.send(
                topic, key, None, partition=None, timestamp=None, headers=None
            )
            self.metrics.count_out(topic)  # the bare producer passes no sensor
            return
        if topic not in self._topics:
            self._topics[topic] = _raw_topic(self.app, topic)
        await self._topics[topic].send(key=key, value=value)

    def owned_partitions(self, topic: str) -> list[int]:
        return [tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic]

    def has_unhandled(self, topic: str, partition: int, handled_up_to: int) -> bool:
        consumer: Any = self.app.consumer  # _committed_offset is not on ConsumerT
        tp = TP(topic, partition)
        highwater = consumer.highwater(tp)
        committed = consumer._committed_offset.get(tp) or 0  # Faust has no accessor
        return highwater is None or max(handled_up_to, committed) < highwater

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        assert self.settings.kafka_bootstrap is not None
        return await asyncio.to_thread(
            read_range,
            self.settings.kafka_bootstrap,
            topic,
            partition,
            start,
            end,
            kafka_client_options(self.settings),
        )


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


def faust_worker(app: faust.App, loglevel: str) -> faust.Worker:
    """A Faust worker for ``app`` logging at ``loglevel``, without the terminal spinner.

    Faust's worker keeps a progress spinner and, to feed it every record, sets the root logger
    to DEBUG whenever the level asked for is WARNING or above
    (``faust.Worker._setup_spinner_handler``): every ``logger.debug`` call in aiokafka, Faust
    and mode then builds a record that the handler drops (20-35 us an event, measured while
    deciding issue 20). Without the spinner the root logger keeps the level asked for.
    """
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.spinner = None
    settle_collector()
    return worker
