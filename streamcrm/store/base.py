"""The store's contract: the ``StateStore`` protocol, the records a save takes and gives back
(``PendingWrite``, ``InputPosition``, ``LedgerDue``, ``OutboxRecord``, ``SaveResult``), and the
Redis key names every implementation shares. See :mod:`streamcrm.store.redis` for the layout
and the guarantees."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from functools import cached_property
from typing import Protocol

from streamcrm.core.privacy import ErasureReport
from streamcrm.core.records import Alert, CustomerScore
from streamcrm.core.state import CustomerState

KEY_VERSION = "v2"
"""v2 put every key of an input partition under that partition's hash tag (v1 had none): see
docs/operations.md, "Redis Cluster", for how v1 data is rebuilt."""


def v1_offsets_key(namespace: str) -> str:
    """The offsets hash of the v1 layout (one Redis, no hash tags): its presence says a
    namespace still holds v1 data, which this version does not read (see ``KEY_VERSION``).

    >>> v1_offsets_key("streamcrm")
    'streamcrm:v1:offsets'
    """
    return f"{namespace}:v1:offsets"


def partition_tag(partition: int) -> str:
    """The hash tag of one input partition: Redis Cluster hashes only the text between the
    first braces, so every key carrying it lives in one slot and one Lua step may touch them.

    >>> partition_tag(3)
    '{p3}'
    """
    return f"{{p{partition}}}"


def _partition_prefix(namespace: str, partition: int) -> str:
    return f"{namespace}:{KEY_VERSION}:{partition_tag(partition)}"


def customer_key(namespace: str, partition: int, customer_id: str) -> str:
    """The Redis hash of one customer, under the tag of the input partition their events
    arrive on.

    >>> customer_key("streamcrm", 3, "c1")
    'streamcrm:v2:{p3}:customer:c1'
    """
    return f"{_partition_prefix(namespace, partition)}:customer:{customer_id}"


def due_key(namespace: str, partition: int) -> str:
    """The sorted set of customers whose label ledger falls due, for one input partition."""
    return f"{_partition_prefix(namespace, partition)}:due"


def outbox_key(namespace: str, partition: int) -> str:
    """The Redis list of one input partition's outputs not yet acknowledged by the broker."""
    return f"{_partition_prefix(namespace, partition)}:outbox"


def campaigns_key(namespace: str, partition: int) -> str:
    """The Redis hash of one input partition's partial campaign figures (field → count)."""
    return f"{_partition_prefix(namespace, partition)}:campaigns"


def outbox_from_key(namespace: str, partition: int) -> str:
    """The Redis hash of output end offsets saved before an outbox was published."""
    return f"{_partition_prefix(namespace, partition)}:outbox-from"


def offsets_key(namespace: str, partition: int) -> str:
    """The Redis hash of one input partition's applied-offset marks, one field per input
    topic (the topics are co-partitioned: partition 3 of each marks here).

    >>> offsets_key("streamcrm", 3)
    'streamcrm:v2:{p3}:offsets'
    """
    return f"{_partition_prefix(namespace, partition)}:offsets"


def erased_key(namespace: str, partition: int) -> str:
    """The Redis hash of the erased customers of one input partition: subject hash → erasure
    time (the block list; no customer ids). Per partition, so a save checks it in its step."""
    return f"{_partition_prefix(namespace, partition)}:erased"


def audit_key(namespace: str, partition: int) -> str:
    """The Redis stream of one input partition's privacy audit records."""
    return f"{_partition_prefix(namespace, partition)}:audit"


def model_key(namespace: str, name: str) -> str:
    """The Redis string holding a model checkpoint; its version is this key + ``:version``,
    in the same slot (the name is their hash tag), so both are set in one transaction.

    >>> model_key("streamcrm", "bundle")
    'streamcrm:v2:model:{bundle}'
    """
    return f"{namespace}:{KEY_VERSION}:model:{{{name}}}"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's and the default partitioners'), as an
    unsigned 32-bit value.

    >>> murmur2(b"c1")
    2069367011
    """
    length, seed, m, r = len(data), 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    if tail:
        rest = data[length - tail :]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: str, partitions: int) -> int:
    """The input partition of a message keyed by ``key`` under the producers' default
    partitioner (murmur2, positive part, modulo the partition count): where a customer's
    events, and so their state, are found from the id alone.

    >>> partition_of("c1", 4)
    3
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def output_fingerprint(record_id: str, value: bytes) -> str:
    """What identifies one published output: its id and a digest of its exact bytes. A
    re-made output (same id, made again after Redis lost its write) differs from the one
    sent before, so it is still sent; an unchanged one is recognised.

    >>> output_fingerprint("e1", b"{}")
    'e1#01e7b720ff566d53'
    """
    return f"{record_id}#{hashlib.blake2b(value, digest_size=8).hexdigest()}"


