"""Sweeping quiet customers on to the watermark: label ledgers closed and re-scores as of the
passing event time, for customers who send no events (see docs/scores.md).

A customer is due in the due index of the input partition their events come from; only the
partitions a worker owns are swept, so no two workers touch one customer. A partition's due
customers are swept in batches: one round trip loads them, one atomic step saves them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from itertools import zip_longest

from streamcrm.core.records import Alert, CustomerScore
from streamcrm.core.scoring import ScoringConfig, SweptCustomer, sweep_customer
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
        hold_all: Callable[[Iterable[str]], AbstractAsyncContextManager[None]],
        outcomes: Counter[str],
        marks: OffsetMarks,
        annotate: Callable[[Outputs], Outputs] | None = None,
        batch_size: int = 500,
    ) -> None:
        """``hold_all``: the customers' locks, shared with event scoring (one step per
        customer at a time); ``outcomes``: the worker's message counters, to count labels and
        re-scores; ``marks``: the partitions' offset marks, which a sweep's save holds (a
        state loaded before Redis lost writes is not written back); ``annotate``: what alerts
        carry beyond the core's (the retention plan's marks); ``batch_size``: customers
        loaded and saved per round trip."""
        self.store = store
        self.models = models
        self.time = time
        self.config = config
        self.hold_all = hold_all
        self.batch_size = batch_size
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
            due = await self.store.due_customers(partition, watermark, limit)
            for start in range(0, len(due), self.batch_size):
                batch = due[start : start + self.batch_size]
                async with self.hold_all(batch):
                    swept = await self._sweep_batch(partition, batch, watermark)
                report = report + swept
                if swept.behind:  # nothing more of it is settled before the rewind
                    break
        return report

    async def _sweep_batch(
        self, partition: int, customer_ids: Sequence[str], watermark: datetime
    ) -> SweepReport:
        """Sweep ``customer_ids`` of ``partition`` on to ``watermark``: loaded in one round
        trip, saved in one atomic step that stops at the first write refused. The customers
        whose write was not made stay due, and nothing of theirs is learned."""
        guard = self.marks.guard(partition)
        states = await self.store.load_many(customer_ids, dict.fromkeys(customer_ids, partition))
        report = SweepReport()
        swept: list[tuple[int, SweptCustomer]] = []  # each with the updates queued before it
        for customer_id in customer_ids:
            state = states[customer_id]
            if state is None:  # expired (retention): nothing left to label
                await self.store.forget_due(partition, customer_id)
                report = report + SweepReport(customers=1)
                continue
            queued = self.models.queued()
            swept.append(
                (
                    queued,
                    sweep_customer(
                        state, watermark, self.models.bundle, self.config, self.models.updates
                    ),
                )
            )
        writes = [self._write(partition, customer, guard) for _, customer in swept]
        results = await self.store.save_batch(writes)
        for (queued, customer), saved in zip_longest(swept, results):
            if saved != SaveResult.APPLIED:  # nothing of it, or of any later one, is learned
                self.models.drop_from(queued)
                if saved == SaveResult.STATE_BEHIND:
                    # Redis lost writes: the partition is applied again first; the customers
                    # stay due and are swept at a later sweep.
                    await self.marks.found_behind(partition)
                    return report + SweepReport(customers=1, behind=(partition,))
                return report + SweepReport(customers=1)  # the rest stay due
            report = report + self._count(customer)
        return report

    def _write(
        self, partition: int, swept: SweptCustomer, guard: tuple[tuple[str, int], ...]
    ) -> PendingWrite:
        """A swept customer's write: state, re-score and its alerts into the outbox, due
        entry and retention tallies; holding the partition's marks from before the load."""
        outputs = [(swept.score, swept.alerts)] if swept.score is not None else []
        return PendingWrite(
            None,
            swept.state,
            swept.score,
            LedgerDue(partition, swept.due_at),
            PendingWrite.outputs_of(self.annotate(outputs)),
            campaign_increments=swept.retention.increments(),
            guard=guard,
        )

    def _count(self, swept: SweptCustomer) -> SweepReport:
        """Count a swept customer whose write was made."""
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
