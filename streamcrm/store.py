"""Where customer state, latest scores and model checkpoints live: Redis, or an in-memory twin.

Redis layout (versioned prefix, one hash per customer, JSON for state):

====================================  =====================================================
key                                   value
====================================  =====================================================
``{ns}:v1:customer:{customer_id}``    hash: ``state`` (CustomerState JSON), ``score``
                                      (CustomerScore JSON), both deflated (see
                                      streamcrm.stored_json); ``as_of`` (ISO event time)
``{ns}:v1:due:{partition}``          sorted set: customer ids of one input partition, scored
                                      by when their label ledger next needs the watermark
``{ns}:v1:outbox:{partition}``       list: outputs of one input partition's sweeps (re-scores
                                      and their alerts), written with the state, removed once
                                      the broker acknowledged them (see :class:`OutboxRecord`)
``{ns}:v1:outbox-from:{partition}``  hash: output topic partition → its end offset when the
                                      outbox was last being published (for recovery)
``{ns}:v1:model:{name}``              string: pickled ModelBundle checkpoint
``{ns}:v1:model:{name}:version``      string: the checkpoint's model version
``{ns}:v1:offsets``                   hash: ``{topic}|{topic id}|{partition}`` → the offset
                                      of the newest input message whose state change is saved
``{ns}:v1:erased``                    hash: subject hash → erasure time, for every erased
                                      customer not yet re-consented (no customer ids)
``{ns}:v1:audit``                     stream: erasure / consent records (subject hashes only)
====================================  =====================================================

**Exactly-once effects.** A save writes the state (with its recent event ids), the score, the
due-index entry and the input message's offset mark in one Lua script, which first refuses the
write if the mark is already at or past that offset. So a message redelivered after a crash
changes nothing, even when its customer has had more events since than the state remembers
ids for, and a stale worker still processing a partition that moved on cannot overwrite the
new owner's work. The mark's field names the topic's id (Kafka's topic UUID), so after a
broker reset or a re-created topic, whose offsets restart at 0, the old marks are not applied
to the new log: new events are not skipped as "already applied".

**Outputs that survive a crash.** A sweep's re-score and the alerts it raised are written
into the partition's outbox in the same Lua step as the state that records them, and
published from there: a worker killed before the broker acknowledged them publishes them
after the restart (the state says the re-score was made, so it is not made again), and one
killed after the acknowledgement but before the outbox was cleared finds them on the output
topics (from the end offsets saved before publishing) and does not send them twice.

**Retention.** With a retention period set, every save also (re)sets the customer hash's TTL
in the same MULTI/EXEC: a customer with no event for that long disappears from Redis. Redis
TTLs run on the wall clock, so "inactive" means "no event *processed* for the period"; on the
live path that is event-time inactivity, while a replay of old history keeps its customers for
the period from the replay on. A customer who comes back after expiry starts again as new.
The churn window must be shorter than the retention period (the settings check it), so a
snapshot's churn label is settled before its customer can expire.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions

from streamcrm.errors import StoreUnavailableError
from streamcrm.events import Alert, CustomerScore
from streamcrm.privacy import ErasureReport, default_privacy_key, subject_hash
from streamcrm.state import CustomerState
from streamcrm.stored_json import pack, unpack

KEY_VERSION = "v1"


def customer_key(namespace: str, customer_id: str) -> str:
    """The Redis hash of one customer.

    >>> customer_key("streamcrm", "c1")
    'streamcrm:v1:customer:c1'
    """
    return f"{namespace}:{KEY_VERSION}:customer:{customer_id}"


def due_key(namespace: str, partition: int) -> str:
    """The sorted set of customers whose label ledger falls due, for one input partition."""
    return f"{namespace}:{KEY_VERSION}:due:{partition}"


def outbox_key(namespace: str, partition: int) -> str:
    """The Redis list of one input partition's outputs not yet acknowledged by the broker."""
    return f"{namespace}:{KEY_VERSION}:outbox:{partition}"


def outbox_from_key(namespace: str, partition: int) -> str:
    """The Redis hash of output end offsets saved before an outbox was published."""
    return f"{namespace}:{KEY_VERSION}:outbox-from:{partition}"


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

    @property
    def fingerprint(self) -> str:
        """:func:`output_fingerprint` of the record as it is sent."""
        return output_fingerprint(self.record_id, self.value.encode())

    def to_json(self) -> str:
        return json.dumps([self.kind, self.key, self.value, self.record_id])

    @classmethod
    def from_json(cls, raw: str | bytes) -> OutboxRecord:
        kind, key, value, record_id = json.loads(raw)
        return cls(kind, key, value, record_id)

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


