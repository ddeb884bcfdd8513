"""Sweeping quiet customers on to the watermark: label ledgers closed and re-scores as of the
passing event time, for customers who send no events (see docs/scores.md).

A customer is due in the due index of the input partition their events come from; only the
partitions a worker owns are swept, so no two workers touch one customer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime

from streamcrm.core.records import Alert, CustomerScore
from streamcrm.core.scoring import ScoringConfig, sweep_customer
from streamcrm.store import LedgerDue, PendingWrite, SaveResult
from streamcrm.store.retrying import RetryingStore
from streamcrm.worker.learning import LiveModels
from streamcrm.worker.offsets import OffsetMarks
from streamcrm.worker.watermarks import EventTime

Outputs = Sequence[tuple[CustomerScore, Sequence[Alert]]]
"""Scores to publish, each with the alerts it raised."""
HoldingBack = Callable[[int], Iterable[str]]
"""For an input partition number, the input topics whose partition of that number still has
messages for this worker to apply (fetched or not yet): they hold its watermark back."""


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did: customers visited, examples learned, heartbeat snapshots taken,
    re-scores made (of which the lapsed ones) and the alerts they raised; and the partitions
    whose sweep stopped because Redis lost writes of them (set back to the store's marks: the
    caller rewinds their event time)."""

    customers: int = 0
    examples_learned: int = 0
    heartbeats: int = 0
    rescores: int = 0
    lapsed: int = 0
    alerts: int = 0
    behind: tuple[int, ...] = ()

    def __add__(self, other: SweepReport) -> SweepReport:
        return SweepReport(
            self.customers + other.customers,
            self.examples_learned + other.examples_learned,
            self.heartbeats + other.heartbeats,
            self.rescores + other.rescores,
            self.lapsed + other.lapsed,
            self.alerts + other.alerts,
            self.behind + other.behind,
        )


class QuietCustomerSweeper:
    """Moves the due customers of owned partitions on to each partition's watermark."""

    def __init__(
        self,
        store: RetryingStore,
        models: LiveModels,
        time: EventTime,
        config: ScoringConfig,
        hold: Callable[[str], AbstractAsyncContextManager[None]],
        outcomes: Counter[str],
        marks: OffsetMarks,
        annotate: Callable[[Outputs], Outputs] | None = None,
    ) -> None:
        """``hold``: the customer's lock, shared with event scoring (one step per customer at
        a time); ``outcomes``: the worker's message counters, to count labels and re-scores;
        ``marks``: the partitions' offset marks, which a sweep's save holds (a state loaded
        before Redis lost writes is not written back); ``annotate``: what alerts carry beyond
        the core's (the retention plan's marks)."""
        self.store = store
        self.models = models
        self.time = time
        self.config = config
        self.hold = hold
        self.outcomes = outcomes
        self.marks = marks
        self.annotate: Callable[[Outputs], Outputs] = annotate or (lambda outputs: outputs)

    async def sweep(
        self,
        partitions: Iterable[int],
        limit: int = 500,
        holding_back: HoldingBack | None = None,
    ) -> SweepReport:
        """Move quiet customers on to the watermark: label ledgers, and re-scores as of the
        passing event time (their outputs written to the partition's outbox with the state).

        At most ``limit`` customers of each partition per call, so a long replay or a jump in
        event time cannot starve event scoring (the rest are still due at the next sweep).
        Each partition is swept to its own watermark (:meth:`EventTime.for_partition`).
        """
        report = SweepReport()
        if self.time.watermark is None:
            return report
        for partition in partitions:
            watermark = self.time.for_partition(
                partition, () if holding_back is None else holding_back(partition)
            )
            if watermark is None:
                continue
            for customer_id in await self.store.due_customers(partition, watermark, limit):
                async with self.hold(customer_id):
                    swept = await self._sweep_one(partition, customer_id, watermark)
                report = report + swept
                if swept.behind:  # nothing more of it is settled before the rewind
                    break
        return report

    async def _sweep_one(
        self, partition: int, customer_id: str, watermark: datetime
    ) -> SweepReport:
        guard = self.marks.guard(partition)
        state = await self.store.load(customer_id, partition)
        if state is None:  # expired (retention): nothing left to label
            await self.store.forget_due(partition, customer_id)
            return SweepReport(customers=1)
        queued = self.models.queued()
        swept = sweep_customer(
            state, watermark, self.models.bundle, self.config, self.models.updates
        )
        outputs = [(swept.score, swept.alerts)] if swept.score is not None else []
        write = PendingWrite(
            None,
            swept.state,
            swept.score,
            LedgerDue(partition, swept.due_at),
            PendingWrite.outputs_of(self.annotate(outputs)),
            campaign_increments=swept.retention.increments(),
            guard=guard,
        )
        (saved,) = await self.store.save_batch([write])
        if saved != SaveResult.APPLIED:  # nothing of it may be learned
            self.models.drop_from(queued)
            if saved == SaveResult.STATE_BEHIND:
                # Redis lost writes: the partition is applied again first; the customer
                # stays due and is swept at a later sweep.
                await self.marks.found_behind(partition)
                return SweepReport(customers=1, behind=(partition,))
            return SweepReport(customers=1)
        self.outcomes["labelled by sweep"] += swept.examples_learned
        rescored = swept.score is not None
        if rescored:
            self.outcomes["re-scored"] += 1
        return SweepReport(
            customers=1,
            examples_learned=swept.examples_learned,
            heartbeats=swept.heartbeats,
            rescores=int(rescored),
            lapsed=int(swept.score is not None and swept.score.lapsed),
            alerts=len(swept.alerts),
        )
