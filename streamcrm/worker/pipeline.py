"""The one seam where the pure scoring core meets I/O.

``raw bytes → decode/validate → load state → score_event (pure) → save state with its score
and alerts in the partition's outbox``. The caller (a Faust agent, a test) publishes the
outbox (:class:`streamcrm.worker.outbox.OutboxPublisher`) and dead-letters what raises.

Its parts live beside it: decoding and key checks at the edge (:mod:`streamcrm.worker.admission`),
the offset marks (:mod:`streamcrm.worker.offsets`), the models in use
(:mod:`streamcrm.worker.learning`), event time and watermarks
(:mod:`streamcrm.worker.watermarks`), the sweep of quiet customers
(:mod:`streamcrm.worker.sweeps`), privacy requests (:mod:`streamcrm.worker.privacy`) and
per-customer locks (:mod:`streamcrm.worker.locks`). A single message is handled as a batch of
one, so each rule of handling lives once.

While the store is unavailable the pipeline waits and retries each store call
(:class:`streamcrm.store.retrying.RetryingStore`): the message is fine, so dead-lettering it
would drop a good event from the live path, and retrying the whole step would let the models
learn its labels twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from streamcrm.core.campaigns import RetentionPlan
from streamcrm.core.events import (
    BaseEvent,
    Event,
)
from streamcrm.core.records import ModelMetrics
from streamcrm.core.scoring import MarketingStep, ScoredEvent, ScoringConfig, score_event
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
from streamcrm.worker.admission import Admission
from streamcrm.worker.learning import LiveModels
from streamcrm.worker.locks import KeyedLocks
from streamcrm.worker.marketing import MarketingEvents
from streamcrm.worker.offsets import OffsetMarks
from streamcrm.worker.privacy import PrivacyOutcome, PrivacyRequests
from streamcrm.worker.sweeps import HoldingBack, QuietCustomerSweeper, SweepReport
from streamcrm.worker.watermarks import EventTime


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
        shared learner (:class:`streamcrm.worker.learning.SharedLearner`), and follow its
        checkpoints (:meth:`refresh_models`). Otherwise this pipeline's models learn at once.

        ``max_event_time_skew``: events dated later than ``clock()`` plus this are rejected
        (``FutureEventError``); None accepts any event time. ``pseudonymise``: replaces every
        event's customer id at the edge (see :func:`streamcrm.core.privacy.pseudonym`), so no id
        reaches state, scores or models. ``require_keys``: an input message whose key is not
        its event's customer id (or that id's pseudonym) is invalid
        (:func:`streamcrm.core.events.check_message_key`); the worker sets it, tests that hand in
        bare payloads leave it off."""
        self.admission = Admission(max_event_time_skew, clock, pseudonymise, require_keys)
        """Decoding, key checks and pseudonyms at the edge."""
        self.store = store
        """The store itself: it raises while Redis is away (for callers that need an answer
        now, such as the web views)."""
        self._retrying = RetryingStore(store)
        """The same store, each call retried while Redis is away (what the pipeline uses)."""
        self.config = config
        self.live = LiveModels(store, self._retrying, shared_models)
        """The models in use (see :class:`streamcrm.worker.learning.LiveModels`)."""
        self.time = EventTime(config.rules.allowed_lateness)
        """The newest event times applied, and the watermarks they give."""
        self.outcomes: Counter[str] = Counter()
        """Messages handled since start, by outcome: scored, duplicate, late, invalid."""
        self.dead_letters: Counter[str] = Counter()
        """Messages dead-lettered since start, by reason code (counted by the adapter)."""
        self.marks = OffsetMarks(store, self._retrying, self.outcomes)
        """This worker's knowledge of each input partition's offset mark."""
        self.holding_back: HoldingBack | None = None
        """The input topics whose partition still has messages to apply here (set by the
        worker, which sees the consumer); they hold the watermark back (:meth:`watermark_for`).
        None: no topic is behind (tests handing in bare messages)."""
        self._locks = KeyedLocks()
        self.privacy = PrivacyRequests(self._retrying, self.marks, self.live, self.outcomes)
        self.marketing = MarketingEvents(self._retrying, self.marks, config, self.outcomes)
        self.retention = RetentionPlan()  # what churn alerts carry; the worker refreshes it
        self.sweeper = QuietCustomerSweeper(
            self._retrying,
            self.live,
            self.time,
            config,
            self._locks.hold_all,
            self.outcomes,
            self.marks,
            annotate=lambda outputs: self.retention.annotate_outputs(outputs),
        )
        self._started = False
        self._starting = asyncio.Lock()

    # --- the parts, as the worker and the views see them -------------------------------------

    @property
    def models(self) -> ModelBundle:
        """The models scoring uses now."""
        return self.live.bundle

    @property
    def updates(self) -> QueuedUpdates | None:
        """What the shared learner should learn (None: the models learn at once)."""
        return self.live.updates

    @property
    def watermark(self) -> datetime | None:
        """Event time up to which this worker takes every event to be in: the newest event
        time it has applied, less the allowed lateness. It closes churn windows."""
        return self.time.watermark

    async def rewind_partition(self, partition: int, topics: Iterable[str]) -> dict[str, int]:
        """After Redis lost writes: take the store's event times, and give, for each of
        ``topics``, the next offset of ``partition`` whose effect the store does not have
        (what is to be applied again, so the partition's watermark waits for it)."""
        self.time.rewind(await self._retrying.newest_event_times())
        next_offsets = {}
        for topic in topics:
            stored = await self._retrying.applied_offset(self.marks.positioned(topic, partition, 0))
            next_offsets[topic] = 0 if stored is None else stored + 1
        return next_offsets

    def partition_watermark(self, partition: int, holding_back: Iterable[str]) -> datetime | None:
        """See :meth:`streamcrm.worker.watermarks.EventTime.for_partition`."""
        return self.time.for_partition(partition, holding_back)

    def watermark_for(
        self,
        partition: int,
        occurred_at: datetime,
        newest: datetime | None,
        held: Sequence[str] | None = None,
    ) -> datetime | None:
        """The event time up to which every event of ``partition``'s customers is in, on every
        input topic, once an event of ``occurred_at`` is in on top of ``newest``: the
        watermark, held back by the topics still behind (:attr:`holding_back`). It closes
        churn windows and settles attribution and alert outcomes; a topic that runs ahead of
        another (a worker catching up) cannot settle them early. ``held``: the topics
        holding ``partition`` back, if the caller knows them already."""
        if held is None:
            held = self.topics_holding_back(partition)
        return self.time.for_partition(partition, held, max(newest or occurred_at, occurred_at))

    def topics_holding_back(self, partition: int) -> Sequence[str]:
        """The input topics whose ``partition`` still has messages to apply here
        (:attr:`holding_back`; none without it)."""
        return () if self.holding_back is None else tuple(self.holding_back(partition))

    @property
    def topic_ids(self) -> dict[str, str | None]:
        """Kafka topic ids of the input topics, for the offset marks (see streamcrm.store)."""
        return self.marks.topic_ids

    @topic_ids.setter
    def topic_ids(self, ids: dict[str, str | None]) -> None:
        self.marks.topic_ids = ids

    async def load_models(self) -> None:
        """Resume from the newest checkpoint, if there is one, and from the newest event
        times the store kept per input partition, so a restarted worker sweeps to its
        watermark before any new message arrives (once per process)."""
        if self._started:
            return
        async with self._starting:
            if self._started:
                return
            await self.live.load()
            self.time.resume(await self._retrying.newest_event_times())
            self._started = True

    async def refresh_models(self) -> bool:
        """Load the newest checkpoint if its version differs from the one in use."""
        return await self.live.refresh()

    def drain_updates(self) -> list[ModelUpdate]:
        """What the shared learner should learn from the messages handled since last asked."""
        return self.live.drain_updates()

    async def checkpoint_models(self) -> bool:
        """Save the models if they changed since the last checkpoint; True if saved (with
        shared models only the learner checkpoints: this does nothing)."""
        return await self.live.checkpoint()

    async def sweep(
        self,
        partitions: Iterable[int],
        limit: int = 500,
        holding_back: HoldingBack | None = None,
    ) -> SweepReport:
        """See :meth:`streamcrm.worker.sweeps.QuietCustomerSweeper.sweep`."""
        await self.load_models()
        return await self.sweeper.sweep(partitions, limit, holding_back)

    def model_metrics(self, worker: str, now: datetime) -> ModelMetrics:
        """The metrics report as of now; starts a new segment-mix interval."""
        return self.live.report(worker, now, self.time.newest, self.outcomes, self.dead_letters)

    # --- events ---------------------------------------------------------------------------------

    async def handle(
        self,
        raw: bytes,
        topic: str | None = None,
        partition: int = 0,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> ScoredEvent:
        """Score one raw message; raises ``InvalidEventError`` for a message to dead-letter.

        The score and its alerts go to the partition's outbox in the same atomic step as the
        state (:mod:`streamcrm.worker.outbox`): they go out in the order the states were saved
        and survive a crash right after the save. ``partition`` files the customer in the due
        index; with ``topic`` and ``offset`` the save moves the partition's offset mark, and a
        message at or below it (redelivered) is a duplicate. A late event's count is saved
        before ``LateEventError`` reports it. Handled as a batch of one (:meth:`handle_batch`'s
        rules); a store behind raises ``StateBehindError``.
        """
        position = await self.marks.position(topic, partition, offset)
        event = self.admission.event(raw, topic, self.admission.not_after(), key)
        if isinstance(event, InvalidEventError):
            self.outcomes["invalid"] += 1
            raise event
        await self.load_models()
        async with self._locks.hold(event.customer_id):
            if position is not None:  # set back meanwhile by another topic's write?
                self.marks.raise_if_lost(position.topic, partition, position.offset)
            guard = self.marks.guard(partition)
            states = await self._retrying.load_many(
                [event.customer_id], {event.customer_id: partition}
            )
            stored = states[event.customer_id]
            plan = self._plan_event(event, position, partition, states, self.time.newest, guard)
            results = await self._retrying.save_batch([plan.write] if plan.write else [])
            outcome = self._settle(plan, results[0] if results else None)
        if outcome == SaveResult.STATE_BEHIND:
            raise await self.marks.state_behind(position)
        if isinstance(outcome, SaveResult):  # redelivered: its effects are in the store already
            assert plan.write is not None and plan.write.state is not None
            outcome = ScoredEvent(state=stored or plan.write.state, score=None, duplicate=True)
            self.outcomes["duplicate"] += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

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
        not_after = self.admission.not_after()
        events = [self.admission.event(m.value or b"", m.topic, not_after, m.key) for m in messages]
        await self.load_models()
        # Where each customer's state lives: the partition their events arrive on.
        customers = {
            event.customer_id: message.partition
            for message, event in zip(messages, events, strict=True)
            if isinstance(event, BaseEvent)
        }
        async with self._locks.hold_all(customers):
            if not all(self.marks.knows(m.topic, m.partition) for m in messages):
                return []  # set back meanwhile by another topic's write: one by one
            guards = {p: self.marks.guard(p) for p in {m.partition for m in messages}}
            states = await self._retrying.load_many(sorted(customers), customers)
            queued = self.live.queued()
            try:
                planned = self._plan(messages, events, states, guards)
                writes = [plan.write for plan in planned if plan.write is not None]
                results = await self._retrying.save_batch(writes)
            except BaseException:
                self.live.drop_from(queued)
                raise
            return self._settled(planned, results)

    def _plan(
        self,
        messages: Sequence[InputMessage],
        events: Sequence[Event | InvalidEventError],
        states: dict[str, CustomerState | None],
        guards: Mapping[int, tuple[tuple[str, int], ...]],
    ) -> list[_Planned]:
        """Score the batch in memory, in order, each customer's events on top of each other;
        every message but a duplicate gets its write (a save, or a bare mark move), holding
        its partition's marks from before the states were loaded (``guards``)."""
        planned: list[_Planned] = []
        newest = self.time.newest
        # No message is applied while the batch is planned: what holds a partition back
        # stays the same throughout, so it is asked once a partition.
        held = {
            partition: self.topics_holding_back(partition)
            for partition in {message.partition for message in messages}
        }
        for message, event in zip(messages, events, strict=True):
            # Each write carries the partition's mark from before the batch: the batch is
            # written in one atomic step, so a mark below it means writes lost before.
            position = self.marks.positioned(message.topic, message.partition, message.offset)
            if isinstance(event, InvalidEventError):
                plan = _Planned(event, PendingWrite(position), self.live.queued())
            else:
                plan = self._plan_event(
                    event,
                    position,
                    message.partition,
                    states,
                    newest,
                    guards[message.partition],
                    held[message.partition],
                )
                if isinstance(plan.outcome, ScoredEvent) and plan.outcome.score is not None:
                    newest = max(newest or event.occurred_at, event.occurred_at)
            planned.append(plan)
        return planned

    def _plan_event(
        self,
        event: Event,
        position: InputPosition | None,
        partition: int,
        states: dict[str, CustomerState | None],
        newest: datetime | None,
        guard: tuple[tuple[str, int], ...] = (),
        held: Sequence[str] | None = None,
    ) -> _Planned:
        """Score one event on its customer's state so far (``states``, updated in place),
        with the watermark the event itself may move; its write (None: a duplicate, or a
        failure with no mark to move). ``partition`` files the customer in the due index;
        a write carrying the state holds ``guard`` (the partition's marks before the load);
        ``held``: the topics holding the partition back, if known (:meth:`watermark_for`)."""
        queued = self.live.queued()
        try:
            scored = score_event(
                states[event.customer_id],
                event,
                self.live.bundle,
                self.config,
                self.watermark_for(partition, event.occurred_at, newest, held),
                learner=self.live.updates,
            )
        except Exception as error:  # noqa: BLE001 - dead-lettered with its mark moved
            self.live.drop_from(queued)
            return _Planned(error, None if position is None else PendingWrite(position), queued)
        if scored.duplicate:
            # At an offset past the mark this worker holds, the event was applied by a write
            # whose answer this worker never saw (a reply lost, its retry found the write
            # made), or the producer sent it twice: a bare mark write learns (or moves) the
            # mark, so that a failover dropping that write is found by the next one.
            unknown = position is not None and (
                position.previous is None or position.offset > position.previous
            )
            write = PendingWrite(position, guard=guard) if unknown else None
            return _Planned(scored, write, queued, event.occurred_at)
        states[event.customer_id] = scored.state
        scored = self.retention.annotate_scored(scored)
        outbox = PendingWrite.outputs_of(scored.outputs)
        if scored.late_by is not None:
            late = late_error(event, scored.late_by, self.config.rules.allowed_lateness)
            return _Planned(
                late,
                PendingWrite(position, scored.state, scored.score, outbox=outbox, guard=guard),
                queued,
            )
        write = PendingWrite(
            position,
            scored.state,
            scored.score,
            LedgerDue(partition, scored.due_at),
            outbox,
            event_time=event.occurred_at,
            campaign_increments=scored.campaigns.increments() + scored.retention.increments(),
            guard=guard,
        )
        return _Planned(scored, write, queued, event.occurred_at)

    def _settled(self, planned: list[_Planned], results: list[SaveResult]) -> list[BatchOutcome]:
        """The outcomes of the messages whose writes were made (or refused harmlessly), up to
        the first refusal that leaves the rest to be handled one by one."""
        outcomes: list[BatchOutcome] = []
        written = iter(results)
        for plan in planned:
            outcome = self._settle(plan, None if plan.write is None else next(written, None))
            if isinstance(outcome, SaveResult):
                return outcomes
            outcomes.append(outcome)
            if isinstance(outcome, ScoredEvent) and outcome.erased:
                # Every later message was scored on top of this one: the rest go one by one.
                return outcomes
        return outcomes

    def _settle(self, plan: _Planned, result: SaveResult | None) -> BatchOutcome | SaveResult:
        """Count a message as its write's ``result`` says (None: not written) and give its
        outcome, or the refusal that leaves it to be settled otherwise. A refused write was
        scored on nothing the store has, so nothing of it may be learned.

        - no write to make (a duplicate by event id), or the write applied: the outcome;
        - a duplicate's bare mark write, made or found made (``ALREADY_APPLIED``): the outcome;
        - the customer erased meanwhile: the mark moved, the event is done;
        - redelivered: ``ALREADY_APPLIED``; not written (the batch stopped before it) or a
          store behind: ``STATE_BEHIND``.
        """
        if plan.write is not None:
            if result is None or result == SaveResult.STATE_BEHIND:
                # Not written (the batch stopped before it), or the store lost writes.
                self.live.drop_from(plan.queued_updates)
                return SaveResult.STATE_BEHIND
            self.marks.after_write(plan.write.position, result)
            duplicate = isinstance(plan.outcome, ScoredEvent) and plan.outcome.duplicate
            if result != SaveResult.APPLIED and not (duplicate and plan.write.state is None):
                self.live.drop_from(plan.queued_updates)
                if result == SaveResult.CUSTOMER_ERASED:
                    assert plan.write.state is not None, "only a save finds a customer erased"
                    self.outcomes["erased customer"] += 1
                    return ScoredEvent(state=plan.write.state, score=None, erased=True)
                return result
        position = None if plan.write is None else plan.write.position
        source = None if position is None else (position.topic, position.partition)
        self._count(plan.outcome, plan.occurred_at, source)
        return plan.outcome

    def _count(
        self, outcome: BatchOutcome, occurred_at: datetime | None, source: tuple[str, int] | None
    ) -> None:
        """Count a message whose write was made (or that had none to make)."""
        if isinstance(outcome, LateEventError):
            self.outcomes["late"] += 1
        elif isinstance(outcome, InvalidEventError):
            self.outcomes["invalid"] += 1
        elif isinstance(outcome, ScoredEvent):
            if outcome.duplicate:
                self.outcomes["duplicate"] += 1
            elif outcome.score is not None:
                assert occurred_at is not None, "a scored message has an event time"
                self.outcomes["scored"] += 1
                self.live.segment_mix[outcome.score.segment_name] += 1
                self.time.note(occurred_at, source)

    # --- marketing ------------------------------------------------------------------------------

    async def handle_marketing(
        self,
        raw: bytes,
        topic: str | None = None,
        partition: int = 0,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> MarketingStep:
        """Record a marketing event (:class:`streamcrm.worker.marketing.MarketingEvents`);
        raises ``InvalidEventError`` for one to dead-letter. Nothing is scored."""
        position = await self.marks.position(topic, partition, offset)
        try:
            event = self.admission.marketing_event(raw, key)
        except InvalidEventError:
            self.outcomes["invalid"] += 1
            raise
        async with self._locks.hold(event.customer_id):
            watermark = self.watermark_for(partition, event.occurred_at, self.time.newest)
            step = await self.marketing.apply(event, position, watermark)
        if not step.duplicate:
            self.time.note(event.occurred_at, None if topic is None else (topic, partition))
        return step

    # --- privacy and dead letters -----------------------------------------------------------------

    async def handle_privacy(
        self,
        raw: bytes,
        topic: str | None = None,
        partition: int = 0,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> PrivacyOutcome:
        """Apply an erasure request or a consent record (see
        :class:`streamcrm.worker.privacy.PrivacyRequests`).

        Raises ``InvalidEventError`` for a message to dead-letter (with ``require_keys``, also
        one not keyed by its customer).
        """
        # The position first, as for events: a dead letter moves the partition's mark, so the
        # partition must be known (and its stored mark checked) even when nothing decodes.
        position = await self.marks.position(topic, partition, offset)
        try:
            event = self.admission.privacy_event(raw, key)
        except InvalidEventError:
            self.outcomes["invalid"] += 1
            raise
        async with self._locks.hold(event.customer_id):
            return await self.privacy.apply(event, position, partition)

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
        self.marks.raise_if_lost(topic, partition, offset)
        position = self.marks.positioned(topic, partition, offset)
        result = await self._retrying.mark_applied(position)
        self.marks.after_write(position, result)
        if result == SaveResult.STATE_BEHIND:
            raise await self.marks.state_behind(position)


def late_error(event: Event, late_by: timedelta, lateness: timedelta) -> LateEventError:
    """Why a late event is dead-lettered."""
    return LateEventError(
        f"event at {event.occurred_at.isoformat()} is {_hours(late_by)} older than "
        f"the newest {topic_kind(event)} event of customer {event.customer_id!r}; "
        f"allowed lateness is {_hours(lateness)}: counted as late, not applied"
    )


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f}h"
