"""Applying marketing events: campaign touches, retention offers, opens and clicks.

Decoding, key checks and the customer's lock are the pipeline's
(:meth:`streamcrm.worker.pipeline.ScoringPipeline.handle_marketing`); this applies a decoded
event to the customer's state (:func:`streamcrm.core.scoring.apply_marketing`) and adds what
it changed to the input partition's campaign figures, with the offset mark, in one store
step, so the figures are exact across crashes and redeliveries (docs/marketing.md).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from streamcrm.core.events import MarketingEvent
from streamcrm.core.scoring import MarketingStep, ScoringConfig, apply_marketing
from streamcrm.errors import LateEventError
from streamcrm.store import InputPosition, PendingWrite, SaveResult
from streamcrm.store.retrying import RetryingStore
from streamcrm.worker.offsets import OffsetMarks


class MarketingEvents:
    """Applies marketing events to the store."""

    def __init__(
        self,
        store: RetryingStore,
        marks: OffsetMarks,
        config: ScoringConfig,
        outcomes: Counter[str],
    ) -> None:
        self.store = store
        self.marks = marks
        self.config = config
        self.outcomes = outcomes

    async def apply(
        self,
        event: MarketingEvent,
        position: InputPosition | None,
        watermark: datetime | None = None,
    ) -> MarketingStep:
        """Apply one event (``position``: its message, None for one handed in bare;
        ``watermark``: the partition's, see :func:`streamcrm.core.scoring.apply_marketing`).

        Raises ``LateEventError`` (after saving the late count) for an event older than the
        customer's attribution horizon, ``StateBehindError`` when the store lost writes.
        """
        partition = position.partition if position is not None else None
        if position is not None:  # set back meanwhile by another topic's write?
            self.marks.raise_if_lost(position.topic, position.partition, position.offset)
        guard = () if partition is None else self.marks.guard(partition)
        state = await self.store.load(event.customer_id, partition)
        step = apply_marketing(state, event, self.config, watermark)
        if step.duplicate:
            self.outcomes["duplicate"] += 1
            return step
        write = PendingWrite(
            position,
            step.state,
            event_time=None if step.late_by is not None else event.occurred_at,
            campaign_increments=step.campaigns.increments(),
            guard=guard,
        )
        (saved,) = await self.store.save_batch([write])
        self.marks.after_write(position, saved)
        if saved == SaveResult.STATE_BEHIND:
            raise await self.marks.state_behind(position)
        if saved == SaveResult.ALREADY_APPLIED:
            self.outcomes["duplicate"] += 1
            return MarketingStep(state=state or step.state, duplicate=True)
        if saved == SaveResult.CUSTOMER_ERASED:
            self.outcomes["erased customer"] += 1
            return MarketingStep(state=step.state)
        if step.late_by is not None:
            self.outcomes["late"] += 1
            raise LateEventError(
                f"marketing event at {event.occurred_at.isoformat()} is "
                f"{_hours(step.late_by)} older than the customer's attribution horizon "
                "(their newest marketing event less the allowed lateness, or the event time "
                "up to which every event of their partition is in): "
                "counted as late, not applied"
            )
        self.outcomes["marketing"] += 1
        return step


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f}h"
