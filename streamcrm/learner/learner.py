"""The shared learner of ``streamcrm learner``, without Kafka: models, position, checkpoints.

:class:`PositionedLearner` learns the model-updates topic's messages in order and remembers
the offset after the last one it learned; :meth:`PositionedLearner.checkpoint` saves the
models and that offset in one atomic step, and :meth:`PositionedLearner.resume` reads them
back and says where to read next (see :mod:`streamcrm.learner.resume` for why the offset
lives in the checkpoint and not in Kafka). The Kafka side is
:mod:`streamcrm.learner.process`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from streamcrm.learner.resume import ResumePoint, position_field, resume_point
from streamcrm.models import ModelBundle
from streamcrm.services.kafka import Record
from streamcrm.store import StateStore
from streamcrm.worker.learning import MODEL_CHECKPOINT, learn_each, model_updates_in

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnedBatch:
    """What one call of :meth:`PositionedLearner.learn_records` did."""

    messages: int
    updates: int
    unreadable: int
    next_offset: int | None


class PositionedLearner:
    """The models of the group and the offset of the first message they have not learned.

    ``topic`` and ``topic_id``: the model-updates topic (one partition) and Kafka's id of
    it; the checkpoint keeps the position under both (:func:`position_field`).
    """

    def __init__(self, store: StateStore, topic: str, topic_id: str | None) -> None:
        self.store = store
        self.field = position_field(topic, topic_id)
        self.models = ModelBundle()
        self.next_offset: int | None = None
        """The offset after the last message learned (None: none learned, nothing resumed)."""
        self.checkpointed_offset: int | None = None
        """The offset the stored checkpoint reads next from (None: none saved by this one)."""

    async def resume(self, committed_by_workers: int | None = None) -> ResumePoint:
        """Load the stored checkpoint (if any) and say where reading resumes.

        ``committed_by_workers``: the scoring workers' committed offset on the topic, used
        only for a checkpoint an in-worker learner wrote (see
        :func:`streamcrm.learner.resume.resume_point`)."""
        blob = await self.store.load_model(MODEL_CHECKPOINT)
        next_offsets = await self.store.load_model_next_offsets(MODEL_CHECKPOINT)
        self.models = ModelBundle.from_bytes(blob) if blob is not None else ModelBundle()
        point = resume_point(blob is not None, next_offsets, self.field, committed_by_workers)
        if isinstance(point.start, int):
            self.next_offset = self.checkpointed_offset = point.start
        return point

    def started_at(self, offset: int) -> None:
        """Where a seek to the end of the log (:class:`ResumePoint` ``latest``) landed: the
        next checkpoint stores it even if nothing is learned, so a restart resumes there and
        not at whatever the end is by then."""
        if self.next_offset is None:
            self.next_offset = offset

    def learn_records(self, records: Sequence[Record]) -> LearnedBatch:
        """Learn the updates of ``records`` (consecutive messages of the topic, in order) and
        move the position past the last. An unreadable message is logged and skipped: it is
        never learned, now or after a restart. CPU-bound: run it in a thread."""
        updates = unreadable = 0
        for record in records:
            try:
                batch = model_updates_in(record.value or b"")
            except ValueError:
                logger.exception("unreadable model update at offset %d skipped", record.offset)
                unreadable += 1
            else:
                learn_each(self.models, batch)
                updates += len(batch)
            self.next_offset = record.offset + 1
        return LearnedBatch(len(records), updates, unreadable, self.next_offset)

    @property
    def unsaved(self) -> bool:
        """Whether the models have learned messages the stored checkpoint has not."""
        return self.next_offset is not None and self.next_offset != self.checkpointed_offset

    async def checkpoint(self) -> bool:
        """Save the models with the offset they read next, in one atomic step, if they
        learned anything since the last checkpoint; True if saved. Do not learn meanwhile:
        the blob and the offset must describe the same moment."""
        if not self.unsaved:
            return False
        next_offset = self.next_offset
        assert next_offset is not None
        blob = await asyncio.to_thread(self.models.to_bytes)
        await self.store.save_model(
            MODEL_CHECKPOINT, blob, self.models.version, {self.field: next_offset}
        )
        self.checkpointed_offset = next_offset
        return True
