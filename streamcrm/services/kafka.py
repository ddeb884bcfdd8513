"""kafka-python helpers for the CLI and tests: create topics, produce events, read records.

Faust consumes with its own aiokafka driver; everything else that talks to Kafka from a
plain (non-async) command goes through here.

Functions that take a ``bootstrap`` string also take ``client_options``: the security
keyword arguments of :func:`streamcrm.services.connections.kafka_client_options` (SASL, TLS), passed
to every kafka-python client they make. Left out, the connection is PLAINTEXT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from streamcrm.core.events import Event, MarketingEvent
from streamcrm.services.connections import kafka_client_options
from streamcrm.settings import Settings
from streamcrm.store import output_fingerprint

COMPACTED = {"cleanup.policy": "compact"}


def topic_specs(settings: Settings) -> list[NewTopic]:
    """How every streamcrm topic is created: ``settings.partitions`` each, but one for
    ``model-updates`` (one learner in the whole group, one order of updates); ``crm.scores``
    compacted, so it holds the latest score per customer (an erasure's tombstone removes
    it), and ``crm.campaign-metrics`` and ``crm.uplift`` so, the latest report of each; the
    other topics with customer data that streamcrm writes (alerts, dead letters, model
    updates) kept for ``personal_data_retention_hours`` (docs/privacy.md).

    >>> from streamcrm.settings import Settings
    >>> specs = {spec.name: spec for spec in topic_specs(Settings(partitions=6))}
    >>> specs["crm.scores"].num_partitions, specs["crm.scores"].topic_configs
    (6, {'cleanup.policy': 'compact'})
    >>> specs["crm.model-updates"].num_partitions
    1
    >>> specs["crm.alerts"].topic_configs, specs["crm.purchases"].topic_configs
    ({'retention.ms': '604800000'}, {})
    """
    topics = settings.topics
    return [
        NewTopic(
            name,
            num_partitions=1 if name == topics.model_updates else settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs=_topic_configs(settings, name),
        )
        for name in topics.all
    ]


def _topic_configs(settings: Settings, name: str) -> dict[str, str]:
    topics = settings.topics
    if name in (topics.scores, topics.campaign_metrics, topics.uplift):
        return dict(COMPACTED)
    hours = settings.personal_data_retention_hours
    if name in (topics.alerts, topics.deadletter, topics.model_updates) and hours is not None:
        return {"retention.ms": str(round(hours * 3_600_000))}
    return {}


def ensure_topics(settings: Settings, bootstrap: str) -> list[str]:
    """Create every streamcrm topic (:func:`topic_specs`) that does not exist yet; return the
    names created. The admin client connects with the security options of ``settings``."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id=f"{settings.app_id}-admin",
        **kafka_client_options(settings),
    )
    try:
        existing = set(admin.list_topics())
        created: list[str] = []
        for topic in topic_specs(settings):
            if topic.name in existing:
                continue
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def event_topic(settings: Settings, event: Event | MarketingEvent) -> str:
    """The input topic that carries ``event``'s type."""
    topics = settings.topics
    match event.type:
        case "purchase" | "refund":
            return topics.purchases
        case "feedback":
            return topics.feedback
        case "touch" | "offer" | "open" | "click":
            return topics.marketing
        case _:
            return topics.support


def make_producer(bootstrap: str, client_options: Mapping[str, Any] | None = None) -> KafkaProducer:
    """A batching, idempotent producer (``acks=all``): retries never duplicate a message.

    Install ``crc32c`` beside kafka-python: it doubles throughput.
    """
    return KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, **(client_options or {})
    )


