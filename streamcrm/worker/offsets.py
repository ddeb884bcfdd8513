"""What a worker knows of each input partition's offset mark.

The mark (see :mod:`streamcrm.store.redis`) is the offset of the newest message of a topic
partition whose effect is in Redis, moved in the same atomic step as that effect. A worker
remembers, per partition, the mark it last wrote (or the stored one it started from) and hands
it to every save as ``InputPosition.previous``: a stored mark below it means Redis lost writes
(``SaveResult.STATE_BEHIND``), and the partition must be re-read from the stored mark.

A customer's state is written by every input topic of its partition, so a write also holds
the marks of the partition's other topics (``PendingWrite.guard``, taken before the state is
loaded): a state loaded before Redis lost writes may carry lost events of another topic, and
must not be written back over the store's older one. When a write finds the store behind, every
topic of the partition is set back to its stored mark at once; the topics other than the one
written are re-read before their next message (or by the mark check, for a quiet one).
"""

from __future__ import annotations

import logging
from collections import Counter

from streamcrm.errors import StateBehindError
from streamcrm.store import InputPosition, SaveResult, StateStore
from streamcrm.store.retrying import RetryingStore

logger = logging.getLogger(__name__)


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
        self._lost: dict[str, int] = {}
        """Per mark field set back to the store's by a write of another topic of its
        partition: the newest offset this worker had applied of it, to apply again before
        the topic's next message."""

    def field(self, topic: str, partition: int) -> str:
        """The offsets-hash field of a topic partition."""
        return InputPosition(topic, self.topic_ids.get(topic), partition, 0).mark_field

    def knows(self, topic: str, partition: int) -> bool:
        """Whether this worker has read (or written) the partition's mark already and has
        nothing of it to apply again: its messages may be batched."""
        field = self.field(topic, partition)
        return field in self._last and field not in self._lost

    def raise_if_lost(self, topic: str, partition: int, offset: int) -> None:
        """Raise ``StateBehindError`` when the topic partition was set back to the store's
        mark (:meth:`found_behind`) and the message at ``offset`` lies beyond it: the range
        between is to be applied again first (by the caller, which this forgets it to).

        Call it in the same step (no await between) as taking the write's marks
        (:meth:`positioned`, :meth:`guard`): a reset after that makes the write hold marks
        above the store's, so it is refused; one before it is seen here."""
        field = self.field(topic, partition)
        if field not in self._lost:
            return
        self._lost.pop(field)
        self._rewind_if_beyond(
            topic,
            partition,
            offset,
            self._last.get(field),
            "Redis lost writes of this partition (found by a write of another topic)",
        )

    def _rewind_if_beyond(
        self, topic: str, partition: int, offset: int, applied: int | None, why: str
    ) -> None:
        """Raise ``StateBehindError`` when ``offset`` lies beyond the message after the
        store's mark ``applied``: the messages between are to be applied first."""
        resume_at = 0 if applied is None else applied + 1
        if offset > resume_at:
            self.outcomes["rewinds"] += 1
            raise StateBehindError(
                topic,
                partition,
                resume_at,
                f"{why}: the store has applied up to {'nothing' if applied is None else applied}",
            )

    def guard(self, partition: int) -> tuple[tuple[str, int], ...]:
        """The marks this worker wrote last (or started from) of every input topic of
        ``partition``: a write holds them (``PendingWrite.guard``). Take it before loading
        the state the write builds on."""
        return tuple(
            (field, applied)
            for field, applied in self._last.items()
            if applied is not None and self._partitions.get(field, ("", -1))[1] == partition
        )

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
        self.raise_if_lost(topic, partition, offset)
        if field not in self._last:
            position = InputPosition(topic, self.topic_ids.get(topic), partition, offset)
            self._partitions[field] = (topic, partition)
            stored = await self.retrying.applied_offset(position)
            self._last[field] = stored
            self._rewind_if_beyond(
                topic, partition, offset, stored, f"first message at offset {offset}"
            )
        return self.positioned(topic, partition, offset)

    def positioned(self, topic: str, partition: int, offset: int) -> InputPosition:
        """The message's position, carrying the mark this worker last wrote for it."""
        previous = self._last.get(self.field(topic, partition))
        return InputPosition(topic, self.topic_ids.get(topic), partition, offset, previous)

    def marked(self, position: InputPosition | None) -> None:
        """Remember that the partition's mark is at ``position`` (moved there by this worker,
        or found there or past it): never below what this worker held already."""
        if position is not None:
            field = position.mark_field
            held = self._last.get(field)
            self._last[field] = position.offset if held is None else max(held, position.offset)
            self._partitions[field] = (position.topic, position.partition)

    def after_write(self, position: InputPosition | None, result: SaveResult) -> None:
        """Remember the mark a save moved (an applied write, or an erased customer's) or
        found at or past its offset (``ALREADY_APPLIED``).

        The last matters after a lost reply: a write made whose answer never came (the
        connection broke, or the client's read timed out while the event loop was busy) is
        sent again, and the retry answers ``ALREADY_APPLIED``. The store holds the write
        then, and a failover that drops it must be found: later writes hold its mark."""
        if result in (SaveResult.APPLIED, SaveResult.CUSTOMER_ERASED, SaveResult.ALREADY_APPLIED):
            self.marked(position)

    def partitions_applied(self) -> list[tuple[str, int]]:
        """The input partitions this worker has applied messages of (or has to apply again)."""
        return [
            self._partitions[field]
            for field, applied in self._last.items()
            if applied is not None or field in self._lost
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
        field = self.field(topic, partition)
        if field in self._lost:
            upto = self._lost.pop(field)
            applied = self._last.get(field)
            self.outcomes["rewinds"] += 1
            behind = StateBehindError(
                topic,
                partition,
                0 if applied is None else applied + 1,
                "Redis lost writes of this partition (found by a write of another topic)",
            )
            return behind, upto + 1
        applied = self._last.get(field)
        if applied is None:
            return None
        position = self.positioned(topic, partition, applied)
        stored = await self.store.applied_offset(position)
        if stored is not None and stored >= applied:
            return None
        return await self.state_behind(position), applied + 1

    async def state_behind(self, position: InputPosition | None) -> StateBehindError:
        """The error that sends ``position``'s topic partition back to its stored mark
        (Redis lost writes), after :meth:`found_behind` set every topic of the partition back
        to the store's mark."""
        assert position is not None, "only a positioned write can find the store behind"
        field = position.mark_field
        applied = self._last.get(field)
        await self.found_behind(position.partition)
        self._lost.pop(field, None)  # re-applied by the caller, up to this message
        stored = self._last.get(field)
        self.outcomes["rewinds"] += 1
        return StateBehindError(
            position.topic,
            position.partition,
            0 if stored is None else stored + 1,
            f"the store's mark is {stored} but this worker had applied up to "
            f"{applied}: Redis lost writes",
        )

    async def found_behind(self, partition: int) -> None:
        """A write of ``partition`` was refused as behind (``SaveResult.STATE_BEHIND``): set
        every input topic of it back to the store's mark, and remember those that lost
        writes, to apply again (:meth:`position`, :meth:`check_partition`)."""
        fields = [field for field, (_, number) in self._partitions.items() if number == partition]
        stored = {
            field: await self.retrying.applied_offset(self.positioned(*self._partitions[field], 0))
            for field in fields
        }
        for field, mark in stored.items():  # no await from here: one consistent reset
            applied = self._last.get(field)
            if applied is not None and (mark is None or mark < applied):
                self._lost[field] = max(self._lost.get(field, applied), applied)
                self._last[field] = mark
                topic, _ = self._partitions[field]
                logger.warning(
                    "%s[%d]: Redis lost writes (its mark is %s, this worker had applied up to"
                    " %d): set back, to be applied again",
                    topic,
                    partition,
                    mark,
                    applied,
                )
