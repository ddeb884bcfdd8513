"""Where customer state, latest scores and model checkpoints live: Redis, or an in-memory twin.

Redis layout (versioned prefix, one hash per customer, JSON for state). Every key of one input
partition carries that partition's hash tag ``{pN}``, so each Lua step below touches one
Redis Cluster slot; the same layout serves a single Redis. A customer's keys are under the
partition their events arrive on (the message key's murmur2 modulo ``partitions``: the
producers' key, which is the raw id even when the worker stores a pseudonym).

=========================================  ================================================
key                                        value
=========================================  ================================================
``{ns}:v2:{pN}:customer:{customer_id}``    hash: ``state`` (CustomerState JSON), ``score``
                                           (CustomerScore JSON), both compressed (see
                                           streamcrm.store.codec); ``as_of`` (ISO event time)
``{ns}:v2:{pN}:offsets``                   hash: ``{topic}|{topic id}|{N}`` → the offset of
                                           the newest input message of partition N whose
                                           change is saved (``…|newest``: its event time)
``{ns}:v2:{pN}:due``                       sorted set: customer ids of partition N, scored
                                           by when their label ledger next needs the
                                           watermark
``{ns}:v2:{pN}:outbox``                    list: outputs of partition N not yet
                                           acknowledged by the broker (see OutboxRecord)
``{ns}:v2:{pN}:outbox-from``               hash: output topic partition → its end offset
                                           when the outbox was last being published
``{ns}:v2:{pN}:campaigns``                 hash: ``{campaign}|{arm}|{segment}|{figure}`` →
                                           the sum of partition N's increments
``{ns}:v2:{pN}:erased``                    hash: subject hash → erasure time, for every
                                           erased customer of partition N not yet
                                           re-consented (no customer ids)
``{ns}:v2:{pN}:audit``                     stream: partition N's erasure / consent records
                                           (subject hashes only)
``{ns}:v2:model:{name}``                   string: pickled ModelBundle checkpoint
``{ns}:v2:model:{name}:version``           string: the checkpoint's model version
``{ns}:v2:model:{name}:next-offsets``      hash: ``{topic}|{topic id}|{N}`` → the offset
                                           of the first model-updates message the
                                           checkpoint has not learned (written by
                                           ``streamcrm learner`` with the blob, in one
                                           MULTI/EXEC)
=========================================  ================================================

A reader with the customer id alone (``streamcrm score``, ``GET /customers/{id}``) looks
under the id's own partition first, then under every partition (one round trip): with
pseudonymised ids the state is filed under the partition of the producers' raw id, which
the pseudonym does not tell. The partition count is the input topics' (``partitions``);
changing it files customers elsewhere, which is a rebuild (docs/operations.md).

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

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from streamcrm.core.privacy import ErasureReport, default_privacy_key, subject_hash
from streamcrm.core.records import CustomerScore
from streamcrm.core.state import CustomerState
from streamcrm.errors import StoreUnavailableError
from streamcrm.store.base import (
    AUDIT_MAX_LENGTH,
    KEY_VERSION,
    InputPosition,
    LedgerDue,
    OutboxRecord,
    PendingWrite,
    SaveResult,
    audit_key,
    campaigns_key,
    customer_key,
    due_key,
    erased_key,
    model_key,
    offsets_key,
    outbox_from_key,
    outbox_key,
    partition_of,
)
from streamcrm.store.codec import pack, unpack

DEFAULT_PARTITIONS = 4
"""The partition count a store assumes when none is given: ``Settings.partitions``' default."""

