"""The one seam where the pure scoring core meets I/O.

``raw bytes → decode/validate → load state → score_event (pure) → save state with its score
and alerts in the partition's outbox``. The caller (a Faust agent, a test) publishes the
outbox (:class:`streamcrm.worker.outbox.OutboxPublisher`) and dead-letters what raises.

While the store is unavailable the pipeline waits and retries each store call: the message
is fine, so dead-lettering it would drop a good event from the live path, and retrying the
whole step would let the models learn its labels twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from streamcrm.core.events import (
    BaseEvent,
    ErasureRequested,
    Event,
    check_message_key,
    decode_event,
    decode_privacy_event,
)
from streamcrm.core.privacy import ErasureReport
from streamcrm.core.records import ModelMetrics
from streamcrm.core.scoring import ScoredEvent, ScoringConfig, score_event, sweep_customer
from streamcrm.core.state import CustomerState, topic_kind
from streamcrm.errors import (
    InvalidEventError,
    LateEventError,
    StateBehindError,
)
from streamcrm.models import ModelBundle, ModelUpdate, QueuedUpdates
from streamcrm.store import (
    InputPosition,
    LedgerDue,
    PendingWrite,
    SaveResult,
    StateStore,
)
from streamcrm.store.retrying import RetryingStore
from streamcrm.worker.offsets import OffsetMarks

MODEL_CHECKPOINT = "bundle"
logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseEvent)


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did: customers visited, examples learned, heartbeat snapshots taken,
    re-scores made (of which the lapsed ones) and the alerts they raised."""

    customers: int = 0
    examples_learned: int = 0
    heartbeats: int = 0
    rescores: int = 0
    lapsed: int = 0
    alerts: int = 0

    def __add__(self, other: SweepReport) -> SweepReport:
        return SweepReport(
            self.customers + other.customers,
            self.examples_learned + other.examples_learned,
            self.heartbeats + other.heartbeats,
            self.rescores + other.rescores,
            self.lapsed + other.lapsed,
            self.alerts + other.alerts,
        )


HoldingBack = Callable[[int], Iterable[str]]
"""For an input partition number, the input topics whose partition of that number still has
messages for this worker to apply (fetched or not yet): they hold its watermark back."""


class KeyedLocks:
    """One asyncio lock per key, dropped once nobody holds or waits for it.

    Three agents (one per input topic) may see events of the same customer at once; the lock
    keeps each customer's load → apply → save step whole.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @asynccontextmanager
    async def hold_all(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of all ``keys``, taken in sorted order so that two holders of
        overlapping key sets cannot wait for each other."""
        async with AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                await stack.enter_async_context(self.hold(key))
            yield

    def __len__(self) -> int:
        return len(self._locks)


