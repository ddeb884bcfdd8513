"""What a worker knows of each input partition's offset mark.

The mark (see :mod:`streamcrm.store.redis`) is the offset of the newest message of a topic
partition whose effect is in Redis, moved in the same atomic step as that effect. A worker
remembers, per partition, the mark it last wrote (or the stored one it started from) and hands
it to every save as ``InputPosition.previous``: a stored mark below it means Redis lost writes
(``SaveResult.STATE_BEHIND``), and the partition must be re-read from the stored mark.
"""

from __future__ import annotations

from collections import Counter

from streamcrm.errors import StateBehindError
from streamcrm.store import InputPosition, SaveResult, StateStore
from streamcrm.store.retrying import RetryingStore


class OffsetMarks:
    """Per input partition (its mark field): the mark this worker last wrote or started from.

    ``store`` answers at once (for :meth:`check_partition`, which a timer calls and may skip);
    ``retrying`` waits out an unavailable Redis (for everything on the message path).
    ``outcomes`` counts the rewinds.
    """

    def __init__(self, store: StateStore, retrying: RetryingStore, outcomes: Counter[str]) -> None:
        self.store = store
        self.retrying = retrying
        self.outcomes = outcomes
        self.topic_ids: dict[str, str | None] = {}
        """Kafka topic ids of the input topics: part of each mark's field, so a re-created
        topic's offsets (restarting at 0) are not taken for applied ones."""
        self._last: dict[str, int | None] = {}
        """Per mark field: the mark this worker last wrote, or the stored one it started from.
        Checked on every save: Redis losing writes shows as a stored mark below it."""
        self._partitions: dict[str, tuple[str, int]] = {}
        """Topic and partition of each mark field seen."""

    def field(self, topic: str, partition: int) -> str:
        """The offsets-hash field of a topic partition."""
        return InputPosition(topic, self.topic_ids.get(topic), partition, 0).mark_field

    def knows(self, topic: str, partition: int) -> bool:
        """Whether this worker has read (or written) the partition's mark already."""
        return self.field(topic, partition) in self._last

    async def position(
        self, topic: str | None, partition: int, offset: int | None
    ) -> InputPosition | None:
        """Where a message sits, with the mark this worker last wrote for its partition.

        At a partition's first message in this process the stored mark is read: a message
        beyond ``mark + 1`` means Kafka's committed offset is ahead of Redis (Redis lost
        writes while no worker was running, or was replaced): rewind to the mark.
        """
        if topic is None or offset is None:
            return None
        field = self.field(topic, partition)
        if field not in self._last:
            position = InputPosition(topic, self.topic_ids.get(topic), partition, offset)
            self._partitions[field] = (topic, partition)
            stored = await self.retrying.applied_offset(position)
            self._last[field] = stored
            resume_at = 0 if stored is None else stored + 1
            if offset > resume_at:
                self.outcomes["rewinds"] += 1
                raise StateBehindError(
                    topic,
                    partition,
                    resume_at,
                    f"first message at offset {offset}, but the store has applied up to "
                    f"{'nothing' if stored is None else stored}",
                )
        return self.positioned(topic, partition, offset)

    def positioned(self, topic: str, partition: int, offset: int) -> InputPosition:
        """The message's position, carrying the mark this worker last wrote for it."""
        previous = self._last.get(self.field(topic, partition))
        return InputPosition(topic, self.topic_ids.get(topic), partition, offset, previous)

    def marked(self, position: InputPosition | None) -> None:
        """Remember that this worker moved the partition's mark to ``position``."""
        if position is not None:
            self._last[position.mark_field] = position.offset

    def after_write(self, position: InputPosition | None, result: SaveResult) -> None:
        """Remember the mark a save moved (an applied write, or an erased customer's)."""
        if result in (SaveResult.APPLIED, SaveResult.CUSTOMER_ERASED):
            self.marked(position)

    def partitions_applied(self) -> list[tuple[str, int]]:
        """The input partitions this worker has applied messages of."""
        return [
            self._partitions[field] for field, applied in self._last.items() if applied is not None
        ]

    async def check_partition(
        self, topic: str, partition: int
    ) -> tuple[StateBehindError, int] | None:
        """Whether the partition's stored mark fell below what this worker applied: Redis
        lost writes, and no later message of the partition came to show it (a quiet or fully
        consumed partition). Returns the error and the offset to re-apply up to, or None.

        Call it holding whatever keeps the partition's messages from being applied meanwhile
        (the app's partition lock): it resets the partition's mark to the stored one.
        Raises StoreUnavailableError.
        """
        applied = self._last.get(self.field(topic, partition))
        if applied is None:
            return None
        position = self.positioned(topic, partition, applied)
        stored = await self.store.applied_offset(position)
        if stored is not None and stored >= applied:
            return None
        return await self.state_behind(position), applied + 1

    async def state_behind(self, position: InputPosition | None) -> StateBehindError:
        """The error that sends the partition back to its stored mark (Redis lost writes),
        that mark now remembered as this worker's."""
        assert position is not None, "only a positioned write can find the store behind"
        stored = await self.retrying.applied_offset(position)
        self._last[position.mark_field] = stored
        self.outcomes["rewinds"] += 1
        return StateBehindError(
            position.topic,
            position.partition,
            0 if stored is None else stored + 1,
            f"the store's mark is {stored} but this worker had applied up to "
            f"{position.previous}: Redis lost writes",
        )