WRITE_SCRIPT = """
-- KEYS: six per write, all under its input partition's hash tag: offsets hash, erased hash,
-- customer hash, due index, outbox list and campaign figures hash.  ARGV: retention ms
-- ('' = none), then thirteen per write: mark field ('' = none), offset, marks to hold
-- (a JSON array [mark field, offset, ...] of the partition's marks the writer wrote last;
-- '' = none), state JSON ('' = move the mark only), score JSON ('' = none), as_of, due
-- op ('' / add / rem), customer id, due score, subject hash, outbox records (a JSON array of
-- strings; '' = none), event time (epoch s; '' = none), kept as the newest of the mark's
-- partition in field '{mark field}|newest', campaign increments (a JSON array
-- [field, amount, ...]; '' = none).
-- Applies the writes in order and stops after the first one not applied.  Returns one
-- result per write tried: 3 (nothing written) if a stored mark is below one to hold,
-- 0 (nothing written) if the offset was applied, 2 (nothing written but the mark) if the
-- customer is erased, else 1.
local results = {}
for w = 0, #KEYS / 6 - 1 do
  local a = 1 + w * 13
  local offsets, erased = KEYS[1 + 6 * w], KEYS[2 + 6 * w]
  local customer, due, outbox = KEYS[3 + 6 * w], KEYS[4 + 6 * w], KEYS[5 + 6 * w]
  local campaigns = KEYS[6 + 6 * w]
  local result = 1
  if ARGV[a + 3] ~= '' then
    local hold = cjson.decode(ARGV[a + 3])
    for i = 1, #hold, 2 do
      local held = redis.call('HGET', offsets, hold[i])
      if not held or tonumber(held) < tonumber(hold[i + 1]) then
        result = 3
        break
      end
    end
  end
  if result == 1 and ARGV[a + 1] ~= '' then
    local mark = redis.call('HGET', offsets, ARGV[a + 1])
    if mark and tonumber(mark) >= tonumber(ARGV[a + 2]) then
      result = 0
    else
      redis.call('HSET', offsets, ARGV[a + 1], ARGV[a + 2])
      if ARGV[a + 12] ~= '' then
        local field = ARGV[a + 1] .. '|newest'
        local newest = redis.call('HGET', offsets, field)
        if not newest or tonumber(newest) < tonumber(ARGV[a + 12]) then
          redis.call('HSET', offsets, field, ARGV[a + 12])
        end
      end
    end
  end
  if result == 1 and ARGV[a + 4] ~= '' then
    if redis.call('HEXISTS', erased, ARGV[a + 10]) == 1 then
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
      if ARGV[a + 13] ~= '' then
        local increments = cjson.decode(ARGV[a + 13])
        for i = 1, #increments, 2 do
          redis.call('HINCRBY', campaigns, increments[i], increments[i + 1])
        end
      end
    end
  end
  results[#results + 1] = result
  if result ~= 1 then break end
end
return results
"""
"""The atomic writes: for each, state, score, TTL, due index, outbox, campaign figures and
offset mark, or nothing at all; a batch stops at the first write refused, so no write builds
on one that was not made."""

ERASE_SCRIPT = """
-- KEYS (one partition's): customer hash, offsets hash, due index, erased hash, audit
-- stream, outbox.  ARGV:
-- mark field ('' = none), offset, customer id, subject hash, time, audit max length, marks
-- to hold (as for WRITE_SCRIPT).  Returns -2 (nothing done) if a stored mark is below one to
-- hold, -1 if the offset was applied, else 1 if state was deleted, 0 if there was none.
if ARGV[7] ~= '' then
  local hold = cjson.decode(ARGV[7])
  for i = 1, #hold, 2 do
    local held = redis.call('HGET', KEYS[2], hold[i])
    if not held or tonumber(held) < tonumber(hold[i + 1]) then return -2 end
  end
end
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

CLEAR_OUTBOX_SCRIPT = """
-- KEYS: outbox.  ARGV: the records acknowledged, oldest first.  Returns how many were removed.
local removed = 0
for _, record in ipairs(ARGV) do
  if redis.call('LINDEX', KEYS[1], 0) == record then
    redis.call('LPOP', KEYS[1])
    removed = removed + 1
  end
