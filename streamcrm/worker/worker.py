"""What one worker does with its messages and timers, without Faust.

:class:`Worker` holds the pipeline, the shared learner, the outbox publisher and the topic
metrics, and has one method per thing the Faust app triggers: a batch of an input topic, a
privacy message, a batch of model updates, and each timer (the sweep, the offset-mark check,
model checkpoints, metrics reports). It reaches Kafka only through a small :class:`Broker`
(send a record; the partitions it owns; whether one still has messages to apply; read a range
back), so its methods can be tested with fakes. :func:`streamcrm.worker.app.create_app` wires
it into a Faust app.

Every message ends in exactly one output: a score (with its alerts) through the outbox, a
dead letter, or nothing for a duplicate. No exception leaves a method the agents call: a Faust
agent that raises would ack the message and skip it forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Protocol

from streamcrm.core.alerts import drift_alert, privacy_failure_alert
from streamcrm.core.campaigns import RetentionPlan, campaign_metrics, uplift_metrics
from streamcrm.core.interventions import RetentionTally
from streamcrm.core.interventions import summed as summed_retention
from streamcrm.core.marketing import Tally, closed_bucket_fields, summed
from streamcrm.core.records import RESCORE_ID_PREFIX, Alert, CustomerScore, DeadLetter
from streamcrm.errors import InvalidEventError, StateBehindError, StoreUnavailableError
from streamcrm.models import ModelUpdate, ModelUpdateBatch
from streamcrm.services.kafka import Record
from streamcrm.settings import Settings
from streamcrm.store import OutboxRecord
from streamcrm.worker.learning import SharedLearner, model_updates_in
from streamcrm.worker.metrics import WorkerMetrics
from streamcrm.worker.outbox import OutboxPublisher
from streamcrm.worker.pipeline import InputMessage, ScoringPipeline
from streamcrm.worker.sweeps import SweepReport
from streamcrm.worker.web import (
    MarketingReports,
    forget_customers,
    message_timestamp,
    scored_in,
)

logger = logging.getLogger(__name__)

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
CATCH_UP_CHUNK = 5_000
"""Messages re-read per request when a partition is re-applied after Redis lost writes."""


class Incoming(InputMessage, Protocol):
    """What the worker needs of a message (a Faust message or a re-read ``Record``): what the
    pipeline needs, and the key for a dead letter."""

    @property
    def key(self) -> bytes | None: ...


class Broker(Protocol):
    """What the worker needs of Kafka beyond the agents that feed it."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Send one record (``value`` None: a tombstone)."""
        ...

    def owned_partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` assigned to this worker now."""
        ...

    def has_unhandled(self, topic: str, partition: int, handled_up_to: int) -> bool:
        """Whether the topic partition has messages at or past ``handled_up_to`` that this
        worker has not applied (or has not fetched anything yet)."""
        ...

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        """The records ``[start, end)`` of one partition, read by a side consumer."""
        ...


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


class Worker:
    """One worker's handling of its messages and timers (see the module)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: ScoringPipeline,
        learner: SharedLearner,
        metrics: WorkerMetrics,
        outbox: OutboxPublisher,
        broker: Broker,
        output_topic_names: dict[str, str],
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.pipeline = pipeline
        pipeline.holding_back = self._holding_back
        self.learner = learner
        self.metrics = metrics
        self.outbox = outbox
        self.broker = broker
        self.output_topic_names = output_topic_names
        """The outbox's kinds (``scores``, ``alerts``) → their topics."""
        self.recent_alerts: deque[Alert] = deque(maxlen=RECENT_ALERTS)
        """The alerts this worker sent, newest last (read by the web views)."""
        self.marketing_reports = MarketingReports()
        """The newest campaign and uplift reports computed (read by ``/api/marketing``)."""
        self._unsent: list[ModelUpdate] = []
        self._partition_locks: dict[tuple[str, int], asyncio.Lock] = {}
        """One lock per input partition: a timer's catch-up, a sweep and the agent never
        interleave."""
        self._next_to_apply: dict[tuple[str, int], int] = {}
        """Per input partition, the offset after the newest message this worker handled."""
        self._publishing: dict[int, asyncio.Task[None]] = {}
        """Per input partition, the publication of its outbox an agent started and did not
        wait for (see :meth:`publish_outputs_soon`)."""

    # --- the agents ------------------------------------------------------------------------

    async def handle_batch(self, messages: Sequence[Incoming]) -> None:
        """Apply a batch of one input topic's messages: scored together where the pipeline
        can (see ``ScoringPipeline.handle_batch``), the rest one by one; never raises."""
        async with AsyncExitStack() as held:
            for topic, partition in sorted({(m.topic, m.partition) for m in messages}):
                await held.enter_async_context(self._partition_lock(topic, partition))
            try:
                outcomes = await self.pipeline.handle_batch(messages)
            except Exception:  # noqa: BLE001 - nothing of the batch is lost: one by one instead
                logger.exception(
                    "batch of %d messages failed; handling them one by one", len(messages)
                )
                outcomes = []
            for message, outcome in zip(messages, outcomes, strict=False):
                if isinstance(outcome, Exception):
                    await self.send_dead_letter(message, outcome)
            done = len(outcomes)
            self._handled(messages[:done])
        publishing = await self.publish_outputs_soon({m.partition for m in messages[:done]})
        self._note_scores_once_published(list(scored_in(messages, outcomes)), publishing)
        for message in messages[done:]:
            await self.handle_message(message)
        await self.publish_model_updates()

    async def handle_message(self, message: Incoming, catching_up: bool = False) -> None:
        """Apply one message: score, privacy action or dead letter; never raises."""
        if catching_up:  # the caller holds the partition's lock
            await self._apply_message(message, catching_up)
            return
        async with self._partition_lock(message.topic, message.partition):
            await self._apply_message(message, catching_up)
        self._handled([message])

    async def learn_model_updates(self, raw: bytes) -> None:
        """One message of the model-updates topic, for the shared learner."""
        try:
            updates = model_updates_in(raw)
        except ValueError:
            logger.exception("unreadable model update skipped")
            return
        await self.learner.learn_all(updates)

    # --- outputs ---------------------------------------------------------------------------

    async def publish_outputs(self, partitions: Iterable[int]) -> None:
        """Publish the outboxes the event path has just written to (scores and alerts), so
        they go out as soon as they are saved; what fails stays for the next try. Each
        partition has its own outbox: they are drained at once, their round trips to Redis
        and the broker overlapping."""
        await asyncio.gather(*(self._drain_outbox(p) for p in sorted(partitions)))

    async def publish_outputs_soon(self, partitions: Iterable[int]) -> list[asyncio.Task[None]]:
        """Start publishing the outboxes a batch has just written to, without waiting for the
        broker's acknowledgements: the agent takes its next batch meanwhile, so a batch's
        round trips to the broker no longer lengthen the next batch's wait. The outputs are
        safe already (saved with the state, in the outbox), so a crash loses none of them.

        At most one publication per partition is in flight: a partition still publishing an
        earlier batch's outputs is waited for first, so scoring runs at most a batch ahead of
        publishing. A rebalance and the shutdown wait for every publication in flight
        (:meth:`outputs_published`), so a partition's next owner does not publish the same
        outbox at the same time. Returns the publications started."""
        started = []
        for partition in sorted(set(partitions)):
            while (running := self._publishing.get(partition)) is not None and not running.done():
                await asyncio.wait({running})
            task = asyncio.create_task(
                self._drain_outbox(partition), name=f"publish-outbox-{partition}"
            )
            self._publishing[partition] = task
            task.add_done_callback(self._published)
            started.append(task)
        return started

    def _note_scores_once_published(
        self, scored: list[tuple[float | None, CustomerScore]], publishing: list[asyncio.Task[None]]
    ) -> None:
        """The latency metric runs to a score's publication: noted when ``publishing`` is
        done (at once when nothing was to be published)."""
        if not publishing:
            self.metrics.note_scores(scored, time.time())
            return
        published = asyncio.gather(*publishing, return_exceptions=True)
        published.add_done_callback(lambda _: self.metrics.note_scores(scored, time.time()))

    def _published(self, task: asyncio.Task[None]) -> None:
        for partition, running in list(self._publishing.items()):
            if running is task:
                del self._publishing[partition]

    async def outputs_published(self, timeout_s: float | None = None) -> bool:
        """Wait (at most ``timeout_s``) until every publication an agent started is done;
        whether they all are."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending := {task for task in self._publishing.values() if not task.done()}:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(pending, timeout=left)
        return True

    async def finish_publishing(self) -> None:
        """Before a rebalance hands partitions on (or the worker stops): publish what the
        agents started publishing. Waited for at most half the session timeout, so a broker
        or Redis that does not answer cannot keep the group from rebalancing; what is left
        stays in the outbox, and the next owner's recovery check sends only what is not on
        its topic yet (at worst some outputs twice, with the same ids)."""
        if not await self.outputs_published(self.settings.broker_session_timeout_s / 2):
            logger.warning(
                "outboxes of partitions %s still publishing at the hand-over",
                sorted(self._publishing),
            )

    async def publish_model_updates(self, flush: bool = False) -> None:
        """Queue what the models should learn; send it as one batch when enough has gathered
        (or at the flush timer): one Kafka message per update cost as much as the event."""
        self._unsent.extend(self.pipeline.drain_updates())
        if self._unsent and (flush or len(self._unsent) >= MODEL_UPDATE_BATCH):
            batch = ModelUpdateBatch(updates=list(self._unsent))
            self._unsent.clear()
            await self.broker.send(
                self.topics.model_updates, b"models", batch.model_dump_json().encode()
            )

    async def flush_model_updates(self) -> None:
        """The flush timer: send whatever model updates wait."""
        await self.publish_model_updates(flush=True)

    async def send_alert(self, key: bytes, alert: Alert) -> None:
        await self.broker.send(self.topics.alerts, key, alert.model_dump_json().encode())
        self.recent_alerts.append(alert)

    async def send_dead_letter(self, message: Incoming, error: Exception) -> None:
        if not isinstance(error, InvalidEventError):
            logger.error(
                "processing failed at %s[%d]@%d",
                message.topic,
                message.partition,
                message.offset,
                exc_info=error,
            )
        letter = dead_letter_for(message, error)
        self.pipeline.dead_letters[letter.reason_code] += 1
        await self.broker.send(
            self.topics.deadletter, message.key, letter.model_dump_json().encode()
        )
        if message.topic == self.topics.privacy:
            # A request to erase (or consent) that was not applied: never silent.
            self.metrics.privacy_failures[letter.reason_code] += 1
            alert = privacy_failure_alert(letter, datetime.now(UTC))
            logger.error("%s", alert.message)
            await self.send_alert(PRIVACY_ALERT_KEY, alert)

    def note_outputs(self, records: Sequence[OutboxRecord]) -> None:
        """Count what the outbox published; show its alerts, and its re-scores (event scores
        are shown by the agents, with their latency)."""
        rescores = []
        for record in records:
            self.metrics.count_out(self.output_topic_names[record.kind])
            # Event scores are shown by the agents from the objects they made: only a
            # re-score (its id says so) is parsed back here.
            if record.kind == "scores" and record.record_id.startswith(RESCORE_ID_PREFIX):
                score = CustomerScore.model_validate_json(record.value)
                if score.trigger != "event":
                    rescores.append((None, score))
            elif record.kind == "alerts":
                self.recent_alerts.append(Alert.model_validate_json(record.value))
        self.metrics.note_scores(rescores, time.time())

    # --- the timers ------------------------------------------------------------------------

    async def sweep_quiet_customers(self) -> None:
        """Sweep each owned partition (label ledgers and as-of re-scores), then publish its
        outbox, holding the partition's input locks throughout: no event of the partition is
        scored in between, so a customer's scores reach the scores topic in the order their
        states were saved, and the last one there is the one in the store."""
        # Only the partitions this worker owns: their customers' events come here alone.
        owned = sorted(self.broker.owned_partitions(self.topics.purchases))
        self.outbox.release(owned)
        report = SweepReport()
        try:
            for partition in owned:
                async with AsyncExitStack() as held:
                    for topic in sorted(self.topics.inputs):
                        await held.enter_async_context(self._partition_lock(topic, partition))
                    swept = await self.pipeline.sweep(
                        [partition], self.settings.sweep_max_customers, self._holding_back
                    )
                    if swept.behind:  # its topics were set back: so is its event time
                        await self._rewind_event_time(partition)
                    report = report + swept
                    await self._drain_outbox(partition)
        except StoreUnavailableError as error:
            logger.warning("sweep skipped (%s); will retry", error)
            return
        except Exception:  # noqa: BLE001 - a timer that raises crashes the Faust app
            logger.exception("sweep failed; will retry")
            return
        await self.publish_model_updates()
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

    async def check_offset_marks(self) -> None:
        """Redis may come back without its last writes while a partition has nothing more to
        deliver (no save would notice): compare every mark with what was applied."""
        for topic, partition in self.pipeline.partitions_applied():
            async with self._partition_lock(topic, partition):
                try:
                    lost = await self.pipeline.check_partition(topic, partition)
                except StoreUnavailableError as error:
                    logger.warning("offset mark check skipped (%s); will retry", error)
                    return
                if lost is not None:
                    await self._catch_up(*lost)

    async def checkpoint(self) -> None:
        """Checkpoint the shared learner's models (where it runs) and load the newest
        checkpoint for scoring. A timer that raises crashes the whole Faust app: a failed
        checkpoint is retried at the next tick instead."""
        try:
            if await self.learner.checkpoint() and self.learner.models is not None:
                logger.info("checkpointed models %s", self.learner.models.version)
            if await self.pipeline.refresh_models():
                logger.info("scoring with models %s", self.pipeline.models.version)
        except StoreUnavailableError as error:
            logger.warning("model checkpoint failed (%s); will retry", error)

    async def publish_campaign_metrics(self) -> None:
        """The metrics timer: read the campaign and retention figures, summed over every
        input partition's partials; refresh the retention arms churn alerts recommend; and
        publish the uplift of acting on alerts (per kind and segment) and each campaign's
        figures and A/B test. Every worker computes the reports and keeps the newest for its
        web views (:attr:`marketing_reports`); only the worker that owns partition 0 of the
        marketing topic publishes them, so each report goes out once per interval."""
        try:
            partials = [
                await self.pipeline.store.campaign_fields(partition)
                for partition in range(self.settings.partitions)
            ]
        except Exception as error:  # noqa: BLE001 - a timer that raises stops the whole app
            logger.warning("campaign metrics not read (%r); will retry", error)
            return
        total = summed(Tally.from_fields(fields) for fields in partials)
        rules = self.settings.ab_test_rules
        # Touches whose attribution window is still open at the watermark count for the
        # share of their conversions already due (streamcrm.core.delayed).
        watermark = self.pipeline.watermark
        self.pipeline.retention = RetentionPlan.from_tally(
            total,
            self.settings.retention_campaign_id,
            self.settings.alert_control_share,
            rules,
            watermark,
        )
        now = datetime.now(UTC)
        retention = summed_retention(RetentionTally.from_fields(fields) for fields in partials)
        uplifts = uplift_metrics(retention, now, rules.prior)
        campaigns = campaign_metrics(total, now, rules, watermark)
        publisher = 0 in self.broker.owned_partitions(self.topics.marketing)
        self.marketing_reports = MarketingReports(now, tuple(campaigns), tuple(uplifts), publisher)
        if not publisher:
            return
        for uplift in uplifts:
            await self.broker.send(
                self.topics.uplift,
                f"{uplift.kind}|{uplift.segment}".encode(),
                uplift.model_dump_json().encode(),
            )
        for report in campaigns:
            await self.broker.send(
                self.topics.campaign_metrics,
                report.campaign_id.encode(),
                report.model_dump_json().encode(),
            )
        if watermark is not None:
            await self._forget_closed_buckets(
                partials, watermark - self.pipeline.config.rules.allowed_lateness
            )

    async def _forget_closed_buckets(
        self, partials: Sequence[Mapping[str, int]], before: datetime
    ) -> None:
        """Drop the touch-time bucket figures no report needs any more (their windows
        closed before ``before``), which bounds the campaign hashes; done by the publisher
        only."""
        window = self.settings.ab_test_rules.attribution_window
        try:
            for partition, fields in enumerate(partials):
                closed = closed_bucket_fields(fields, before, window)
                if closed:
                    await self.pipeline.store.forget_campaign_fields(partition, closed)
        except Exception as error:  # noqa: BLE001 - a timer that raises stops the whole app
            logger.warning("closed campaign buckets not dropped (%r); will retry", error)

    async def publish_model_metrics(self) -> None:
        """This worker's model-quality and traffic report, and a drift alert if it flags one."""
        report = self.pipeline.model_metrics(self.metrics.worker, datetime.now(UTC))
        report = report.model_copy(update={"topics": self.metrics.topic_summary()})
        self.metrics.note_model_report(report)
        await self.broker.send(
            self.topics.model_metrics,
            self.metrics.worker.encode(),
            report.model_dump_json().encode(),
        )
        alert = drift_alert(report, report.published_at)
        if alert is not None:
            await self.send_alert(MODEL_ALERT_KEY, alert)

    async def before_shutdown(self) -> None:
        """Publish what the agents started publishing, hand on what the models should still
        learn (to the next learner, if not this one) and checkpoint."""
        await self.finish_publishing()
        await self.publish_model_updates(flush=True)
        await self.checkpoint()

    # --- inside ----------------------------------------------------------------------------

    def _partition_lock(self, topic: str, partition: int) -> asyncio.Lock:
        return self._partition_locks.setdefault((topic, partition), asyncio.Lock())

    def _handled(self, messages: Sequence[Incoming]) -> None:
        for message in messages:
            where = (message.topic, message.partition)
            self._next_to_apply[where] = max(self._next_to_apply.get(where, 0), message.offset + 1)

    async def _rewind_event_time(self, partition: int) -> None:
        """Redis lost writes: every input topic of the partition whose lost range is still
        to be applied again holds the partition's watermark back (at the store's newest event
        time of it), so nothing (attribution, alert outcomes, churn windows, re-scores) is
        settled past events about to be applied again."""
        topics = (*self.topics.inputs, self.topics.marketing)
        for topic, next_offset in (await self.pipeline.rewind_partition(partition, topics)).items():
            where = (topic, partition)
            self._next_to_apply[where] = min(self._next_to_apply.get(where, 0), next_offset)

    def _holding_back(self, partition: int) -> list[str]:
        """The input topics (the scored ones and marketing) whose partition ``partition``
        still has messages to apply here."""
        return [
            topic
            for topic in (*self.topics.inputs, self.topics.marketing)
            if self.broker.has_unhandled(
                topic, partition, self._next_to_apply.get((topic, partition), 0)
            )
        ]

    async def _drain_outbox(self, partition: int) -> None:
        # Called from timers too, and a timer that raises crashes the whole Faust app: what
        # is not published stays in the outbox for the next try.
        try:
            await self.outbox.drain(partition)
        except Exception as error:  # noqa: BLE001 - retried at the next batch or sweep
            logger.warning(
                "outbox of partition %d not published (%r); will retry", partition, error
            )

    async def _apply_message(self, message: Incoming, catching_up: bool) -> None:
        while True:
            try:
                if message.topic == self.topics.privacy:
                    await self._apply_privacy(message)
                    return
                if message.topic == self.topics.marketing:
                    await self.pipeline.handle_marketing(
                        message.value or b"",
                        message.topic,
                        message.partition,
                        message.offset,
                        key=message.key,
                    )
                    return
                scored = await self.pipeline.handle(
                    message.value or b"",
                    message.topic,
                    message.partition,
                    message.offset,
                    key=message.key,
                )
            except StateBehindError as behind:
                await self._catch_up(behind, message.offset)
                continue  # then this message, on a store that is whole again
            except Exception as error:  # noqa: BLE001 - every failure is dead-lettered
                await self._dead_letter(message, error, catching_up)
                return  # a failed or late event wrote no outputs
            await self.publish_outputs([message.partition])
            if scored.score is not None:
                self.metrics.note_scores([(message_timestamp(message), scored.score)], time.time())
            await self.publish_model_updates()
            return

    async def _apply_privacy(self, message: Incoming) -> None:
        outcome = await self.pipeline.handle_privacy(
            message.value or b"",
            message.topic,
            message.partition,
            message.offset,
            key=message.key,
        )
        await self.publish_model_updates()
        if outcome.action == "erasure":
            forget_customers({outcome.customer_id}, self.metrics, self.recent_alerts)
        if outcome.tombstone:
            # A null value on the compacted scores topic deletes the record.
            await self.broker.send(self.topics.scores, outcome.customer_id.encode(), None)

    async def _dead_letter(self, message: Incoming, error: Exception, catching_up: bool) -> None:
        if not catching_up:  # a re-read message was dead-lettered the first time already
            await self.send_dead_letter(message, error)
        elif not isinstance(error, InvalidEventError):
            logger.error("processing failed again at re-read offset %d", message.offset)
        while True:
            try:
                await self.pipeline.note_dead_lettered(
                    message.topic, message.partition, message.offset
                )
                return
            except StateBehindError as behind:
                await self._catch_up(behind, message.offset)

    async def _catch_up(self, behind: StateBehindError, upto: int) -> None:
        """Re-apply ``[behind.resume_at, upto)`` of the partition, read by a side consumer:
        the store lost those writes (or Kafka's committed offset is past them). The agent is
        busy here, so nothing of the topic overtakes the re-read; no seek of Faust's own
        consumer is needed (a seek races with batches Faust has already fetched)."""
        logger.warning("%s", behind)
        self.outbox.recheck()
        await self._rewind_event_time(behind.partition)
        outcomes = self.pipeline.outcomes
        before = dict(outcomes)
        start = behind.resume_at
        while start < upto:
            end = min(upto, start + CATCH_UP_CHUNK)
            records = await self.broker.read_range(behind.topic, behind.partition, start, end)
            for record in records:
                outcomes["re-applied"] += 1
                await self.handle_message(record, catching_up=True)
            start = end
        changes = {k: v - before.get(k, 0) for k, v in outcomes.items() if v != before.get(k, 0)}
        logger.info(
            "%s[%d]: caught up to offset %d (%s)", behind.topic, behind.partition, upto, changes
        )