@dataclass(frozen=True)
class OutboxRecord:
    """One output waiting in an outbox: the output topic's kind (``scores`` or ``alerts``),
    the record's key and JSON value, and its deterministic id (a score's event id, an
    alert's id), by which a recovering publisher recognises it on the topic.

    >>> record = OutboxRecord("alerts", "c1", '{"alert_id": "x"}', "x")
    >>> OutboxRecord.from_json(record.to_json()) == record
    True
    """

    kind: str
    key: str
    value: str
    record_id: str

    @cached_property
    def fingerprint(self) -> str:
        """:func:`output_fingerprint` of the record as it is sent (computed once)."""
        return output_fingerprint(self.record_id, self.value.encode())

    @cached_property
    def stored_json(self) -> str:
        """The record as an outbox holds it: the JSON array [kind, key, value, id]. A record
        read from an outbox keeps the exact text it was read as, which is what clearing it
        compares (nothing is serialised again)."""
        return json.dumps([self.kind, self.key, self.value, self.record_id])

    def to_json(self) -> str:
        return self.stored_json

    @classmethod
    def from_json(cls, raw: str | bytes) -> OutboxRecord:
        text = raw if isinstance(raw, str) else raw.decode()
        kind, key, value, record_id = json.loads(text)
        record = cls(kind, key, value, record_id)
        record.__dict__["stored_json"] = text  # a cached_property's own slot: frozen allows it
        return record

    @classmethod
    def of_score(cls, score: CustomerScore) -> OutboxRecord:
        return cls("scores", score.customer_id, score.model_dump_json(), score.event_id)

    @classmethod
    def of_alert(cls, alert: Alert) -> OutboxRecord:
        return cls("alerts", alert.customer_id or "", alert.model_dump_json(), alert.alert_id)


@dataclass(frozen=True)
class LedgerDue:
    """Where a customer sits in the due index: their partition and next due time (or none)."""

    partition: int
    at: datetime | None


@dataclass(frozen=True)
class InputPosition:
    """Where an input message sits: its topic (and the topic's id), partition and offset."""

    topic: str
    topic_id: str | None
    partition: int
    offset: int
    previous: int | None = field(default=None, compare=False)
    """The mark this worker last wrote for the partition, if it wrote one: a stored mark
    below it means Redis lost writes (see ``SaveResult.STATE_BEHIND``)."""

    @property
    def mark_field(self) -> str:
        """The offsets-hash field of this message's topic partition.

        >>> InputPosition("crm.purchases", "8c1f", 3, 42).mark_field
        'crm.purchases|8c1f|3'
        """
        return f"{self.topic}|{self.topic_id or '-'}|{self.partition}"