end
return removed
"""
"""Clearing acknowledged outputs by identity: each record still at the outbox's head goes (one
that is not was cleared by another drain already), so outputs appended since stay."""

CONSENT_SCRIPT = """
-- KEYS (one partition's): offsets hash, erased hash, audit stream.  ARGV: mark field,
-- offset, subject hash, time, audit max length, marks to hold (as for WRITE_SCRIPT).
-- Returns 3 (nothing done) if a stored mark is below one to hold, 0 if the offset was
-- applied, else 1.
if ARGV[6] ~= '' then
  local hold = cjson.decode(ARGV[6])
  for i = 1, #hold, 2 do
    local held = redis.call('HGET', KEYS[1], hold[i])
    if not held or tonumber(held) < tonumber(hold[i + 1]) then return 3 end
  end
end
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
    """Customer state in Redis hashes, under a versioned key prefix and one hash tag per input
    partition (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        namespace: str = "streamcrm",
        retention: timedelta | None = None,
        privacy_key: bytes | None = None,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:
        self._redis = client
        self._namespace = namespace
        self._retention_ms = int(retention.total_seconds() * 1000) if retention else None
        self._privacy_key = privacy_key or default_privacy_key(namespace)
        self.partitions = partitions
        """The input topics' partition count: how a customer's partition is found from an
        id, and which partitions a reader of every partition reads."""
        self._write_script = client.register_script(WRITE_SCRIPT)
        self._erase_script = client.register_script(ERASE_SCRIPT)
        self._consent_script = client.register_script(CONSENT_SCRIPT)
        self._clear_outbox_script = client.register_script(CLEAR_OUTBOX_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str = "streamcrm",
        retention: timedelta | None = None,
        privacy_key: bytes | None = None,
        client_options: Mapping[str, Any] | None = None,
        partitions: int = DEFAULT_PARTITIONS,
    ) -> RedisStateStore:
        """A store on a new client for ``url``; ``client_options`` are redis-py keyword
        arguments such as :func:`streamcrm.services.connections.redis_client_options` (ACL user,
        password, TLS files)."""
        client = aioredis.Redis.from_url(url, **(client_options or {}))
        return cls(client, namespace, retention, privacy_key, partitions)

    def partition_of(self, customer_id: str) -> int:
        """The partition a producer keying by ``customer_id`` sends to (see
        :func:`streamcrm.store.base.partition_of`)."""
        return partition_of(customer_id, self.partitions)

    def customer_key(self, customer_id: str, partition: int | None = None) -> str:
        """The customer's hash under ``partition`` (None: the id's own partition)."""
        where = self.partition_of(customer_id) if partition is None else partition
        return customer_key(self._namespace, where, customer_id)

    def model_key(self, name: str) -> str:
        return model_key(self._namespace, name)

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        states = await self.load_many(
            [customer_id], None if partition is None else {customer_id: partition}
        )
        return states[customer_id]

    async def load_many(
        self, customer_ids: Sequence[str], partitions: Mapping[str, int] | None = None
    ) -> dict[str, CustomerState | None]:
        raws = await self._customer_field(customer_ids, partitions or {}, "state")
        return {
            customer_id: CustomerState.model_validate_json(unpack(raw)) if raw is not None else None
            for customer_id, raw in raws.items()
        }

    async def load_score(
        self, customer_id: str, partition: int | None = None
    ) -> CustomerScore | None:
        partitions = None if partition is None else {customer_id: partition}
        raw = (await self._customer_field([customer_id], partitions or {}, "score"))[customer_id]
        return CustomerScore.model_validate_json(unpack(raw)) if raw is not None else None

    async def _customer_field(
        self, customer_ids: Sequence[str], partitions: Mapping[str, int], field: str
    ) -> dict[str, bytes | None]:
        """``field`` of each customer's hash: under their given partition, else under their
        id's own partition and, failing that, under every other partition (a customer known
        by a pseudonym is filed under the partition of the raw id)."""
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                for customer_id in customer_ids:
                    pipe.hget(self.customer_key(customer_id, partitions.get(customer_id)), field)
                found = dict(zip(customer_ids, await pipe.execute(), strict=True))
            lost = [c for c in customer_ids if found[c] is None and c not in partitions]
            if lost and self.partitions > 1:
                async with self._redis.pipeline(transaction=False) as pipe:
                    tried = [
                        (c, p)
                        for c in lost
                        for p in range(self.partitions)
                        if p != self.partition_of(c)
                    ]
                    for customer_id, partition in tried:
                        pipe.hget(self.customer_key(customer_id, partition), field)
                    for (customer_id, _), raw in zip(tried, await pipe.execute(), strict=True):
                        if raw is not None:
                            found[customer_id] = raw
        return found

    async def applied_offset(self, position: InputPosition) -> int | None:
        offsets = offsets_key(self._namespace, position.partition)
        with _unavailable_as_store_error():
            raw = await self._redis.hget(offsets, position.mark_field)
        return int(raw) if raw is not None else None

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
            async with self._redis.pipeline(transaction=False) as pipe:
                for partition in range(self.partitions):
                    pipe.hgetall(offsets_key(self._namespace, partition))
                marks = await pipe.execute()
        return {
            _text(name).removesuffix("|newest"): datetime.fromtimestamp(float(value), UTC)
            for raw in marks
            for name, value in (raw or {}).items()
            if _text(name).endswith("|newest")
        }

    async def outbox(self, partition: int, count: int) -> list[OutboxRecord]:
        with _unavailable_as_store_error():
            raws = await self._redis.lrange(outbox_key(self._namespace, partition), 0, count - 1)
        return [OutboxRecord.from_json(raw) for raw in raws]

    async def clear_outbox(self, partition: int, records: Sequence[OutboxRecord]) -> int:
        if not records:
            return 0
        with _unavailable_as_store_error():
            removed = await self._clear_outbox_script(
                keys=[outbox_key(self._namespace, partition)],
                args=[record.to_json() for record in records],
            )
        return int(removed)

    async def campaign_fields(self, partition: int) -> dict[str, int]:
        with _unavailable_as_store_error():
            raw = await self._redis.hgetall(campaigns_key(self._namespace, partition))
        return {_text(name): int(value) for name, value in (raw or {}).items()}

    async def forget_campaign_fields(self, partition: int, names: Sequence[str]) -> None:
        if not names:
            return
        with _unavailable_as_store_error():
            await self._redis.hdel(campaigns_key(self._namespace, partition), *names)

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
        results: list[SaveResult] = []
        # Per offsets hash, the marks the batch's earlier steps moved: a later step holds
        # them too. Each write holds the marks as they stood before the batch; split into
        # steps (a Redis Cluster), a batch may see a failover between two steps that drops
        # the earlier ones, and a later step holding only the older marks would pass on the
        # replica and move the marks past the lost writes: nobody would find them lost.
        moved: dict[str, dict[str, int]] = {}
        for step in self._steps(writes):
            keys: list[str] = []
            args: list[str | bytes | int | float] = [
                self._retention_ms if self._retention_ms is not None else ""
            ]
            held: tuple[str, str] | None = None
            step_keys = [self._write_keys(write) for write in step]
            for write, write_keys in zip(step, step_keys, strict=True):
                hold = _marks_to_hold(write, moved.get(write_keys[0], {}))
                # Within one atomic step the marks only move up: once a write of a partition
                # has held them, a later write holding the same marks is checked already.
                checked = held == (write_keys[0], hold)
                held = (write_keys[0], hold)
                keys.extend(write_keys)
                args.extend(self._write_args(write, "" if checked else hold))
            with _unavailable_as_store_error():
                made = await self._write_script(keys=keys, args=args)
            results.extend(SaveResult(int(result)) for result in made)
            if results[-1] != SaveResult.APPLIED:
                break
            # All applied: each moved its mark (writes of one field ascend).
            for write, write_keys in zip(step, step_keys, strict=True):
                if write.position is not None:
                    marks = moved.setdefault(write_keys[0], {})
                    field, offset = write.position.mark_field, write.position.offset
                    marks[field] = max(marks.get(field, offset), offset)
        return results

    def _steps(self, writes: Sequence[PendingWrite]) -> list[Sequence[PendingWrite]]:
        """The atomic steps a batch is written in: one here (one Redis holds every slot)."""
        return [writes] if writes else []

    def _partition_of_write(self, write: PendingWrite) -> int:
        """Where a write's customer lives: its due entry's or message's partition, else (a
        bare save: tests, tools) the id's own."""
        if write.due is None and write.position is None and write.state is not None:
            return self.partition_of(write.state.customer_id)
        return write.partition

    def _write_keys(self, write: PendingWrite) -> tuple[str, ...]:
        partition = self._partition_of_write(write)
        # The mark is the message's partition's; the topics are co-partitioned, so it is the
        # customer's too (a Redis Cluster refuses a write where it is not: CROSSSLOT).
        marked = write.position.partition if write.position is not None else partition
        ns = self._namespace
        head = (offsets_key(ns, marked), erased_key(ns, partition))
        if write.state is None:  # a mark-only write touches no customer: any key will do
            return (*head, *head, *head)
        return (
            *head,
            customer_key(ns, partition, write.state.customer_id),
            due_key(ns, partition),
            outbox_key(ns, partition),
            campaigns_key(ns, partition),
        )

    def _write_args(self, write: PendingWrite, hold: str) -> list[str | bytes | int | float]:
        """The script's arguments for ``write``, holding the marks ``hold`` (JSON, ''
        none: :func:`_marks_to_hold`)."""
        position, state, score, due = write.position, write.state, write.score, write.due
        mark: list[str | bytes | int | float] = [
            position.mark_field if position is not None else "",
            position.offset if position is not None else 0,
            hold,
        ]
        event_time = write.event_time.timestamp() if write.event_time is not None else ""
        if state is None:
            return [*mark, "", "", "", "", "", 0, "", "", event_time, ""]
        return [
            *mark,
            pack(state.model_dump_json()),
            pack(stored_score_json(score, write.outbox)) if score is not None else "",
            score.as_of.isoformat() if score is not None else "",
            "" if due is None else "rem" if due.at is None else "add",
            state.customer_id,
            due.at.timestamp() if due is not None and due.at is not None else 0,
            subject_hash(self._privacy_key, state.customer_id),
            json.dumps([record.to_json() for record in write.outbox]) if write.outbox else "",
            event_time,
            json.dumps([item for pair in write.campaign_increments for item in pair])
            if write.campaign_increments
            else "",
        ]

    async def erase(
        self, customer_id: str, partition: int, position: InputPosition | None, at: datetime
    ) -> ErasureReport:
        subject = subject_hash(self._privacy_key, customer_id)
        ns = self._namespace
        keys = [
            customer_key(ns, partition, customer_id),
            offsets_key(ns, position.partition if position is not None else partition),
            due_key(ns, partition),
            erased_key(ns, partition),
            audit_key(ns, partition),
            outbox_key(ns, partition),
        ]
        args: list[str | int] = [
            position.mark_field if position is not None else "",
            position.offset if position is not None else 0,
            customer_id,
            subject,
            at.astimezone(UTC).isoformat(),
            AUDIT_MAX_LENGTH,
            _marks_to_hold(PendingWrite(position)),
        ]
        with _unavailable_as_store_error():
            deleted = int(await self._erase_script(keys=keys, args=args))
        if deleted == -2:
            return ErasureReport(subject, state_deleted=False, store_behind=True)
        if deleted < 0:
            return ErasureReport(subject, state_deleted=False, already_applied=True)
        return ErasureReport(subject, state_deleted=deleted == 1)

    async def record_consent(
        self,
        customer_id: str,
        position: InputPosition | None,
        at: datetime,
        partition: int | None = None,
    ) -> SaveResult:
        if partition is None:
            partition = (
                position.partition if position is not None else self.partition_of(customer_id)
            )
        ns = self._namespace
        keys = [
            offsets_key(ns, position.partition if position is not None else partition),
            erased_key(ns, partition),
            audit_key(ns, partition),
        ]
        args: list[str | int] = [
            position.mark_field if position is not None else "",
            position.offset if position is not None else 0,
            subject_hash(self._privacy_key, customer_id),
            at.astimezone(UTC).isoformat(),
            AUDIT_MAX_LENGTH,
            _marks_to_hold(PendingWrite(position)),
        ]
        with _unavailable_as_store_error():
            return SaveResult(int(await self._consent_script(keys=keys, args=args)))

    async def audit_records(self, count: int = 100) -> list[dict[str, str]]:
        """The newest privacy audit records of all partitions, oldest first (ordered by
        their stream ids: the time each was added, then its sequence)."""
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                for partition in range(self.partitions):
                    pipe.xrevrange(audit_key(self._namespace, partition), count=count)
                streams = await pipe.execute()
        entries = sorted(
            (entry for stream in streams for entry in (stream or [])),
            key=lambda entry: tuple(int(part) for part in _text(entry[0]).split("-")),
        )
        return [
            {_text(name): _text(value) for name, value in (fields or {}).items()}
            for _, fields in entries[-count:]
        ]

    async def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        """One HMGET per partition's block list: the reader knows the ids, not necessarily
        the partitions their events arrived on."""
        if not customer_ids:
            return set()
        subjects = [subject_hash(self._privacy_key, c) for c in customer_ids]
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                for partition in range(self.partitions):
                    pipe.hmget(erased_key(self._namespace, partition), subjects)
                blocks = await pipe.execute()
        return {
            customer_id
            for marks in blocks
            for customer_id, mark in zip(customer_ids, marks, strict=True)
            if mark is not None
        }

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

    async def iter_scores(self, batch: int = 500) -> AsyncIterator[CustomerScore]:
        # Every partition's customers: Redis globs read the tag's braces literally.
        pattern = f"{self._namespace}:{KEY_VERSION}:{{p*}}:customer:*"
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

    async def save_model(
        self,
        name: str,
        blob: bytes,
        version: str,
        next_offsets: Mapping[str, int] | None = None,
    ) -> None:
        key = self.model_key(name)
        # One MULTI/EXEC, and one Cluster slot (the three keys share the name's hash tag):
        # a reader never finds a blob beside positions that are not its own.
        with _unavailable_as_store_error():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, blob)
                pipe.set(f"{key}:version", version)
                pipe.delete(f"{key}:next-offsets")
                if next_offsets:
                    pipe.hset(
                        f"{key}:next-offsets", mapping={f: str(o) for f, o in next_offsets.items()}
                    )
                await pipe.execute()

    async def load_model_next_offsets(self, name: str) -> dict[str, int]:
        with _unavailable_as_store_error():
            raw = await self._redis.hgetall(f"{self.model_key(name)}:next-offsets")
        return {_text(field): int(value) for field, value in raw.items()}

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def stored_score_json(score: CustomerScore, outbox: Sequence[OutboxRecord]) -> str:
    """``score.model_dump_json()``, taken from the write's outbox record of that score when it
    has one (made from the same score a moment before: serialised once, not twice)."""
    for record in outbox:
        if record.kind == "scores" and record.record_id == score.event_id and record.value:
            return record.value
    return score.model_dump_json()


def _marks_to_hold(write: PendingWrite, moved: Mapping[str, int] | None = None) -> str:
    """The marks ``write`` holds (JSON for the scripts, '' none), with those ``moved`` by
    the earlier steps of its batch in its offsets hash."""
    marks = write.marks_to_hold()
    for field, offset in (moved or {}).items():
        marks[field] = max(marks.get(field, offset), offset)
    return json.dumps([item for pair in sorted(marks.items()) for item in pair]) if marks else ""


_CLUSTER_PASSING_FAULTS = (
    redis.exceptions.ClusterDownError,  # a master failed and no replica took over yet
    redis.exceptions.TryAgainError,  # a slot being moved, mid-way
    redis.exceptions.SlotNotCoveredError,  # the client's slot map has a hole, for now
)
"""What a Redis Cluster answers while it fails over or moves slots: waited out like a
connection error (a cross-slot script is a bug, not one of these)."""


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
    except _CLUSTER_PASSING_FAULTS as error:
        raise StoreUnavailableError(f"Redis Cluster unavailable: {error!r}") from error