def offsets_key(namespace: str) -> str:
    """The Redis hash of applied-offset marks, one field per input topic partition."""
    return f"{namespace}:{KEY_VERSION}:offsets"


def erased_key(namespace: str) -> str:
    """The Redis hash of erased customers' subject hashes (the block list)."""
    return f"{namespace}:{KEY_VERSION}:erased"


def audit_key(namespace: str) -> str:
    """The Redis stream of privacy audit records."""
    return f"{namespace}:{KEY_VERSION}:audit"


AUDIT_MAX_LENGTH = 1_000_000
"""Audit records kept (approximately) before the oldest are trimmed."""


class SaveResult(IntEnum):
    """What a save did. Falsy only when nothing was written because it already had been."""

    ALREADY_APPLIED = 0
    APPLIED = 1
    CUSTOMER_ERASED = 2
    """Nothing written: the customer was erased and has not consented again."""
    STATE_BEHIND = 3
    """Nothing written: the partition's stored mark is below the one this worker wrote last,
    so Redis lost writes (restored from an older snapshot, AOF tail lost): the consumer must
    rewind to the stored mark and apply those messages again."""


def model_key(namespace: str, name: str) -> str:
    """The Redis string holding a model checkpoint."""
    return f"{namespace}:{KEY_VERSION}:model:{name}"


class StateStore(Protocol):
    """The small interface the pipeline needs from a state store.

    An implementation raises ``StoreUnavailableError`` when its service cannot be reached.
    """

    async def load(self, customer_id: str) -> CustomerState | None: ...

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState | None]:
        """The states of several customers, in one round trip."""
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

    async def clear_outbox(self, partition: int, count: int) -> None:
        """Remove the oldest ``count`` outputs of ``partition``'s outbox (acknowledged)."""
        ...

    async def outbox_from(self, partition: int) -> dict[str, int]:
        """The output end offsets saved by :meth:`set_outbox_from` (``topic|partition``)."""
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
        self, customer_id: str, position: InputPosition | None, at: datetime
    ) -> bool:
        """Lift an erasure's block and audit it; False when ``position`` was applied."""
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

    async def load_score(self, customer_id: str) -> CustomerScore | None: ...

    def iter_scores(self) -> AsyncIterator[CustomerScore]:
        """Every stored customer's latest score (a full scan: for reports, not the hot path)."""
        ...

    async def load_model(self, name: str) -> bytes | None: ...

    async def load_model_version(self, name: str) -> str | None:
        """The version of the stored checkpoint (cheap: for polling)."""
        ...

    async def save_model(self, name: str, blob: bytes, version: str) -> None: ...

    async def close(self) -> None: ...