def produce_events(
    producer: KafkaProducer, settings: Settings, events: Iterable[Event | MarketingEvent]
) -> int:
    """Send events keyed by customer id to their topics; return how many were sent."""
    sent = 0
    for event in events:
        producer.send(
            event_topic(settings, event),
            key=event.customer_id.encode(),
            value=event.model_dump_json().encode(),
        )
        sent += 1
    return sent


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def topic_ids(
    bootstrap: str, topics: Iterable[str], client_options: Mapping[str, Any] | None = None
) -> dict[str, str | None]:
    """Kafka's id (UUID) of each topic, None where the broker reports none.

    The id changes when a topic is deleted and created again, and when a broker that keeps
    nothing (Tansu with memory storage) restarts; offsets then start again at 0.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(client_options or {})
    )
    try:
        wanted = list(topics)
        for topic in wanted:
            consumer.partitions_for_topic(topic)  # fetches the topic's metadata
        cluster = consumer._client.cluster  # noqa: SLF001 - kafka-python keeps ids here
        ids = {topic: cluster.topic_id(topic) for topic in wanted}
    finally:
        consumer.close()
    return {topic: str(found) if found else None for topic, found in ids.items()}


def read_topic(
    bootstrap: str,
    topic: str,
    from_beginning: bool = True,
    client_options: Mapping[str, Any] | None = None,
    fetch_max_wait_ms: int | None = None,
) -> KafkaConsumer:
    """A group-less consumer assigned to every partition of ``topic``; its fetches wait
    ``fetch_max_wait_ms`` for data at most (None: kafka-python's 500 ms; Tansu waits a fetch
    out even when data arrives, docs/tansu.md)."""
    waits = {} if fetch_max_wait_ms is None else {"fetch_max_wait_ms": fetch_max_wait_ms}
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **waits, **(client_options or {})
    )
    partitions = None
    deadline = time.monotonic() + 10
    while not partitions and time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            time.sleep(0.1)
    if not partitions:
        consumer.close()
        raise LookupError(f"topic {topic!r} has no partitions")
    assignment = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assignment)
    if from_beginning:
        consumer.seek_to_beginning(*assignment)
    else:
        consumer.seek_to_end(*assignment)
    return consumer


def poll_records(consumer: KafkaConsumer, timeout_ms: int = 500) -> Iterator[Record]:
    """The records one poll returns, flattened."""
    for batch in consumer.poll(timeout_ms=timeout_ms).values():
        for message in batch:
            yield Record(
                message.topic, message.partition, message.offset, message.key, message.value
            )


def read_to_end(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Every record of ``topic`` up to the end it had when called (producers may keep
    writing: "until nothing more comes" might never end).

    Raises TimeoutError if the end is not reached within ``timeout_s``.
    """
    consumer = read_topic(bootstrap, topic, client_options=client_options)
    records: list[Record] = []
    try:
        ends = consumer.end_offsets(list(consumer.assignment()))
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:g} s")
            # Keep the whole last batch: Tansu reports its base offset + 1 as the end.
            records.extend(poll_records(consumer, timeout_ms=300))
    finally:
        consumer.close()
    return records


def read_range(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int,
    end: int,
    client_options: Mapping[str, Any] | None = None,
    idle_s: float = 3.0,
) -> list[Record]:
    """The records of one partition with ``start <= offset < end`` (fewer where the log has
    gaps or retention removed them): a worker re-reads what Redis lost this way.

    The broker's end offset is not asked (Tansu reports the last batch's base offset + 1):
    reading stops at ``end``, or when nothing new came for ``idle_s``.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(client_options or {})
    )
    where = TopicPartition(topic, partition)
    records: list[Record] = []
    try:
        consumer.assign([where])
        first = consumer.beginning_offsets([where])[where]
        consumer.seek(where, max(start, first))
        last_progress = time.monotonic()
        while consumer.position(where) < end:
            polled = [r for r in poll_records(consumer, timeout_ms=300) if r.offset < end]
            if polled:
                records.extend(polled)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_s:
                break
    finally:
        consumer.close()
    return records


class OutputReader:
    """A group-less kafka-python consumer for the outbox's recovery check: end offsets of
    output topic partitions, and the record ids on one from an offset. Not thread-safe: use
    it from one thread at a time."""

    def __init__(self, bootstrap: str, client_options: Mapping[str, Any] | None = None) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, **(client_options or {})
        )

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """End offsets (Tansu answers low by up to a batch: a reader from them reads more)."""
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not wanted:
            return {}
        self._know(tp.topic for tp in wanted)
        ends = self._consumer.end_offsets(wanted)
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    def fingerprints_since(
        self, topic: str, partition: int, offset: int, id_field: str, idle_s: float = 2.0
    ) -> set[str]:
        """The :func:`streamcrm.store.output_fingerprint` (``id_field`` value and bytes) of the
        JSON records of one partition from ``offset`` to the end it has now (every record of
        the batches fetched, so Tansu's low end loses none)."""
        where = TopicPartition(topic, partition)
        self._know([topic])
        self._consumer.assign([where])
        first = self._consumer.beginning_offsets([where])[where]
        end = self._consumer.end_offsets([where])[where]
        self._consumer.seek(where, max(offset, first))
        found: set[str] = set()
        last_progress = time.monotonic()
        while self._consumer.position(where) < end:
            polled = list(poll_records(self._consumer, timeout_ms=300))
            if polled:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_s:
                break
            for record in polled:
                if record.value is None:
                    continue
                try:
                    value = json.loads(record.value)
                except ValueError:
                    continue
                if isinstance(value, dict) and isinstance(value.get(id_field), str):
                    found.add(output_fingerprint(value[id_field], record.value))
        return found

    def _know(self, topics: Iterable[str], timeout_s: float = 10.0) -> None:
        """Wait until the client's metadata has every topic (kafka-python's offset requests
        fail with a KeyError for a topic its metadata does not have yet)."""
        deadline = time.monotonic() + timeout_s
        for topic in set(topics):
            while not self._consumer.partitions_for_topic(topic):
                if time.monotonic() > deadline:
                    raise LookupError(f"topic {topic!r} is not known to the broker")
                time.sleep(0.1)

    def close(self) -> None:
        self._consumer.close()