@dataclass(frozen=True)
class PendingWrite:
    """One message's effect, for :meth:`StateStore.save_batch`: a customer's new state (with
    its score and due entry) and the message's offset mark, or the mark alone (``state``
    None: a message that changed no state, such as a dead letter)."""

    position: InputPosition | None
    state: CustomerState | None = None
    score: CustomerScore | None = None
    due: LedgerDue | None = None
    outbox: tuple[OutboxRecord, ...] = ()
    """Outputs (the new score, re-scores, their alerts) to append in the same step to the
    outbox of :attr:`partition`."""
    event_time: datetime | None = None
    """The applied event's time: kept per input partition with its mark (the newest), so a
    restarted worker knows its watermark before any new message arrives."""
    campaign_increments: tuple[tuple[str, int], ...] = ()
    """Increments of :attr:`partition`'s partial campaign figures (field, amount; see
    :meth:`streamcrm.core.marketing.Tally.increments`), made in the same step."""
    guard: tuple[tuple[str, int], ...] = ()
    """The offset marks of the customer's partition (mark field, offset) this worker had
    written when it loaded the state the write builds on. A stored mark below any of them
    means Redis lost writes since (a failover to a replica that lagged, a lost AOF tail):
    the loaded state may carry events the store no longer has, while their own effects
    beyond the state (campaign figures, outputs, due entries) are gone, so nothing is
    written (``SaveResult.STATE_BEHIND``), whichever topic the write comes from."""

    def marks_to_hold(self) -> dict[str, int]:
        """Every mark the store must hold for the write to be made: :attr:`guard` and the
        message's own partition's previous mark.

        >>> position = InputPosition("crm.purchases", None, 0, 8, previous=7)
        >>> PendingWrite(position, guard=(("crm.feedback|-|0", 3),)).marks_to_hold()
        {'crm.feedback|-|0': 3, 'crm.purchases|-|0': 7}
        """
        marks = dict(self.guard)
        position = self.position
        if position is not None and position.previous is not None:
            field = position.mark_field
            marks[field] = max(marks.get(field, position.previous), position.previous)
        return marks

    @property
    def partition(self) -> int:
        """The input partition whose due index and outbox the write goes to: the due entry's,
        else the message's (a late event files no due entry but may still have outputs)."""
        if self.due is not None:
            return self.due.partition
        return self.position.partition if self.position is not None else 0

    @classmethod
    def outputs_of(
        cls, outputs: Sequence[tuple[CustomerScore, Sequence[Alert]]]
    ) -> tuple[OutboxRecord, ...]:
        """Outbox records of scores and the alerts each raised, in publishing order."""
        return tuple(
            record
            for score, alerts in outputs
            for record in (
                OutboxRecord.of_score(score),
                *(OutboxRecord.of_alert(alert) for alert in alerts),
            )
        )


AUDIT_MAX_LENGTH = 1_000_000
"""Audit records kept (approximately) before the oldest are trimmed."""


class SaveResult(IntEnum):
    """What a save did. Falsy only when nothing was written because it already had been."""

    ALREADY_APPLIED = 0
    APPLIED = 1
    CUSTOMER_ERASED = 2
    """Nothing written: the customer was erased and has not consented again."""
    STATE_BEHIND = 3
    """Nothing written: one of the partition's stored marks is below the one this worker
    wrote last (:meth:`PendingWrite.marks_to_hold`), so Redis lost writes (restored from an
    older snapshot, AOF tail lost, a failover to a lagging replica): the consumer must
    rewind to the stored marks and apply those messages again."""


