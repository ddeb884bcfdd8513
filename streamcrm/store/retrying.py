"""A store that waits out an unavailable Redis: :class:`RetryingStore` wraps any
:class:`~streamcrm.store.base.StateStore` and retries each call with exponential back-off
while it raises ``StoreUnavailableError``.

The retry is per store call, never per processing step: a step that has already handed
labels to the models must not run twice (the models would learn them twice), and a message
that is fine must not be dead-lettered because Redis is away. Use it where waiting is right
(the pipeline, the learner); where an answer is needed now (readiness, the web views), use the
store itself, which raises at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from streamcrm.core.privacy import ErasureReport
from streamcrm.core.records import CustomerScore
from streamcrm.core.state import CustomerState
from streamcrm.errors import StoreUnavailableError
from streamcrm.store.base import (
    InputPosition,
    LedgerDue,
    OutboxRecord,
    PendingWrite,
    SaveResult,
    StateStore,
)

logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0

_T = TypeVar("_T")


async def until_available(operation: Callable[[], Awaitable[_T]], what: str) -> _T:
    """Run a store operation, waiting with exponential back-off (:data:`FIRST_RETRY_DELAY_S`
    doubling up to :data:`MAX_RETRY_DELAY_S`) while the store is unavailable."""
    delay = FIRST_RETRY_DELAY_S
    while True:
        try:
            return await operation()
        except StoreUnavailableError as error:
            logger.warning("cannot %s (%s); retrying in %.1fs", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)


class RetryingStore:
    """``store``, each call retried while the store is unavailable (see the module)."""

    def __init__(self, store: StateStore) -> None:
        self.inner = store

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        return await until_available(
            lambda: self.inner.load(customer_id, partition), f"load {customer_id}"
        )

    async def load_many(
        self, customer_ids: Sequence[str], partitions: Mapping[str, int] | None = None
    ) -> dict[str, CustomerState | None]:
        return await until_available(
            lambda: self.inner.load_many(customer_ids, partitions), "load a batch of customers"
        )

    async def save(
        self,
        state: CustomerState,
        score: CustomerScore | None,
        due: LedgerDue | None = None,
        position: InputPosition | None = None,
        outbox: Sequence[OutboxRecord] = (),
    ) -> SaveResult:
        return await until_available(
            lambda: self.inner.save(state, score, due, position, outbox),
            f"save {state.customer_id}",
        )

    async def save_batch(self, writes: Sequence[PendingWrite]) -> list[SaveResult]:
        return await until_available(
            lambda: self.inner.save_batch(writes), f"save {len(writes)} writes"
        )

    async def outbox(self, partition: int, count: int) -> list[OutboxRecord]:
        return await until_available(
            lambda: self.inner.outbox(partition, count), f"read outbox {partition}"
        )

    async def clear_outbox(self, partition: int, records: Sequence[OutboxRecord]) -> int:
        return await until_available(
            lambda: self.inner.clear_outbox(partition, records), f"clear outbox {partition}"
        )

    async def campaign_fields(self, partition: int) -> dict[str, int]:
        return await until_available(
            lambda: self.inner.campaign_fields(partition), f"read campaign figures {partition}"
        )

    async def forget_campaign_fields(self, partition: int, names: Sequence[str]) -> None:
        await until_available(
            lambda: self.inner.forget_campaign_fields(partition, names),
            f"forget campaign figures {partition}",
        )

    async def outbox_from(self, partition: int) -> dict[str, int]:
        return await until_available(
            lambda: self.inner.outbox_from(partition), f"read outbox offsets {partition}"
        )

    async def set_outbox_from(self, partition: int, offsets: Mapping[str, int]) -> None:
        await until_available(
            lambda: self.inner.set_outbox_from(partition, offsets),
            f"save outbox offsets {partition}",
        )

    async def newest_event_times(self) -> dict[str, datetime]:
        return await until_available(self.inner.newest_event_times, "read the newest event times")

    async def erase(
        self, customer_id: str, partition: int, position: InputPosition | None, at: datetime
    ) -> ErasureReport:
        return await until_available(
            lambda: self.inner.erase(customer_id, partition, position, at), "erase a customer"
        )

    async def record_consent(
        self,
        customer_id: str,
        position: InputPosition | None,
        at: datetime,
        partition: int | None = None,
    ) -> SaveResult:
        return await until_available(
            lambda: self.inner.record_consent(customer_id, position, at, partition),
            "record consent",
        )

    async def audit_records(self, count: int = 100) -> list[dict[str, str]]:
        return await until_available(lambda: self.inner.audit_records(count), "read the audit")

    async def erased_among(self, customer_ids: Sequence[str]) -> set[str]:
        return await until_available(
            lambda: self.inner.erased_among(customer_ids), "read the block list"
        )

    async def applied_offset(self, position: InputPosition) -> int | None:
        return await until_available(
            lambda: self.inner.applied_offset(position), "read an offset mark"
        )

    async def mark_applied(self, position: InputPosition) -> SaveResult:
        return await until_available(
            lambda: self.inner.mark_applied(position), "move an offset mark"
        )

    async def due_customers(self, partition: int, until: datetime, limit: int) -> list[str]:
        return await until_available(
            lambda: self.inner.due_customers(partition, until, limit),
            f"read the due index of partition {partition}",
        )

    async def forget_due(self, partition: int, customer_id: str) -> None:
        await until_available(
            lambda: self.inner.forget_due(partition, customer_id), f"unfile {customer_id}"
        )

    async def load_score(
        self, customer_id: str, partition: int | None = None
    ) -> CustomerScore | None:
        return await until_available(
            lambda: self.inner.load_score(customer_id, partition),
            f"load the score of {customer_id}",
        )

    def iter_scores(self) -> AsyncIterator[CustomerScore]:
        """Not retried: a scan cannot resume where it broke off."""
        return self.inner.iter_scores()

    async def load_model(self, name: str) -> bytes | None:
        return await until_available(lambda: self.inner.load_model(name), f"load model {name}")

    async def load_model_version(self, name: str) -> str | None:
        return await until_available(
            lambda: self.inner.load_model_version(name), f"read the version of model {name}"
        )

    async def save_model(
        self,
        name: str,
        blob: bytes,
        version: str,
        next_offsets: Mapping[str, int] | None = None,
    ) -> None:
        await until_available(
            lambda: self.inner.save_model(name, blob, version, next_offsets),
            f"save model {name}",
        )

    async def load_model_next_offsets(self, name: str) -> dict[str, int]:
        return await until_available(
            lambda: self.inner.load_model_next_offsets(name),
            f"read where the learner of model {name} reads next",
        )

    async def close(self) -> None:
        await self.inner.close()
