"""Publishing an input partition's outbox: outputs written with the state, sent from there.

Every score (an event's, or a sweep's re-score) and the alerts it raised are written into the
input partition's outbox in the same atomic store step as the customer state and the offset
mark that record them (see :mod:`streamcrm.store`). The :class:`OutboxPublisher` then sends
them and clears them once the broker acknowledged every one, so a crash can neither lose them
nor, with the recovery check below, send them twice:

- killed **before** the acknowledgement: the outputs are still in the outbox, and the restarted
  worker (or the partition's next owner) sends them;
- killed **after** the acknowledgement but before the outbox was cleared: before sending, a
  drain makes sure end offsets of the output topic partitions it is about to write to are
  saved, from no later than now. The first drain of a partition in a process reads those
  topic partitions from the saved offsets and leaves out every output it finds there (same id,
  same bytes: :func:`streamcrm.store.output_fingerprint`; an output re-made after Redis lost
  its write differs, and is sent).

Saving end offsets costs a broker round trip, so a drain saves them afresh only when a
destination has none saved yet or :data:`RESAVE_AFTER` outputs went out since: older saved
offsets are still correct (the check reads from an earlier point, so it reads more, never
misses), and this bounds how much a recovery reads.

Outputs have deterministic ids (a re-score's ``event_id``, an alert's ``alert_id``), which is
what the recovery check matches on, and what a downstream consumer can de-duplicate on too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from streamcrm.store import OutboxRecord, StateStore

logger = logging.getLogger(__name__)

OUTBOX_BATCH = 500
"""Outputs sent per drain step at most (a drain repeats until the outbox is empty)."""
RESAVE_AFTER = 5_000
"""Outputs of one input partition sent before its saved output end offsets are renewed."""
RECENTLY_SENT = 10_000
"""Fingerprints of the outputs last sent, per input partition, that are not sent again: a
store call retried after its reply was lost (Redis restarting) can append a sweep's
re-score twice, since a re-score has no offset mark to refuse the second write."""

TopicPartition = tuple[str, int]


class OutputTopics(Protocol):
    """What the publisher needs of the broker: where a record goes, the end offsets of topic
    partitions, the outputs already on a topic partition, and an acknowledged send."""

    def topic_partition(self, record: OutboxRecord) -> TopicPartition:
        """The output topic and partition ``record`` is written to (by its key)."""
        ...

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset of each topic partition (a low answer is safe: it reads more)."""
        ...

    async def fingerprints_since(self, partition: TopicPartition, offset: int) -> set[str]:
        """The :func:`streamcrm.store.output_fingerprint` of each record on ``partition`` from
        ``offset`` to its end."""
        ...

    async def send_all(self, records: Sequence[OutboxRecord]) -> None:
        """Send the records in order and return once the broker acknowledged every one."""
        ...


def _field(partition: TopicPartition) -> str:
    return f"{partition[0]}|{partition[1]}"


def _parsed(field: str) -> TopicPartition:
    topic, _, number = field.rpartition("|")
    return topic, int(number)