class StateStore(Protocol):
    """The small interface the pipeline needs from a state store.

    An implementation raises ``StoreUnavailableError`` when its service cannot be reached.
    """

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        """The customer's state. ``partition``: the input partition their events arrive on,
        where a partitioned store keeps it; None: found from the id alone (slower: see
        :class:`streamcrm.store.redis.RedisStateStore`)."""
        ...

    async def load_many(
        self, customer_ids: Sequence[str], partitions: Mapping[str, int] | None = None
    ) -> dict[str, CustomerState | None]:
        """The states of several customers, in one round trip (``partitions``: each one's
        input partition, as for :meth:`load`)."""
        ...

    async def save(
        self,
        state: CustomerState,
        score: CustomerScore | None,
        due: LedgerDue | None = None,
        position: InputPosition | None = None,
        outbox: Sequence[OutboxRecord] = (),
    ) -> SaveResult:
        """Write the state, the score unless None, the due index entry, the position's
        offset mark and ``outbox`` (appended to the outbox of ``due``'s partition), in one
        step. Writes nothing and says why when the mark shows that position's message was
        already applied, or the customer was erased."""
        ...

    async def outbox(self, partition: int, count: int) -> list[OutboxRecord]:
        """The oldest ``count`` outputs waiting in ``partition``'s outbox, oldest first."""
        ...

    async def newest_event_times(self) -> dict[str, datetime]:
        """Per offset-mark field, the newest event time applied from that input partition."""
        ...

    async def clear_outbox(self, partition: int, records: Sequence[OutboxRecord]) -> int:
        """Remove ``records`` (acknowledged) from the head of ``partition``'s outbox; the
        number removed.

        Cleared by identity, not by count: at a handover the partition's old and new owners
        may drain the same records at once, and whichever clears second must not remove the
        outputs appended since, which neither sent. Going through ``records`` in order, each
        that is the outbox's head is removed; one that is not was cleared already."""
        ...

    async def outbox_from(self, partition: int) -> dict[str, int]:
        """The output end offsets saved by :meth:`set_outbox_from` (``topic|partition``)."""
        ...

    async def campaign_fields(self, partition: int) -> dict[str, int]:
        """``partition``'s partial campaign figures, as the writes' increments summed."""
        ...

    async def forget_campaign_fields(self, partition: int, names: Sequence[str]) -> None:
        """Delete these fields of ``partition``'s campaign figures (those no report needs any
        more: :func:`streamcrm.core.marketing.closed_bucket_fields`)."""
        ...

    async def set_outbox_from(self, partition: int, offsets: Mapping[str, int]) -> None:
        """Save the output topics' end offsets before ``partition``'s outbox is published."""
        ...

    async def erase(
        self, customer_id: str, partition: int, position: InputPosition | None, at: datetime
    ) -> ErasureReport:
        """In one step: delete the customer's state, score, due entry and unpublished outputs
        (in ``partition``'s outbox), block their later events and append an audit record
        (subject hash only). Idempotent by ``position``."""
        ...

    async def record_consent(
        self,
        customer_id: str,
        position: InputPosition | None,
        at: datetime,
        partition: int | None = None,
    ) -> SaveResult:
        """Lift an erasure's block and audit it: ``APPLIED``; ``ALREADY_APPLIED`` when
        ``position`` was applied, ``STATE_BEHIND`` when the store lost writes of its topic
        partition (its previous mark), and then nothing is done.
        ``partition``: the input partition of the customer's events (None: ``position``'s,
        else found from the id as for :meth:`load`)."""
        ...

    async def audit_records(self, count: int = 100) -> list[dict[str, str]]:
        """The newest privacy audit records (action, subject hash, at), oldest first."""
        ...

    async def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        """Those of ``customer_ids`` erased (and not re-consented): one round trip."""
        ...

    async def applied_offset(self, position: InputPosition) -> int | None:
        """The offset mark of ``position``'s topic partition (None: nothing applied yet)."""
        ...

    async def mark_applied(self, position: InputPosition) -> SaveResult:
        """Move the mark for a message that changed no state (dead-lettered), with the same
        checks as :meth:`save`."""
        ...

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        """Make the writes in order, each as :meth:`save` (or :meth:`mark_applied`) would, in
        one round trip; stop after the first one that is not ``APPLIED``. Returns the results
        of the writes tried: the writes after the last result were not tried."""
        ...

    async def due_customers(self, partition: int, until: datetime, limit: int) -> list[str]:
        """Customers of ``partition`` whose ledger fell due by ``until`` (earliest first)."""
        ...

    async def forget_due(self, partition: int, customer_id: str) -> None:
        """Drop a customer from the due index (their state is gone)."""
        ...

    async def load_score(
        self, customer_id: str, partition: int | None = None
    ) -> CustomerScore | None: ...

    def iter_scores(self) -> AsyncIterator[CustomerScore]:
        """Every stored customer's latest score (a full scan: for reports, not the hot path)."""
        ...

    async def load_model(self, name: str) -> bytes | None: ...

    async def load_model_version(self, name: str) -> str | None:
        """The version of the stored checkpoint (cheap: for polling)."""
        ...

    async def save_model(
        self,
        name: str,
        blob: bytes,
        version: str,
        next_offsets: Mapping[str, int] | None = None,
    ) -> None:
        """Save a checkpoint: the blob, its version and, in the same atomic step, where its
        learner reads next (``next_offsets``: source partition field, as
        :attr:`InputPosition.mark_field`, → the offset of the first message not learned).
        None (a learner that keeps no positions) clears the stored ones: they would not
        describe this blob."""
        ...

    async def load_model_next_offsets(self, name: str) -> dict[str, int]:
        """Where the learner of the stored checkpoint reads next (empty: none stored)."""
        ...

    async def close(self) -> None: ...


def audit_record(action: str, subject: str, at: datetime, deleted: bool) -> dict[str, str]:
    return {
        "action": action,
        "subject": subject,
        "at": at.astimezone(UTC).isoformat(),
        "state_deleted": "1" if deleted else "0",
    }