class InMemoryStateStore:
    """A dict-backed twin of :class:`RedisStateStore`, for unit tests and dry runs."""

    def __init__(
        self,
        retention: timedelta | None = None,
        clock: Callable[[], float] = time.monotonic,
        privacy_key: bytes | None = None,
    ) -> None:
        self._states: dict[str, str] = {}
        self._scores: dict[str, str] = {}
        self._expires_at: dict[str, float] = {}
        self._due: dict[int, dict[str, datetime]] = {}
        self._models: dict[str, tuple[bytes, str]] = {}
        self._offsets: dict[str, int] = {}
        self._erased: dict[str, str] = {}
        self._outbox: dict[int, list[OutboxRecord]] = {}
        self._outbox_from: dict[int, dict[str, int]] = {}
        self._newest: dict[str, datetime] = {}
        self.audit: list[dict[str, str]] = []
        self._retention = retention
        self._clock = clock
        self._privacy_key = privacy_key or default_privacy_key("memory")

    def _expire(self, customer_id: str) -> None:
        deadline = self._expires_at.get(customer_id)
        if deadline is not None and self._clock() >= deadline:
            for table in (self._states, self._scores, self._expires_at):
                table.pop(customer_id, None)

    async def load(self, customer_id: str) -> CustomerState | None:
        self._expire(customer_id)
        raw = self._states.get(customer_id)
        return CustomerState.model_validate_json(raw) if raw is not None else None

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState | None]:
        return {customer_id: await self.load(customer_id) for customer_id in customer_ids}

    async def applied_offset(self, position: InputPosition) -> int | None:
        return self._offsets.get(position.mark_field)

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        results: list[SaveResult] = []
        for write in writes:
            if write.state is None:
                assert write.position is not None, "a mark-only write needs a position"
                result = await self.mark_applied(write.position)
            else:
                result = await self._save(write)
            results.append(result)
            if result != SaveResult.APPLIED:
                break
            if write.position is not None and write.event_time is not None:
                field = write.position.mark_field
                known = self._newest.get(field)
                self._newest[field] = max(known or write.event_time, write.event_time)
        return results

    async def newest_event_times(self) -> dict[str, datetime]:
        return dict(self._newest)

    async def save(
        self,
        state: CustomerState,
        score: CustomerScore | None,
        due: LedgerDue | None = None,
        position: InputPosition | None = None,
        outbox: Sequence[OutboxRecord] = (),
    ) -> SaveResult:
        return await self._save(PendingWrite(position, state, score, due, tuple(outbox)))

    async def _save(self, write: PendingWrite) -> SaveResult:
        state, score, due, position = write.state, write.score, write.due, write.position
        assert state is not None, "a save writes a state"
        if self._behind(position):
            return SaveResult.STATE_BEHIND
        if not self._advance_mark(position):
            return SaveResult.ALREADY_APPLIED
        if subject_hash(self._privacy_key, state.customer_id) in self._erased:
            return SaveResult.CUSTOMER_ERASED
        self._expire(state.customer_id)
        self._states[state.customer_id] = state.model_dump_json()
        if score is not None:
            self._scores[state.customer_id] = score.model_dump_json()
        if self._retention is not None:
            self._expires_at[state.customer_id] = self._clock() + self._retention.total_seconds()
        if due is not None:
            index = self._due.setdefault(due.partition, {})
            if due.at is None:
                index.pop(state.customer_id, None)
            else:
                index[state.customer_id] = due.at
        if write.outbox:
            self._outbox.setdefault(write.partition, []).extend(write.outbox)
        return SaveResult.APPLIED

    async def outbox(self, partition: int, count: int) -> list[OutboxRecord]:
        return list(self._outbox.get(partition, [])[:count])

    async def clear_outbox(self, partition: int, count: int) -> None:
        del self._outbox.get(partition, [])[:count]

    async def outbox_from(self, partition: int) -> dict[str, int]:
        return dict(self._outbox_from.get(partition, {}))

    async def set_outbox_from(self, partition: int, offsets: Mapping[str, int]) -> None:
        self._outbox_from[partition] = dict(offsets)

    def _advance_mark(self, position: InputPosition | None) -> bool:
        if position is None:
            return True
        mark = self._offsets.get(position.mark_field)
        if mark is not None and mark >= position.offset:
            return False
        self._offsets[position.mark_field] = position.offset
        return True

    def _behind(self, position: InputPosition | None) -> bool:
        if position is None or position.previous is None:
            return False
        mark = self._offsets.get(position.mark_field)
        return mark is None or mark < position.previous

    async def mark_applied(self, position: InputPosition) -> SaveResult:
        if self._behind(position):
            return SaveResult.STATE_BEHIND
        return SaveResult.APPLIED if self._advance_mark(position) else SaveResult.ALREADY_APPLIED

    def lose_writes_since(self, marks: dict[str, int]) -> None:
        """Test hook: set the offset marks back, as a Redis that lost its last writes would."""
        self._offsets.update(marks)

    async def erase(
        self, customer_id: str, partition: int, position: InputPosition | None, at: datetime
    ) -> ErasureReport:
        subject = subject_hash(self._privacy_key, customer_id)
        if not self._advance_mark(position):
            return ErasureReport(subject, state_deleted=False, already_applied=True)
        existed = self._states.pop(customer_id, None) is not None
        self._scores.pop(customer_id, None)
        self._expires_at.pop(customer_id, None)
        for index in self._due.values():
            index.pop(customer_id, None)
        for records in self._outbox.values():
            records[:] = [record for record in records if record.key != customer_id]
        self._erased[subject] = at.isoformat()
        self.audit.append(_audit_record("erasure", subject, at, existed))
        return ErasureReport(subject, state_deleted=existed)

    async def record_consent(
        self, customer_id: str, position: InputPosition | None, at: datetime
    ) -> bool:
        if not self._advance_mark(position):
            return False
        subject = subject_hash(self._privacy_key, customer_id)
        self._erased.pop(subject, None)
        self.audit.append(_audit_record("consent", subject, at, False))
        return True

    async def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        return {c for c in customer_ids if subject_hash(self._privacy_key, c) in self._erased}

    async def audit_records(self, count: int = 100) -> list[dict[str, str]]:
        return [dict(record) for record in self.audit[-count:]]

    async def due_customers(self, partition: int, until: datetime, limit: int) -> list[str]:
        index = self._due.get(partition, {})
        due = sorted((at, cid) for cid, at in index.items() if at <= until)
        return [customer_id for _, customer_id in due[:limit]]

    async def forget_due(self, partition: int, customer_id: str) -> None:
        self._due.get(partition, {}).pop(customer_id, None)

    async def load_score(self, customer_id: str) -> CustomerScore | None:
        self._expire(customer_id)
        raw = self._scores.get(customer_id)
        return CustomerScore.model_validate_json(raw) if raw is not None else None

    async def iter_scores(self) -> AsyncIterator[CustomerScore]:
        for customer_id in list(self._scores):
            if (score := await self.load_score(customer_id)) is not None:
                yield score

    async def load_model(self, name: str) -> bytes | None:
        stored = self._models.get(name)
        return stored[0] if stored else None

    async def load_model_version(self, name: str) -> str | None:
        stored = self._models.get(name)
        return stored[1] if stored else None

    async def save_model(self, name: str, blob: bytes, version: str) -> None:
        self._models[name] = (blob, version)

    async def close(self) -> None:
        return None


