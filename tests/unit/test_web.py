"""The web adapter's pieces without a server: positions read from a consumer, scores paired
with their messages, the customer document."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from faust.types import TP

from streamcrm.core.records import Alert
from streamcrm.core.scoring import ScoringConfig
from streamcrm.store import InMemoryStateStore
from streamcrm.worker.metrics import MapPoint, WorkerMetrics
from streamcrm.worker.pipeline import ScoringPipeline
from streamcrm.worker.web import (
    customer_document,
    forget_customers,
    forget_erased,
    message_timestamp,
    partition_positions,
    scored_in,
)


class FakeConsumer:
    """What ``partition_positions`` asks of Faust's consumer."""

    def __init__(
        self,
        listed: Mapping[TP, int],
        fetched: Mapping[TP, int | None],
        committed: Mapping[TP, int],
    ) -> None:
        self.listed, self.fetched = listed, fetched
        self._committed_offset = dict(committed)

    def assignment(self) -> set[TP]:
        return set(self.listed)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self.listed[tp] for tp in partitions}

    def highwater(self, tp: TP) -> int | None:
        return self.fetched.get(tp)


async def test_positions_take_the_larger_end_offset_and_faust_committed_offset() -> None:
    low, fresh, other = TP("crm.purchases", 0), TP("crm.purchases", 1), TP("crm.other", 0)
    consumer = FakeConsumer(
        listed={low: 7, fresh: 40, other: 5},
        fetched={low: 9},  # Tansu: ListOffsets says 7, the fetch response's high water 9
        committed={low: 6},
    )

    positions = await partition_positions(consumer, ["crm.purchases"])

    assert [(p.partition, p.end_offset, p.committed, p.lag) for p in positions] == [
        (0, 9, 6, 3),
        (1, 40, None, None),  # nothing committed yet: lag unknown
    ]


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float | None = None
    key: bytes | None = None


def test_message_timestamp_is_epoch_seconds_or_none() -> None:
    assert message_timestamp(Message("t", 0, 1, b"", timestamp=1_700_000_000.5)) == 1_700_000_000.5
    assert message_timestamp(Message("t", 0, 1, b"", timestamp=None)) is None
    assert message_timestamp(Message("t", 0, 1, b"", timestamp=0.0)) is None


async def test_scored_in_pairs_each_new_score_with_its_message_timestamp() -> None:
    pipeline = ScoringPipeline(InMemoryStateStore(), ScoringConfig())
    raw = json.dumps(
        {
            "type": "purchase",
            "event_id": "e1",
            "customer_id": "c1",
            "occurred_at": "2026-01-05T10:00:00Z",
            "order_id": "o1",
            "amount": 40.0,
            "items": 1,
            "channel": "web",
        }
    ).encode()
    first = await pipeline.handle(raw, "crm.purchases", 0, 0)
    again = await pipeline.handle(raw, "crm.purchases", 0, 1)  # a duplicate: no score
    messages = [Message("crm.purchases", 0, n, raw, timestamp=100.0 + n) for n in range(3)]

    pairs = list(scored_in(messages, [first, again, ValueError("dead-lettered")]))

    assert pairs == [(100.0, first.score)]


async def test_customer_document_has_state_score_and_history_or_none() -> None:
    store = InMemoryStateStore()
    pipeline = ScoringPipeline(store, ScoringConfig())
    for n, day in enumerate(("05", "20")):
        raw = json.dumps(
            {
                "type": "purchase",
                "event_id": f"e{n}",
                "customer_id": "c1",
                "occurred_at": f"2026-01-{day}T10:00:00Z",
                "order_id": f"o{n}",
                "amount": 40.0,
                "items": 1,
                "channel": "web",
            }
        ).encode()
        scored = await pipeline.handle(raw, "crm.purchases", 0, n)

    document = await customer_document(pipeline, "c1")

    assert document is not None and scored.score is not None
    assert document["customer_id"] == "c1"
    assert document["state"]["customer_id"] == "c1"
    assert document["score"] == json.loads(scored.score.model_dump_json())
    # Quiet for two weeks between the purchases: re-scored as of days 12 and 19 on the way.
    assert [point["as_of"] for point in document["history"]] == [
        datetime(2026, 1, day, 10, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        for day in (5, 12, 19, 20)
    ]
    json.dumps(document)
    assert await customer_document(pipeline, "nobody") is None


def alert_for(customer_id: str, alert_id: str) -> Alert:
    return Alert(
        alert_id=alert_id,
        kind="churn_risk",
        severity="warning",
        customer_id=customer_id,
        raised_at=datetime(2026, 1, 1, tzinfo=UTC),
        event_id="e1",
        message="churn risk",
        scores={},
        churn_drivers=[],
        model_version="m1",
    )


async def test_the_overview_forgets_customers_erased_by_any_worker_and_keeps_the_rest() -> None:
    store = InMemoryStateStore()
    metrics = WorkerMetrics("w", ["crm.purchases"], {}, {})
    for customer in ("erased", "kept"):
        metrics.recent.add(MapPoint(customer, 3.0, 10.0, "loyal", 0.9))
    alerts = deque([alert_for("erased", "a1"), alert_for("kept", "a2")])
    await store.erase("erased", 0, None, datetime(2026, 1, 2, tzinfo=UTC))  # by another worker

    forgotten = await forget_erased(store, metrics, alerts)

    overview = json.dumps(metrics.overview(datetime.now(UTC), alerts, "m1"))
    assert forgotten == {"erased"}
    assert "erased" not in overview and "kept" in overview
    assert [a.alert_id for a in alerts] == ["a2"]


def test_forgetting_a_customer_drops_their_recent_scores_and_alerts_only() -> None:
    metrics = WorkerMetrics("w", ["crm.purchases"], {}, {})
    metrics.recent.add(MapPoint("c1", 3.0, 10.0, "loyal", 0.9))
    metrics.recent.add(MapPoint("c2", 3.0, 10.0, "loyal", 0.2))
    alerts = deque([alert_for("c1", "a1"), alert_for("c2", "a2"), alert_for("c1", "a3")])

    forget_customers({"c1"}, metrics, alerts)

    assert metrics.recent.customer_ids() == ["c2"]
    assert [a.alert_id for a in alerts] == ["a2"]
