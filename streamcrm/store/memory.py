"""A dict-backed twin of the Redis store, for unit tests and dry runs: the same contract
(the contract suite runs against both)."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from streamcrm.core.privacy import ErasureReport, default_privacy_key, subject_hash
from streamcrm.core.records import CustomerScore
from streamcrm.core.state import CustomerState
from streamcrm.store.base import (
    InputPosition,
    LedgerDue,
    OutboxRecord,
    PendingWrite,
    SaveResult,
    audit_record,
)


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
        self._model_next_offsets: dict[str, dict[str, int]] = {}
        self._offsets: dict[str, int] = {}
        self._erased: dict[str, str] = {}
        self._outbox: dict[int, list[OutboxRecord]] = {}
        self._outbox_from: dict[int, dict[str, int]] = {}
        self._campaigns: dict[int, dict[str, int]] = {}
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

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        # One process, no slots: the partition only places keys in Redis.
        self._expire(customer_id)
        raw = self._states.get(customer_id)
        return CustomerState.model_validate_json(raw) if raw is not None else None

    async def load_many(
        self, customer_ids: Sequence[str], partitions: Mapping[str, int] | None = None
    ) -> dict[str, CustomerState | None]:
        return {customer_id: await self.load(customer_id) for customer_id in customer_ids}

    async def applied_offset(self, position: InputPosition) -> int | None:
        return self._offsets.get(position.mark_field)

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        results: list[SaveResult] = []
        for write in writes:
            if write.state is None:
                assert write.position is not None, "a mark-only write needs a position"
                result = (
                    SaveResult.STATE_BEHIND
                    if self._behind(write)
                    else await self.mark_applied(write.position)
                )
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
        if self._behind(write):
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
        if write.campaign_increments:
            fields = self._campaigns.setdefault(write.partition, {})
            for name, amount in write.campaign_increments:
                fields[name] = fields.get(name, 0) + amount
        return SaveResult.APPLIED

    async def campaign_fields(self, partition: int) -> dict[str, int]:
        return dict(self._campaigns.get(partition, {}))

    async def forget_campaign_fields(self, partition: int, names: Sequence[str]) -> None:
        fields = self._campaigns.get(partition, {})
        for name in names:
            fields.pop(name, None)

    async def outbox(self, partition: int, count: int) -> list[OutboxRecord]:
        return list(self._outbox.get(partition, [])[:count])

    async def clear_outbox(self, partition: int, records: Sequence[OutboxRecord]) -> int:
        waiting = self._outbox.get(partition, [])
        removed = 0
        for record in records:
            if waiting and waiting[0] == record:
                del waiting[0]
                removed += 1
        return removed

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

    def _behind(self, write: PendingWrite) -> bool:
        for field, offset in write.marks_to_hold().items():
            mark = self._offsets.get(field)
            if mark is None or mark < offset:
                return True
        return False

    async def mark_applied(self, position: InputPosition) -> SaveResult:
        if self._behind(PendingWrite(position)):
            return SaveResult.STATE_BEHIND
        return SaveResult.APPLIED if self._advance_mark(position) else SaveResult.ALREADY_APPLIED

    def replica(self) -> InMemoryStateStore:
        """Test hook: a copy of everything stored now, as a replica holds it."""
        return copy.deepcopy(self)

    def fail_over_to(self, replica: InMemoryStateStore) -> None:
        """Test hook: hold ``replica``'s contents from now on, as a Redis whose replica took
        over without the writes made after it stopped following."""
        self.__dict__.update(copy.deepcopy(replica.__dict__))

    def lose_writes_since(self, marks: dict[str, int]) -> None:
        """Test hook: set the offset marks back, as a Redis that lost its last writes would."""
        self._offsets.update(marks)

    async def erase(
        self, customer_id: str, partition: int, position: InputPosition | None, at: datetime
    ) -> ErasureReport:
        subject = subject_hash(self._privacy_key, customer_id)
        if position is not None and self._behind(PendingWrite(position)):
            return ErasureReport(subject, state_deleted=False, store_behind=True)
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
        self.audit.append(audit_record("erasure", subject, at, existed))
        return ErasureReport(subject, state_deleted=existed)

    async def record_consent(
        self,
        customer_id: str,
        position: InputPosition | None,
        at: datetime,
        partition: int | None = None,
    ) -> SaveResult:
        if position is not None and self._behind(PendingWrite(position)):
            return SaveResult.STATE_BEHIND
        if not self._advance_mark(position):
            return SaveResult.ALREADY_APPLIED
        subject = subject_hash(self._privacy_key, customer_id)
        self._erased.pop(subject, None)
        self.audit.append(audit_record("consent", subject, at, False))
        return SaveResult.APPLIED

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

    async def load_score(
        self, customer_id: str, partition: int | None = None
    ) -> CustomerScore | None:
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

    async def save_model(
        self,
        name: str,
        blob: bytes,
        version: str,
        next_offsets: Mapping[str, int] | None = None,
    ) -> None:
        self._models[name] = (blob, version)
        self._model_next_offsets[name] = dict(next_offsets or {})

    async def load_model_next_offsets(self, name: str) -> dict[str, int]:
        return dict(self._model_next_offsets.get(name, {}))

    async def close(self) -> None:
        return None