WRITE_SCRIPT = """
-- KEYS: offsets hash, erased hash, then three per write: its customer hash, due index and
-- outbox list.  ARGV: retention ms ('' = none), then eleven per write: mark field ('' =
-- none), offset, previous mark ('' = unknown), state JSON ('' = move the mark only), score
-- JSON ('' = none), as_of, due op ('' / add / rem), customer id, due score, subject hash,
-- outbox records (a JSON array of strings; '' = none), event time (epoch s; '' = none),
-- kept as the newest of the mark's partition in field '{mark field}|newest'.
-- Applies the writes in order and stops after the first one not applied.  Returns one
-- result per write tried: 3 (nothing written) if the stored mark is below the previous one,
-- 0 (nothing written) if the offset was applied, 2 (nothing written but the mark) if the
-- customer is erased, else 1.
local results = {}
for w = 0, (#KEYS - 2) / 3 - 1 do
  local a = 1 + w * 12
  local customer, due, outbox = KEYS[3 + 3 * w], KEYS[4 + 3 * w], KEYS[5 + 3 * w]
  local result = 1
  if ARGV[a + 1] ~= '' then
    local mark = redis.call('HGET', KEYS[1], ARGV[a + 1])
    if ARGV[a + 3] ~= '' and (not mark or tonumber(mark) < tonumber(ARGV[a + 3])) then
      result = 3
    elseif mark and tonumber(mark) >= tonumber(ARGV[a + 2]) then
      result = 0
    else
      redis.call('HSET', KEYS[1], ARGV[a + 1], ARGV[a + 2])
      if ARGV[a + 12] ~= '' then
        local field = ARGV[a + 1] .. '|newest'
        local newest = redis.call('HGET', KEYS[1], field)
        if not newest or tonumber(newest) < tonumber(ARGV[a + 12]) then
          redis.call('HSET', KEYS[1], field, ARGV[a + 12])
        end
      end
    end
  end
  if result == 1 and ARGV[a + 4] ~= '' then
    if redis.call('HEXISTS', KEYS[2], ARGV[a + 10]) == 1 then
      result = 2
    else
      redis.call('HSET', customer, 'state', ARGV[a + 4])
      if ARGV[a + 5] ~= '' then
        redis.call('HSET', customer, 'score', ARGV[a + 5], 'as_of', ARGV[a + 6])
      end
      if ARGV[1] ~= '' then redis.call('PEXPIRE', customer, ARGV[1]) end
      if ARGV[a + 7] == 'add' then
        redis.call('ZADD', due, ARGV[a + 9], ARGV[a + 8])
      elseif ARGV[a + 7] == 'rem' then
        redis.call('ZREM', due, ARGV[a + 8])
      end
      if ARGV[a + 11] ~= '' then
        for _, record in ipairs(cjson.decode(ARGV[a + 11])) do
          redis.call('RPUSH', outbox, record)
        end
      end
    end
  end
  results[#results + 1] = result
  if result ~= 1 then break end
end
return results
"""
"""The atomic writes: for each, state, score, TTL, due index, outbox and offset mark, or
nothing at all; a batch stops at the first write refused, so no write builds on one that was
not made."""