class InputMessage(Protocol):
    """What the pipeline needs of an input message: where it sits, its bytes and its key."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def key(self) -> bytes | None: ...


BatchOutcome = ScoredEvent | Exception
"""What one message of a batch came to: its scored event, or the error to dead-letter it
with (its offset mark has moved already)."""


@dataclass
class _Planned:
    """One message of a batch, scored in memory and not yet saved."""

    outcome: BatchOutcome
    write: PendingWrite | None
    """None: nothing to write (a duplicate by event id)."""
    queued_updates: int
    """How many model updates were queued before this message: what to keep if its write
    is refused."""
    occurred_at: datetime | None = None


class ScoringPipeline:
    """Scores raw events against a state store, with models checkpointed to the same store."""

    def __init__(
        self,
        store: StateStore,
        config: ScoringConfig,
        shared_models: bool = False,
        max_event_time_skew: timedelta | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pseudonymise: Callable[[str], str] | None = None,
        require_keys: bool = False,
    ) -> None:
        """``shared_models``: only read the models, queue what they should learn for the one
        shared learner (:class:`SharedLearner`), and follow its checkpoints
        (:meth:`refresh_models`). Otherwise this pipeline's models learn at once.

        ``max_event_time_skew``: events dated later than ``clock()`` plus this are rejected
        (``FutureEventError``); None accepts any event time. ``pseudonymise``: replaces every
        event's customer id at the edge (see :func:`streamcrm.core.privacy.pseudonym`), so no id
        reaches state, scores or models. ``require_keys``: an input message whose key is not
        its event's customer id (or that id's pseudonym) is invalid
        (:func:`streamcrm.core.events.check_message_key`); the worker sets it, tests that hand in
        bare payloads leave it off."""
        self.pseudonymise = pseudonymise
        self.require_keys = require_keys
        self.store = store
        """The store itself: it raises while Redis is away (for callers that need an answer
        now, such as the web views)."""
        self._retrying = RetryingStore(store)
        """The same store, each call retried while Redis is away (what the pipeline uses)."""
        self.config = config
        self.max_event_time_skew = max_event_time_skew
        self.clock = clock
        self.models = ModelBundle()
        self.updates: QueuedUpdates | None = QueuedUpdates() if shared_models else None
        self.outcomes: Counter[str] = Counter()
        """Messages handled since start, by outcome: scored, duplicate, late, invalid."""
        self.dead_letters: Counter[str] = Counter()
        """Messages dead-lettered since start, by reason code (counted by the adapter)."""
        self.segment_mix: Counter[str] = Counter()
        """Segments of the scores made since the last metrics report."""
        self.drifts_reported = 0
        self.newest_event_time: datetime | None = None
        self._newest_by_source: dict[tuple[str, int], datetime] = {}
        """The newest event time applied from each input topic partition."""
        self.marks = OffsetMarks(store, self._retrying, self.outcomes)
        """This worker's knowledge of each input partition's offset mark."""
        self._locks = KeyedLocks()
        self._models_loaded = False
        self._loading_models = asyncio.Lock()
        self._checkpointed_version: str | None = None

    @property
    def topic_ids(self) -> dict[str, str | None]:
        """Kafka topic ids of the input topics, for the offset marks (see streamcrm.store)."""
        return self.marks.topic_ids

    @topic_ids.setter
    def topic_ids(self, ids: dict[str, str | None]) -> None:
        self.marks.topic_ids = ids

    async def load_models(self) -> None:
        """Resume from the newest checkpoint, if there is one (once per process)."""
        if self._models_loaded:
            return
        # Events of several agents may arrive while the checkpoint is being read: only the
        # first loads it, so nothing learned meanwhile is replaced by the checkpoint.
        async with self._loading_models:
            if self._models_loaded:
                return
            blob = await self._retrying.load_model(MODEL_CHECKPOINT)
            if blob is not None:
                self.models = ModelBundle.from_bytes(blob)
                logger.info("resumed models from checkpoint %s", self.models.version)
            self._checkpointed_version = self.models.version
            await self._resume_watermark()
            self._models_loaded = True

    async def _resume_watermark(self) -> None:
        """Take the newest event times applied per input partition from the store, so a
        restarted worker sweeps to its watermark before any new message arrives."""
        stored = await self._retrying.newest_event_times()
        for field, newest in stored.items():
            topic, _, partition = field.rsplit("|", 2)
            source = (topic, int(partition))
            known = self._newest_by_source.get(source)
            self._newest_by_source[source] = max(known or newest, newest)
            if self.newest_event_time is None or newest > self.newest_event_time:
                self.newest_event_time = newest

    async def refresh_models(self) -> bool:
        """Load the newest checkpoint if its version differs from the one in use."""
        version = await self.store.load_model_version(MODEL_CHECKPOINT)
        if version is None or version == self.models.version:
            return False
        blob = await self.store.load_model(MODEL_CHECKPOINT)
        if blob is None:
            return False
        self.models = ModelBundle.from_bytes(blob)
        self._checkpointed_version = self.models.version
        self._models_loaded = True
        return True

    def drain_updates(self) -> list[ModelUpdate]:
        """What the shared learner should learn from the messages handled since last asked."""
        return self.updates.drain() if self.updates is not None else []

    async def checkpoint_models(self) -> bool:
        """Save the models if they changed since the last checkpoint; True if saved.

        With shared models only the learner checkpoints: this does nothing.
        """
        version = self.models.version
        if (
            self.updates is not None
            or not self._models_loaded
            or version == self._checkpointed_version
        ):
            return False
        await self.store.save_model(MODEL_CHECKPOINT, self.models.to_bytes(), version)
        self._checkpointed_version = version
        return True

    def _count(
        self, scored: ScoredEvent, occurred_at: datetime, source: tuple[str, int] | None
    ) -> None:
        if scored.duplicate:
            self.outcomes["duplicate"] += 1
        elif scored.late_by is not None:
            self.outcomes["late"] += 1
        elif scored.score is not None:
            self.outcomes["scored"] += 1
            self.segment_mix[scored.score.segment_name] += 1
            if self.newest_event_time is None or occurred_at > self.newest_event_time:
                self.newest_event_time = occurred_at
            if source is not None:
                newest = self._newest_by_source.get(source)
                if newest is None or occurred_at > newest:
                    self._newest_by_source[source] = occurred_at

    async def sweep(
        self,
        partitions: Iterable[int],
        limit: int = 500,
        holding_back: HoldingBack | None = None,
    ) -> SweepReport:
        """Move quiet customers on to the watermark: label ledgers, and re-scores as of the
        passing event time (their outputs written to the partition's outbox with the state).

        Only ``partitions`` this worker owns are swept, so no two workers touch one customer,
        and at most ``limit`` customers of each per call, so a long replay or a jump in event
        time cannot starve event scoring (the rest are still due at the next sweep). Each
        partition is swept to its own watermark (:meth:`partition_watermark`).
        """
        report = SweepReport()
        await self.load_models()
        if self.watermark is None:
            return report
        for partition in partitions:
            watermark = self.partition_watermark(
                partition, () if holding_back is None else holding_back(partition)
            )
            if watermark is None:
                continue
            due = await self._retrying.due_customers(partition, watermark, limit)
            for customer_id in due:
                async with self._locks.hold(customer_id):
                    report = report + await self._sweep_one(partition, customer_id, watermark)
        return report

    def partition_watermark(self, partition: int, holding_back: Iterable[str]) -> datetime | None:
        """Event time up to which every event of one input partition's customers is taken to
        be in, so their quiet spells can be scored: the worker's watermark, held back by each
        input topic whose partition still has messages to apply, to that topic partition's
        newest applied event time less the allowed lateness (None: such a topic partition has
        applied nothing yet).

        A topic partition with nothing more to deliver does not hold the watermark back, so a
        quiet partition's customers are still re-scored; one that is behind does, so a
        customer is never re-scored as of a moment their unread events come before. That is
        what makes re-scores the same in a replay as live (docs/scores.md).
        """
        if self.newest_event_time is None:
            return None
        bound = self.newest_event_time
        for topic in holding_back:
            newest = self._newest_by_source.get((topic, partition))
            if newest is None:
                return None
            bound = min(bound, newest)
        return bound - self.config.rules.allowed_lateness

    async def _sweep_one(
        self, partition: int, customer_id: str, watermark: datetime
    ) -> SweepReport:
        state = await self._retrying.load(customer_id)
        if state is None:  # expired (retention): nothing left to label
            await self._retrying.forget_due(partition, customer_id)
            return SweepReport(customers=1)
        queued = self._queued_updates()
        swept = sweep_customer(state, watermark, self.models, self.config, self.updates)
        outputs = [(swept.score, swept.alerts)] if swept.score is not None else []
        outbox = PendingWrite.outputs_of(outputs)
        saved = await self._retrying.save(
            swept.state, swept.score, LedgerDue(partition, swept.due_at), None, outbox
        )
        if saved != SaveResult.APPLIED:  # erased meanwhile: nothing of it may be learned
            self._drop_updates_from(queued)
            return SweepReport(customers=1)
        self.outcomes["labelled by sweep"] += swept.examples_learned
        rescored = swept.score is not None
        lapsed = rescored and swept.score is not None and swept.score.lapsed
        if rescored:
            self.outcomes["re-scored"] += 1
        return SweepReport(
            customers=1,
            examples_learned=swept.examples_learned,
            heartbeats=swept.heartbeats,
            rescores=int(rescored),
            lapsed=int(lapsed),
            alerts=len(swept.alerts),
        )

    def model_metrics(self, worker: str, now: datetime) -> ModelMetrics:
        """The metrics report as of now; starts a new segment-mix interval."""
        churn = self.models.churn
        both_classes = 0 < churn.n_churned < churn.n_learned
        mix_total = sum(self.segment_mix.values())
        report = ModelMetrics(
            worker=worker,
            published_at=now,
            event_time=self.newest_event_time,
            model_version=self.models.version,
            labelled_examples=churn.n_learned,
            churned_examples=churn.n_churned,
            roc_auc=churn.roc_auc.get() if both_classes else None,
            log_loss=churn.log_loss.get() if churn.n_learned else None,
            brier=churn.brier.get() if churn.n_learned else None,
            rolling_roc_auc=churn.rolling_roc_auc.get() if both_classes else None,
            recent_brier=churn.error_drift.estimation if churn.n_learned else None,
            drifts_detected=churn.drifts_detected,
            model_drift=churn.drifts_detected > self.drifts_reported,
            customers_scored=self.models.segments.n_learned,
            segment_shares={
                name: count / mix_total for name, count in sorted(self.segment_mix.items())
            },
            events=dict(sorted(self.outcomes.items())),
            dead_letters=dict(sorted(self.dead_letters.items())),
        )
        self.segment_mix.clear()
        if report.model_drift:
            logger.warning(
                "model drift: the churn model's error rate changed (ADWIN, %d changes so far;"
                " recent Brier %.4f, overall %.4f)",
                churn.drifts_detected,
                report.recent_brier or 0.0,
                report.brier or 0.0,
            )
        self.drifts_reported = churn.drifts_detected
        return report

    @property
    def watermark(self) -> datetime | None:
        """Event time up to which this worker takes every event to be in: the newest event
        time it has applied, less the allowed lateness. It closes churn windows."""
        if self.newest_event_time is None:
            return None
        return self.newest_event_time - self.config.rules.allowed_lateness

    async def handle(
        self,
        raw: bytes,
        topic: str | None = None,
        partition: int = 0,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> ScoredEvent:
        """Score one raw message; raises ``InvalidEventError`` for a message to dead-letter.

        The new score, if any, and the alerts it raised are written to the partition's outbox
        in the same atomic step as the state (see :mod:`streamcrm.worker.outbox`): so they go out in
        the order the states were saved, the last score of a customer on a compacted topic
        is the one in the store, and an applied event's outputs are published even if the
        worker dies right after the save (a redelivered message writes nothing new).

        ``partition`` is the input partition the message came from (it files the customer in
        the due index). With ``topic`` and ``offset`` given, the save also moves the partition's
        offset mark, and a message at or below the mark (redelivered after a crash) changes
        nothing: it counts as a duplicate. A late event is saved as counted (``late_events``)
        before ``LateEventError`` reports it.
        """
        position = await self.marks.position(topic, partition, offset)
        event = self._decoded(raw, topic, self._not_after(), key)
        if isinstance(event, InvalidEventError):
            self.outcomes["invalid"] += 1
            raise event
        await self.load_models()
        async with self._locks.hold(event.customer_id):
            state = await self._retrying.load(event.customer_id)
            # The event itself is in: it may move the watermark before it is scored.
            newest = max(self.newest_event_time or event.occurred_at, event.occurred_at)
            watermark = newest - self.config.rules.allowed_lateness
            queued = self._queued_updates()
            scored = score_event(
                state, event, self.models, self.config, watermark, learner=self.updates
            )
            if not scored.duplicate:
                due = LedgerDue(partition, scored.due_at) if scored.late_by is None else None
                write = PendingWrite(
                    position,
                    scored.state,
                    scored.score,
                    due,
                    PendingWrite.outputs_of(scored.outputs),
                    event_time=event.occurred_at if scored.late_by is None else None,
                )
                (saved,) = await self._retrying.save_batch([write])
                self.marks.after_write(position, saved)
                if saved != SaveResult.APPLIED:
                    # Redelivered (its effects are already in the store), an erased
                    # customer's event or a store behind: nothing of it may reach the models.
                    self._drop_updates_from(queued)
                    if saved == SaveResult.STATE_BEHIND:
                        raise await self.marks.state_behind(position)
                    if saved == SaveResult.CUSTOMER_ERASED:
                        self.outcomes["erased customer"] += 1
                        return ScoredEvent(state=scored.state, score=None, erased=True)
                    scored = ScoredEvent(state=state or scored.state, score=None, duplicate=True)
        self._count(scored, event.occurred_at, (topic, partition) if topic else None)
        if scored.late_by is not None:
            raise self._late_error(event, scored)
        return scored

    def _late_error(self, event: Event, scored: ScoredEvent) -> LateEventError:
        assert scored.late_by is not None
        return LateEventError(
            f"event at {event.occurred_at.isoformat()} is {_hours(scored.late_by)} older than "
            f"the newest {topic_kind(event)} event of customer {event.customer_id!r}; "
            f"allowed lateness is {_hours(self.config.rules.allowed_lateness)}: "
            "counted as late, not applied"
        )

    async def handle_batch(self, messages: Sequence[InputMessage]) -> list[BatchOutcome]:
        """Score a batch of input messages as :meth:`handle` would one by one, with one Redis
        round trip to load their customers and one to save everything.

        Returns the outcomes of the messages handled, in order: a prefix of ``messages``. The
        caller handles the rest one by one with :meth:`handle`; that happens when a save is
        refused (a redelivered message, a store behind), since every later message of the batch
        was scored on top of it, and for a whole batch holding a partition's first message in
        this process (whose stored mark must be checked first). Outcomes that are exceptions
        are to be dead-lettered; their offset marks have moved already. Outputs go to the
        outbox as :meth:`handle`'s do.
        """
        if not all(self.marks.knows(m.topic, m.partition) for m in messages):
            return []
        not_after = self._not_after()
        events = [self._decoded(m.value or b"", m.topic, not_after, m.key) for m in messages]
        await self.load_models()
        customers = {event.customer_id for event in events if isinstance(event, BaseEvent)}
        async with self._locks.hold_all(customers):
            states = await self._retrying.load_many(sorted(customers))
            queued = self._queued_updates()
            try:
                planned = self._plan(messages, events, states)
                writes = [plan.write for plan in planned if plan.write is not None]
                results = await self._retrying.save_batch(writes)
            except BaseException:
                self._drop_updates_from(queued)
                raise
            return self._settled(planned, results)

    def _not_after(self) -> datetime | None:
        """The latest event time accepted now (None: any)."""
        if self.max_event_time_skew is None:
            return None
        return self.clock() + self.max_event_time_skew

    def _decoded(
        self, raw: bytes, topic: str | None, not_after: datetime | None, key: bytes | None
    ) -> Event | InvalidEventError:
        try:
            return self._admitted(decode_event(raw, topic, not_after), key)
        except InvalidEventError as error:
            return error

    def _plan(
        self,
        messages: Sequence[InputMessage],
        events: Sequence[Event | InvalidEventError],
        states: dict[str, CustomerState | None],
    ) -> list[_Planned]:
        """Score the batch in memory, in order, each customer's events on top of each other;
        every message but a duplicate gets its write (a save, or a bare mark move)."""
        planned: list[_Planned] = []
        newest = self.newest_event_time
        for message, event in zip(messages, events, strict=True):
            # Each write carries the partition's mark from before the batch: the batch is
            # written in one atomic step, so a mark below it means writes lost before.
            position = self.marks.positioned(message.topic, message.partition, message.offset)
            if isinstance(event, InvalidEventError):
                plan = _Planned(event, PendingWrite(position), self._queued_updates())
            else:
                plan = self._plan_event(event, position, states, newest)
                if isinstance(plan.outcome, ScoredEvent) and plan.outcome.score is not None:
                    newest = max(newest or event.occurred_at, event.occurred_at)
            planned.append(plan)
        return planned

    def _plan_event(
        self,
        event: Event,
        position: InputPosition,
        states: dict[str, CustomerState | None],
        newest: datetime | None,
    ) -> _Planned:
        """Score one event on its customer's state so far in the batch (updated in place)."""
        queued = self._queued_updates()
        watermark = max(newest or event.occurred_at, event.occurred_at) - (
            self.config.rules.allowed_lateness
        )
        try:
            scored = score_event(
                states[event.customer_id],
                event,
                self.models,
                self.config,
                watermark,
                learner=self.updates,
            )
        except Exception as error:  # noqa: BLE001 - dead-lettered, as handle's would be
            self._drop_updates_from(queued)
            return _Planned(error, PendingWrite(position), queued)
        if scored.duplicate:
            return _Planned(scored, None, queued, event.occurred_at)
        states[event.customer_id] = scored.state
        outbox = PendingWrite.outputs_of(scored.outputs)
        if scored.late_by is not None:
            write = PendingWrite(position, scored.state, scored.score, outbox=outbox)
            return _Planned(self._late_error(event, scored), write, queued)
        due = LedgerDue(position.partition, scored.due_at)
        write = PendingWrite(
            position, scored.state, scored.score, due, outbox, event_time=event.occurred_at
        )
        return _Planned(scored, write, queued, event.occurred_at)

    def _queued_updates(self) -> int:
        return len(self.updates.updates) if self.updates is not None else 0

    def _settled(self, planned: list[_Planned], results: list[SaveResult]) -> list[BatchOutcome]:
        """The outcomes of the messages whose writes were made (or refused harmlessly), up to
        the first refusal that leaves the rest to be handled one by one."""
        outcomes: list[BatchOutcome] = []
        written = iter(results)
        for plan in planned:
            if plan.write is None:  # a duplicate: nothing was to be written
                self._settle(plan.outcome, plan.occurred_at, None)
                outcomes.append(plan.outcome)
                continue
            result = next(written, None)
            if result is None or result == SaveResult.STATE_BEHIND:
                self._drop_updates_from(plan.queued_updates)
                return outcomes
            self.marks.after_write(plan.write.position, result)
            if result == SaveResult.APPLIED:
                position = plan.write.position
                source = (position.topic, position.partition) if position is not None else None
                self._settle(plan.outcome, plan.occurred_at, source)
                outcomes.append(plan.outcome)
                continue
            # Refused, and every later message was scored on top of this one: keep only what
            # came before. A redelivered message goes one by one with the rest (it turns out
            # a duplicate there); an erased customer's event is done (its mark moved).
            self._drop_updates_from(plan.queued_updates)
            if result == SaveResult.CUSTOMER_ERASED:
                assert plan.write.state is not None, "only a save finds a customer erased"
                self.outcomes["erased customer"] += 1
                outcomes.append(ScoredEvent(state=plan.write.state, score=None, erased=True))
            return outcomes
        return outcomes

    def _settle(
        self,
        outcome: BatchOutcome,
        occurred_at: datetime | None,
        source: tuple[str, int] | None,
    ) -> None:
        """Count a message whose write was made, as :meth:`handle` would have."""
        if isinstance(outcome, ScoredEvent):
            assert occurred_at is not None, "a scored message has an event time"
            self._count(outcome, occurred_at, source)
        elif isinstance(outcome, LateEventError):
            self.outcomes["late"] += 1
        elif isinstance(outcome, InvalidEventError):
            self.outcomes["invalid"] += 1

    def _drop_updates_from(self, queued: int) -> None:
        if self.updates is not None:
            del self.updates.updates[queued:]

    async def handle_privacy(
        self,
        raw: bytes,
        topic: str | None = None,
        partition: int = 0,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> PrivacyOutcome:
        """Apply an erasure request or a consent record (see :mod:`streamcrm.core.privacy`).

        Raises ``InvalidEventError`` for a message to dead-letter (with ``require_keys``, also
        one not keyed by its customer). An erasure also tells the shared learner to forget the
        customer; the caller emits the score tombstone.
        """
        # The position first, as for events: a dead letter moves the partition's mark, so the
        # partition must be known (and its stored mark checked) even when nothing decodes.
        position = await self.marks.position(topic, partition, offset)
        try:
            event = self._admitted(decode_privacy_event(raw), key)
        except InvalidEventError:
            self.outcomes["invalid"] += 1
            raise
        async with self._locks.hold(event.customer_id):
            if isinstance(event, ErasureRequested):
                report = await self._retrying.erase(
                    event.customer_id, partition, position, event.occurred_at
                )
                if not report.already_applied:
                    self.marks.marked(position)
                # Even for a redelivered request: what followed the first (the learner's
                # forget, the tombstone) may have died with the worker. Both are idempotent.
                if self.updates is not None:
                    self.updates.forget(event.customer_id)
                else:
                    self.models.forget(event.customer_id)
                if report.already_applied:
                    self.outcomes["duplicate"] += 1
                    return PrivacyOutcome(event.customer_id, "erasure", report, duplicate=True)
                self.outcomes["erased"] += 1
                logger.info(
                    "erased subject %s (state deleted: %s)", report.subject, report.state_deleted
                )
                return PrivacyOutcome(event.customer_id, "erasure", report)
            recorded = await self._retrying.record_consent(
                event.customer_id, position, event.occurred_at
            )
            if recorded:
                self.marks.marked(position)
            self.outcomes["consent recorded" if recorded else "duplicate"] += 1
            return PrivacyOutcome(event.customer_id, "consent", None, duplicate=not recorded)

    def _admitted(self, event: _E, key: bytes | None) -> _E:
        """A decoded event as the core sees it: its message key checked (``require_keys``;
        a producer may key by the id or by its pseudonym) and its id pseudonymised, the
        pseudonym computed once for both. Raises ``MessageKeyError``."""
        pseudonym = None if self.pseudonymise is None else self.pseudonymise(event.customer_id)
        if self.require_keys:
            check_message_key(event, key, *(() if pseudonym is None else (pseudonym,)))
        if pseudonym is None:
            return event
        return event.model_copy(update={"customer_id": pseudonym})

    def partitions_applied(self) -> list[tuple[str, int]]:
        """The input partitions this worker has applied messages of (to check with
        :meth:`check_partition`)."""
        return self.marks.partitions_applied()

    async def check_partition(
        self, topic: str, partition: int
    ) -> tuple[StateBehindError, int] | None:
        """See :meth:`streamcrm.worker.offsets.OffsetMarks.check_partition`."""
        return await self.marks.check_partition(topic, partition)

    async def note_dead_lettered(
        self, topic: str | None, partition: int, offset: int | None
    ) -> None:
        """Move the partition's mark past a dead-lettered message, so that every handled
        offset is marked (what lets a restarted worker tell a gap from lost writes)."""
        if topic is None or offset is None:
            return
        position = self.marks.positioned(topic, partition, offset)
        result = await self._retrying.mark_applied(position)
        self.marks.after_write(position, result)
        if result == SaveResult.STATE_BEHIND:
            raise await self.marks.state_behind(position)


@dataclass(frozen=True)
class PrivacyOutcome:
    """What a privacy event did; ``tombstone`` says whether to delete the customer's score."""

    customer_id: str
    action: str
    erasure: ErasureReport | None
    duplicate: bool = False

    @property
    def tombstone(self) -> bool:
        """Every erasure, a redelivered one too: the first one's tombstone may not have been
        sent before a crash, and a second tombstone changes nothing."""
        return self.action == "erasure"


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f}h"


class SharedLearner:
    """The one learner of a worker group: learns every worker's updates, checkpoints them.

    It runs where the single partition of the model-updates topic is assigned. A checkpoint is
    written only if it has learned more than the stored one, so a learner that just lost its
    partition cannot overwrite its successor's newer model.
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        """The store itself: it raises while Redis is away (for callers that need an answer
        now, such as the web views)."""
        self._retrying = RetryingStore(store)
        """The same store, each call retried while Redis is away (what the pipeline uses)."""
        self.models: ModelBundle | None = None
        self._checkpointed = 0
        self._forgotten = 0
        self._busy = asyncio.Lock()
        """Held while the models learn or are serialised, both in a worker thread."""

    async def learn(self, update: ModelUpdate) -> None:
        await self.learn_all([update])

    async def learn_all(self, updates: Sequence[ModelUpdate]) -> None:
        """Learn the updates in order, in a worker thread: a batch takes tens of
        milliseconds and a repeat-buying refit seconds, which the scoring agents sharing this
        event loop must not wait for (the thread gives the loop the GIL every few ms)."""
        if self.models is None:
            blob = await self._retrying.load_model(MODEL_CHECKPOINT)
            self.models = ModelBundle.from_bytes(blob) if blob is not None else ModelBundle()
            self._checkpointed = self.models.updates_learned
        models = self.models
        async with self._busy:
            await asyncio.to_thread(_learn_each, models, updates)
        self._forgotten += sum(1 for update in updates if update.kind == "forget")

    async def checkpoint(self) -> bool:
        """Save the models if they learned (or forgot) anything and are not older than the
        stored ones."""
        models = self.models
        if models is None or (models.updates_learned <= self._checkpointed and not self._forgotten):
            return False
        stored = await self.store.load_model_version(MODEL_CHECKPOINT)
        async with self._busy:  # the models do not change until they are serialised
            learned, forgotten, version = models.updates_learned, self._forgotten, models.version
            if stored is not None:
                stored_updates = _updates_in(stored)
                # Equal counts: the stored model is this one, unless this one has since
                # forgotten an erased customer.
                if stored_updates > learned or (stored_updates == learned and not forgotten):
                    return False
            blob = await asyncio.to_thread(models.to_bytes)
        await self.store.save_model(MODEL_CHECKPOINT, blob, version)
        self._checkpointed = learned
        self._forgotten -= forgotten
        return True


def _learn_each(models: ModelBundle, updates: Sequence[ModelUpdate]) -> None:
    for update in updates:
        models.learn(update)


def _updates_in(version: str) -> int:
    """Updates learned by the bundle of a version string ``churn-N.segments-M``: N + M."""
    return sum(int(part.rsplit("-", 1)[1]) for part in version.split("."))
