"""Applying privacy requests: an erasure removes every stored copy of a customer and blocks
their later events; a consent record lifts the block (see :mod:`streamcrm.core.privacy`).

Decoding, key checks and the customer's lock are the pipeline's
(:meth:`streamcrm.worker.pipeline.ScoringPipeline.handle_privacy`); this applies a decoded
request, once per message (the offset mark), and says what it did.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from streamcrm.core.events import ConsentRecorded, ErasureRequested
from streamcrm.core.privacy import ErasureReport
from streamcrm.store import InputPosition, SaveResult
from streamcrm.store.retrying import RetryingStore
from streamcrm.worker.learning import LiveModels
from streamcrm.worker.offsets import OffsetMarks

logger = logging.getLogger(__name__)


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


class PrivacyRequests:
    """Applies erasure requests and consent records to the store and the models."""

    def __init__(
        self, store: RetryingStore, marks: OffsetMarks, models: LiveModels, outcomes: Counter[str]
    ) -> None:
        self.store = store
        self.marks = marks
        self.models = models
        self.outcomes = outcomes

    async def apply(
        self,
        event: ErasureRequested | ConsentRecorded,
        position: InputPosition | None,
        partition: int,
    ) -> PrivacyOutcome:
        """Apply one request from input ``partition`` (``position``: its message, None for
        one handed in bare). An erasure also makes the models forget the customer (or tells
        the shared learner to); the caller emits the score tombstone."""
        if isinstance(event, ErasureRequested):
            report = await self.store.erase(
                event.customer_id, partition, position, event.occurred_at
            )
            if report.store_behind:
                raise await self.marks.state_behind(position)
            self.marks.marked(position)  # moved, or found moved: held from now on
            # Even for a redelivered request: what followed the first (the learner's
            # forget, the tombstone) may have died with the worker. Both are idempotent.
            self.models.forget(event.customer_id)
            if report.already_applied:
                self.outcomes["duplicate"] += 1
                return PrivacyOutcome(event.customer_id, "erasure", report, duplicate=True)
            self.outcomes["erased"] += 1
            logger.info(
                "erased subject %s (state deleted: %s)", report.subject, report.state_deleted
            )
            return PrivacyOutcome(event.customer_id, "erasure", report)
        result = await self.store.record_consent(
            event.customer_id, position, event.occurred_at, partition
        )
        if result == SaveResult.STATE_BEHIND:
            raise await self.marks.state_behind(position)
        recorded = result == SaveResult.APPLIED
        self.marks.marked(position)  # moved, or found moved: held from now on
        self.outcomes["consent recorded" if recorded else "duplicate"] += 1
        return PrivacyOutcome(event.customer_id, "consent", None, duplicate=not recorded)