ERASE_SCRIPT = """
-- KEYS: customer hash, offsets hash, due index, erased hash, audit stream, outbox.  ARGV:
-- mark field ('' = none), offset, customer id, subject hash, time, audit max length.
-- Returns -1 if the offset was applied, else 1 if state was deleted, 0 if there was none.
if ARGV[1] ~= '' then
  local mark = redis.call('HGET', KEYS[2], ARGV[1])
  if mark and tonumber(mark) >= tonumber(ARGV[2]) then return -1 end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
local deleted = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
for _, record in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do
  if cjson.decode(record)[2] == ARGV[3] then redis.call('LREM', KEYS[6], 0, record) end
end
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'action', 'erasure',
  'subject', ARGV[4], 'at', ARGV[5], 'state_deleted', tostring(deleted))
return deleted
"""
"""The atomic erasure: state, score, due entry and unpublished outputs gone; block and audit
record written."""

CONSENT_SCRIPT = """
-- KEYS: offsets hash, erased hash, audit stream.  ARGV: mark field, offset, subject hash,
-- time, audit max length.  Returns 0 if the offset was applied, else 1.
if ARGV[1] ~= '' then
  local mark = redis.call('HGET', KEYS[1], ARGV[1])
  if mark and tonumber(mark) >= tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'action', 'consent',
  'subject', ARGV[3], 'at', ARGV[4], 'state_deleted', '0')
return 1
"""