class OutboxPublisher:
    """Sends the outboxes of the input partitions this worker owns, each exactly once."""

    def __init__(
        self,
        store: StateStore,
        output: OutputTopics,
        batch: int = OUTBOX_BATCH,
        resave_after: int = RESAVE_AFTER,
    ) -> None:
        self.store = store
        self.output = output
        self.batch = batch
        self.resave_after = resave_after
        self.sent = 0
        """Outputs sent since start."""
        self.recovered = 0
        """Outputs found already on their topic at a recovery check (not sent again)."""
        self._checked: set[int] = set()
        """Input partitions whose outbox was checked against the topics since this worker
        took them over."""
        self._saved: dict[int, tuple[set[TopicPartition], int]] = {}
        """Per input partition: the output topic partitions whose end offsets this worker
        saved for it, and how many outputs it sent since."""
        self._recent: dict[int, OrderedDict[str, None]] = {}
        """Per input partition: the fingerprints of the outputs sent last (see
        :data:`RECENTLY_SENT`)."""
        self._draining: dict[int, asyncio.Lock] = {}
        """One lock per input partition: two drains of one outbox never overlap (both would
        send the same records, and each would clear its count)."""

    def release(self, owned: Iterable[int]) -> None:
        """Forget the recovery check of partitions no longer owned: another worker may publish
        their outbox meanwhile, so taking one back means checking it again."""
        self._checked &= set(owned)
        for partition in set(self._saved) - set(owned):
            del self._saved[partition]

    def recheck(self) -> None:
        """Check every outbox against the topics again before its next send: Redis lost
        writes, so an outbox may have its already published outputs back (their clearing was
        lost with the rest)."""
        self._checked.clear()

    async def drain(self, partition: int) -> int:
        """Send everything waiting in ``partition``'s outbox; the number of outputs sent."""
        async with self._draining.setdefault(partition, asyncio.Lock()):
            try:
                return await self._drain(partition)
            except BaseException:
                # Sent but maybe not cleared (Redis went away between the two): the next
                # drain checks the topics again rather than send the same outputs twice.
                self._checked.discard(partition)
                raise

    async def _drain(self, partition: int) -> int:
        sent = 0
        while True:
            records = await self.store.outbox(partition, self.batch)
            if not records:
                self._checked.add(partition)
                return sent
            to_send = self._not_sent_lately(partition, records)
            if partition not in self._checked:
                to_send = await self._not_yet_published(partition, to_send)
                self._checked.add(partition)
            if to_send:
                await self._save_end_offsets(partition, to_send)
                await self.output.send_all(to_send)
                self._remember_sent(partition, to_send)
            await self.store.clear_outbox(partition, records)
            sent += len(to_send)
            self.sent += len(to_send)
            if len(records) < self.batch:
                # That was all of it: what is appended from now on is drained by its writer
                # (each drains after it writes), so no round trip just to find it empty.
                return sent

    def _not_sent_lately(
        self, partition: int, records: Sequence[OutboxRecord]
    ) -> list[OutboxRecord]:
        """``records`` but copies of an output this publisher sent lately (or that came
        earlier in ``records``): the same id and the same bytes."""
        recent = self._recent.get(partition, OrderedDict())
        seen: set[str] = set()
        fresh = []
        for record in records:
            fingerprint = record.fingerprint
            if fingerprint in recent or fingerprint in seen:
                logger.info("output %s sent already; not sent again", record.record_id)
                continue
            seen.add(fingerprint)
            fresh.append(record)
        return fresh

    def _remember_sent(self, partition: int, records: Sequence[OutboxRecord]) -> None:
        recent = self._recent.setdefault(partition, OrderedDict())
        for record in records:
            recent[record.fingerprint] = None
        while len(recent) > RECENTLY_SENT:
            recent.popitem(last=False)

    async def _save_end_offsets(self, partition: int, records: Sequence[OutboxRecord]) -> None:
        """Make sure the recovery check of ``partition`` would read every destination of
        ``records`` from no later than now."""
        destinations = {self.output.topic_partition(record) for record in records}
        saved, sent_since = self._saved.get(partition, (set(), 0))
        if destinations <= saved and sent_since < self.resave_after:
            self._saved[partition] = (saved, sent_since + len(records))
            return
        # Renewing: every destination saved before is renewed too (its offset moves on).
        wanted = destinations | saved
        ends = await self.output.end_offsets(wanted)
        await self.store.set_outbox_from(
            partition, {_field(tp): offset for tp, offset in ends.items()}
        )
        self._saved[partition] = (wanted, len(records))

    async def _not_yet_published(
        self, partition: int, records: Sequence[OutboxRecord]
    ) -> list[OutboxRecord]:
        """The records a previous publisher of this outbox did not get onto their topics."""
        since: Mapping[str, int] = await self.store.outbox_from(partition)
        if not since:
            return list(records)
        found: dict[TopicPartition, set[str]] = {}
        for field, offset in since.items():
            destination = _parsed(field)
            found[destination] = await self.output.fingerprints_since(destination, offset)
        missing = [
            record
            for record in records
            if record.fingerprint not in found.get(self.output.topic_partition(record), set())
        ]
        already = len(records) - len(missing)
        self.recovered += already
        logger.warning(
            "outbox of partition %d taken over with %d outputs: %d already on their topics"
            " (not sent again), %d to send",
            partition,
            len(records),
            already,
            len(missing),
        )
        return missing
