"""A store that waits out an unavailable Redis, call by call."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamcrm.core.state import CustomerState
from streamcrm.errors import StoreUnavailableError
from streamcrm.store import InMemoryStateStore
from streamcrm.store.retrying import RetryingStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyStore(InMemoryStateStore):
    """Unavailable for its first ``failures`` loads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def load(self, customer_id: str, partition: int | None = None) -> CustomerState | None:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailableError("Redis unavailable: connection refused")
        return await super().load(customer_id, partition)


async def test_a_call_is_retried_until_the_store_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamcrm.store.retrying.FIRST_RETRY_DELAY_S", 0.001)
    flaky = FlakyStore(failures=3)
    await flaky.save(CustomerState(customer_id="c1", first_seen_at=T0, last_event_at=T0), None)

    state = await RetryingStore(flaky).load("c1")

    assert state is not None and state.customer_id == "c1"
    assert flaky.calls == 4


async def test_the_inner_store_still_raises_at_once() -> None:
    """Callers that need an answer now (readiness, the web views) use the store itself."""
    with pytest.raises(StoreUnavailableError):
        await FlakyStore(failures=1).load("c1")