class RedisStateStore:
    """Customer state in Redis hashes, under a versioned key prefix."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str = "streamcrm",
        retention: timedelta | None = None,
        privacy_key: bytes | None = None,
    ) -> None:
        self._redis = client
        self._namespace = namespace
        self._retention_ms = int(retention.total_seconds() * 1000) if retention else None
        self._privacy_key = privacy_key or default_privacy_key(namespace)
        self._write_script = client.register_script(WRITE_SCRIPT)
        self._erase_script = client.register_script(ERASE_SCRIPT)
        self._consent_script = client.register_script(CONSENT_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str = "streamcrm",
        retention: timedelta | None = None,
        privacy_key: bytes | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> RedisStateStore:
        """A store on a new client for ``url``; ``client_options`` are redis-py keyword
        arguments such as :func:`streamcrm.connections.redis_client_options` (ACL user,
        password, TLS files)."""
        client = aioredis.Redis.from_url(url, **(client_options or {}))
        return cls(client, namespace, retention, privacy_key)

    def customer_key(self, customer_id: str) -> str:
        return customer_key(self._namespace, customer_id)

    def model_key(self, name: str) -> str:
        return model_key(self._namespace, name)

    async def load(self, customer_id: str) -> CustomerState | None:
        with _unavailable_as_store_error():
            raw = await self._redis.hget(self.customer_key(customer_id), "state")
        return CustomerState.model_validate_json(unpack(raw)) if raw is not None else None

    async def applied_offset(self, position: InputPosition) -> int | None:
        with _unavailable_as_store_error():
            raw = await self._redis.hget(offsets_key(self._namespace), position.mark_field)
        return int(raw) if raw is not None else None

    async def load_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState | None]:
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                for customer_id in customer_ids:
                    pipe.hget(self.customer_key(customer_id), "state")
                raws = await pipe.execute()
        return {
            customer_id: CustomerState.model_validate_json(unpack(raw)) if raw is not None else None
            for customer_id, raw in zip(customer_ids, raws, strict=True)
        }

    async def save(
        self,
        state: CustomerState,
        score: CustomerScore | None,
        due: LedgerDue | None = None,
        position: InputPosition | None = None,
        outbox: Sequence[OutboxRecord] = (),
    ) -> SaveResult:
        (result,) = await self.save_batch(
            [PendingWrite(position, state, score, due, tuple(outbox))]
        )
        return result

    async def newest_event_times(self) -> dict[str, datetime]:
        with _unavailable_as_store_error():
            raw = await self._redis.hgetall(offsets_key(self._namespace))
        return {
            _text(name).removesuffix("|newest"): datetime.fromtimestamp(float(value), UTC)
            for name, value in (raw or {}).items()
            if _text(name).endswith("|newest")
        }

    async def outbox(self, partition: int, count: int) -> list[OutboxRecord]:
        with _unavailable_as_store_error():
            raws = await self._redis.lrange(outbox_key(self._namespace, partition), 0, count - 1)
        return [OutboxRecord.from_json(raw) for raw in raws]

    async def clear_outbox(self, partition: int, count: int) -> None:
        with _unavailable_as_store_error():
            await self._redis.ltrim(outbox_key(self._namespace, partition), count, -1)

    async def outbox_from(self, partition: int) -> dict[str, int]:
        with _unavailable_as_store_error():
            raw = await self._redis.hgetall(outbox_from_key(self._namespace, partition))
        return {_text(name): int(value) for name, value in (raw or {}).items()}

    async def set_outbox_from(self, partition: int, offsets: Mapping[str, int]) -> None:
        key = outbox_from_key(self._namespace, partition)
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if offsets:
                    pipe.hset(key, mapping={name: str(offset) for name, offset in offsets.items()})
                await pipe.execute()

    async def mark_applied(self, position: InputPosition) -> SaveResult:
        (result,) = await self.save_batch([PendingWrite(position)])
        return result

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        if not writes:
            return []
        offsets = offsets_key(self._namespace)
        keys = [offsets, erased_key(self._namespace)]
        args: list[str | bytes | int | float] = [
            self._retention_ms if self._retention_ms is not None else ""
        ]
        for write in writes:
            keys.extend(self._write_keys(write, offsets))
            args.extend(self._write_args(write))
        with _unavailable_as_store_error():
            results = await self._write_script(keys=keys, args=args)
        return [SaveResult(int(result)) for result in results]

    def _write_keys(self, write: PendingWrite, offsets: str) -> tuple[str, str, str]:
        if write.state is None:  # a mark-only write touches no customer: any key will do
            return offsets, offsets, offsets
        partition = write.partition
        return (
            self.customer_key(write.state.customer_id),
            due_key(self._namespace, partition),
            outbox_key(self._namespace, partition),
        )

    def _write_args(self, write: PendingWrite) -> list[str | bytes | int | float]:
        position, state, score, due = write.position, write.state, write.score, write.due
        mark: list[str | bytes | int | float] = [
            position.mark_field if position is not None else "",
            position.offset if position is not None else 0,
            _previous(position),
        ]
        event_time = write.event_time.timestamp() if write.event_time is not None else ""
        if state is None:
            return [*mark, "", "", "", "", "", 0, "", "", event_time]
        return [
            *mark,
            pack(state.model_dump_json()),
            pack(score.model_dump_json()) if score is not None else "",
            score.as_of.isoformat() if score is not None else "",
            "" if due is None else "rem" if due.at is None else "add",
            state.customer_id,
            due.at.timestamp() if due is not None and due.at is not None else 0,
            subject_hash(self._privacy_key, state.customer_id),
            json.dumps([record.to_json() for record in write.outbox]) if write.outbox else "",
            event_time,
        ]

    async def erase(
        self, customer_id: str, partition: int, position: InputPosition | None, at: datetime
    ) -> ErasureReport:
        subject = subject_hash(self._privacy_key, customer_id)
        keys = [
            self.customer_key(customer_id),
            offsets_key(self._namespace),
            due_key(self._namespace, partition),
            erased_key(self._namespace),
            audit_key(self._namespace),
            outbox_key(self._namespace, partition),
        ]
        args: list[str | int] = [
            position.mark_field if position is not None else "",
            position.offset if position is not None else 0,
            customer_id,
            subject,
            at.astimezone(UTC).isoformat(),
            AUDIT_MAX_LENGTH,
        ]
        with _unavailable_as_store_error():
            deleted = int(await self._erase_script(keys=keys, args=args))
        if deleted < 0:
            return ErasureReport(subject, state_deleted=False, already_applied=True)
        return ErasureReport(subject, state_deleted=deleted == 1)

    async def record_consent(
        self, customer_id: str, position: InputPosition | None, at: datetime
    ) -> bool:
        keys = [
            offsets_key(self._namespace),
            erased_key(self._namespace),
            audit_key(self._namespace),
        ]
        args: list[str | int] = [
            position.mark_field if position is not None else "",
            position.offset if position is not None else 0,
            subject_hash(self._privacy_key, customer_id),
            at.astimezone(UTC).isoformat(),
            AUDIT_MAX_LENGTH,
        ]
        with _unavailable_as_store_error():
            return bool(await self._consent_script(keys=keys, args=args))

    async def audit_records(self, count: int = 100) -> list[dict[str, str]]:
        """The newest privacy audit records, oldest first."""
        with _unavailable_as_store_error():
            entries = await self._redis.xrevrange(audit_key(self._namespace), count=count)
        return [
            {_text(name): _text(value) for name, value in (fields or {}).items()}
            for _, fields in reversed(entries or [])
        ]

    async def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        if not customer_ids:
            return set()
        subjects = [subject_hash(self._privacy_key, c) for c in customer_ids]
        with _unavailable_as_store_error():
            marks = await self._redis.hmget(erased_key(self._namespace), subjects)
        return {c for c, mark in zip(customer_ids, marks, strict=True) if mark is not None}

    async def due_customers(self, partition: int, until: datetime, limit: int) -> list[str]:
        index = due_key(self._namespace, partition)
        with _unavailable_as_store_error():
            members = await self._redis.zrangebyscore(
                index, "-inf", until.timestamp(), start=0, num=limit
            )
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    async def forget_due(self, partition: int, customer_id: str) -> None:
        with _unavailable_as_store_error():
            await self._redis.zrem(due_key(self._namespace, partition), customer_id)

    async def load_score(self, customer_id: str) -> CustomerScore | None:
        with _unavailable_as_store_error():
            raw = await self._redis.hget(self.customer_key(customer_id), "score")
        return CustomerScore.model_validate_json(unpack(raw)) if raw is not None else None

    async def iter_scores(self, batch: int = 500) -> AsyncIterator[CustomerScore]:
        pattern = customer_key(self._namespace, "*")
        with _unavailable_as_store_error():
            keys: list[bytes] = []
            async for key in self._redis.scan_iter(match=pattern, count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    for score in await self._scores_of(keys):
                        yield score
                    keys = []
            for score in await self._scores_of(keys):
                yield score

    async def _scores_of(self, keys: list[bytes]) -> list[CustomerScore]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "score")
            raws = await pipe.execute()
        return [CustomerScore.model_validate_json(unpack(raw)) for raw in raws if raw is not None]

    async def load_model(self, name: str) -> bytes | None:
        with _unavailable_as_store_error():
            blob = await self._redis.get(self.model_key(name))
        return blob if blob is None or isinstance(blob, bytes) else blob.encode()

    async def load_model_version(self, name: str) -> str | None:
        with _unavailable_as_store_error():
            raw = await self._redis.get(f"{self.model_key(name)}:version")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def save_model(self, name: str, blob: bytes, version: str) -> None:
        key = self.model_key(name)
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, blob)
                pipe.set(f"{key}:version", version)
                await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _previous(position: InputPosition | None) -> int | str:
    return "" if position is None or position.previous is None else position.previous


def _audit_record(action: str, subject: str, at: datetime, deleted: bool) -> dict[str, str]:
    return {
        "action": action,
        "subject": subject,
        "at": at.astimezone(UTC).isoformat(),
        "state_deleted": "1" if deleted else "0",
    }


@contextmanager
def _unavailable_as_store_error() -> Iterator[None]:
    try:
        yield
    except redis.exceptions.AuthenticationError as error:
        # A ConnectionError too, but waiting will not cure it: say what to check.
        raise StoreUnavailableError(
            f"Redis refused the credentials ({error}): check STREAMCRM_REDIS_USERNAME and "
            "STREAMCRM_REDIS_PASSWORD (or the user and password in STREAMCRM_REDIS_URL)"
        ) from error
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise StoreUnavailableError(f"Redis unavailable: {error}") from error
