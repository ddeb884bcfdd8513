"""The worker's handling of messages and timers, without Faust: a fake broker, the in-memory
store, output topics in memory."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from streamcrm.core.records import Alert, CustomerScore, DeadLetter
from streamcrm.core.scoring import ScoringConfig
from streamcrm.core.state import CustomerState
from streamcrm.services.kafka import Record
from streamcrm.settings import Settings
from streamcrm.store import InMemoryStateStore, InputPosition, OutboxRecord
from streamcrm.worker.learning import SharedLearner
from streamcrm.worker.metrics import WorkerMetrics
from streamcrm.worker.outbox import OutboxPublisher
from streamcrm.worker.pipeline import ScoringPipeline
from streamcrm.worker.worker import Worker
from tests.outputs import FakeOutputs
from tests.unit.test_pipeline import cancellation, purchase
from tests.unit.test_pipeline_batches import Message

SETTINGS = Settings()
TOPICS = SETTINGS.topics


class FakeBroker:
    """Records what the worker sends; owns every partition; nothing left unhandled."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.sent.append((topic, key, value))

    def owned_partitions(self, topic: str) -> list[int]:
        return [0]

    def has_unhandled(self, topic: str, partition: int, handled_up_to: int) -> bool:
        return False

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        return []

    def on(self, topic: str) -> list[bytes | None]:
        return [value for name, _, value in self.sent if name == topic]


def a_worker() -> tuple[Worker, FakeBroker, FakeOutputs]:
    store = InMemoryStateStore()
    pipeline = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    metrics = WorkerMetrics("w1", TOPICS.inputs, pipeline.outcomes, pipeline.dead_letters)
    broker, outputs = FakeBroker(), FakeOutputs()
    names = {"scores": TOPICS.scores, "alerts": TOPICS.alerts}
    worker = Worker(
        SETTINGS,
        pipeline,
        SharedLearner(store),
        metrics,
        OutboxPublisher(store, outputs),
        broker,
        names,
    )
    outputs_sent = outputs.send_all

    async def send_all(records):  # type: ignore[no-untyped-def]
        await outputs_sent(records)
        worker.note_outputs(records)

    outputs.send_all = send_all  # type: ignore[method-assign]
    return worker, broker, outputs


def published(outputs: FakeOutputs, kind: str) -> list[str]:
    return [r.value for log in outputs.logs.values() for r in log if r.kind == kind]


async def test_a_batch_publishes_each_score_and_alert_and_dead_letters_the_bad_message() -> None:
    worker, broker, outputs = a_worker()
    await worker.handle_message(Message(purchase("c1", day=0), 0, topic=TOPICS.purchases))
    batch = [
        Message(cancellation("c1"), 0, topic=TOPICS.support),
        Message(b"{not json", 1, topic=TOPICS.support),
    ]

    await worker.handle_batch(batch)
    await worker.outputs_published()

    scores = [CustomerScore.model_validate_json(v) for v in published(outputs, "scores")]
    alerts = [Alert.model_validate_json(v) for v in published(outputs, "alerts")]
    [letter] = [DeadLetter.model_validate_json(v or b"") for v in broker.on(TOPICS.deadletter)]
    assert [s.customer_id for s in scores] == ["c1", "c1"]
    assert [a.kind for a in alerts] == ["churn_risk"]
    assert (letter.source_topic, letter.offset, letter.reason_code) == (
        TOPICS.support,
        1,
        "not_json",
    )
    assert [a.kind for a in worker.recent_alerts] == ["churn_risk"]


async def test_a_privacy_request_that_fails_is_counted_alerted_and_dead_lettered() -> None:
    worker, broker, _ = a_worker()

    await worker.handle_message(Message(b'{"type": "erasure"}', 0, topic=TOPICS.privacy))

    [alert] = [Alert.model_validate_json(v or b"") for v in broker.on(TOPICS.alerts)]
    assert alert.kind == "privacy_request_failed" and alert.customer_id is None
    assert len(broker.on(TOPICS.deadletter)) == 1
    assert worker.metrics.privacy_failures == Counter({"schema:missing": 1})


async def test_an_erasure_sends_a_tombstone_and_forgets_the_customer_in_memory() -> None:
    worker, broker, _ = a_worker()
    await worker.handle_message(Message(purchase("c1", day=0), 0, topic=TOPICS.purchases))
    erasure = {
        "type": "erasure",
        "event_id": "x1",
        "customer_id": "c1",
        "occurred_at": "2026-02-01T00:00:00Z",
    }

    await worker.handle_message(Message(json.dumps(erasure).encode(), 0, topic=TOPICS.privacy))

    assert (TOPICS.scores, b"c1", None) in broker.sent
    assert "c1" not in worker.metrics.recent.customer_ids()


async def test_model_updates_go_out_in_one_message_at_the_flush() -> None:
    worker, broker, _ = a_worker()
    for offset, day in enumerate((0, 1, 2)):
        await worker.handle_message(
            Message(purchase("c1", day=day), offset, topic=TOPICS.purchases)
        )

    await worker.flush_model_updates()

    [batch] = broker.on(TOPICS.model_updates)
    assert len(json.loads(batch or b"")["updates"]) >= 3


async def test_the_campaign_metrics_timer_publishes_campaigns_and_refreshes_the_plan() -> None:
    from streamcrm.core.events import CampaignTouch
    from streamcrm.core.records import CampaignMetrics
    from streamcrm.worker.pipeline import ScoringPipeline as _Pipeline

    worker, broker, _ = a_worker()
    pipeline: _Pipeline = worker.pipeline  # type: ignore[assignment]
    touch = CampaignTouch(
        event_id="m1",
        customer_id="c1",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        touch_id="t1",
        campaign_id="retention",
        arm="call",
        channel="phone",
        cost=2.0,
    )
    await worker.handle_message(
        Message(touch.model_dump_json().encode(), 0, topic=TOPICS.marketing)
    )

    await worker.publish_campaign_metrics()

    (report,) = [
        CampaignMetrics.model_validate_json(v or b"") for v in broker.on(TOPICS.campaign_metrics)
    ]
    assert (report.campaign_id, [arm.arm for arm in report.arms]) == ("retention", ["call"])
    assert report.arms[0].cost == 2.0
    assert set(pipeline.retention.arms_by_segment[""]) == {"call"}
    assert broker.on(TOPICS.uplift) == []  # no churn alert has settled


async def test_the_publisher_drops_bucket_figures_whose_windows_closed_and_reports_the_same() -> (
    None
):
    """What bounds the campaign hashes: once a touch-time bucket's windows have all closed
    (less the allowed lateness) under the watermark, its figures go; the arm's totals carry
    them, so the next report is the one before."""
    from datetime import timedelta

    from streamcrm.core.events import CampaignTouch
    from streamcrm.core.marketing import Tally
    from streamcrm.core.records import CampaignMetrics

    worker, broker, _ = a_worker()
    store = worker.pipeline.store
    day = datetime(2026, 1, 1, tzinfo=UTC)
    messages = [
        CampaignTouch(
            event_id=f"m{n}",
            customer_id=f"c{n}",
            occurred_at=day + timedelta(days=10 * n),
            touch_id=f"t{n}",
            campaign_id="spring",
            arm="A",
            channel="email",
        )
        for n in range(3)
    ]
    for offset, touch in enumerate(messages):
        await worker.handle_message(
            Message(touch.model_dump_json().encode(), offset, topic=TOPICS.marketing)
        )
    # A purchase on day 21 moves the watermark to day 19: the bucket of day 0 has closed.
    await worker.handle_message(Message(purchase("c2", 21.0), 0, topic=TOPICS.purchases))
    before = await store.campaign_fields(0)

    await worker.publish_campaign_metrics()
    await worker.publish_campaign_metrics()

    after = await store.campaign_fields(0)
    dropped = set(before) - set(after)
    assert dropped and all("@" in name for name in dropped)
    assert Tally.from_fields(after).arms == Tally.from_fields(before).arms  # the totals stay
    first, second = [
        CampaignMetrics.model_validate_json(v or b"").model_dump(exclude={"published_at"})
        for v in broker.on(TOPICS.campaign_metrics)
    ]
    assert first == second


class LoggedBroker(FakeBroker):
    """A broker that keeps each input partition's log: what is unhandled, and re-reads."""

    def __init__(self) -> None:
        super().__init__()
        self.log: dict[tuple[str, int], list[Record]] = {}

    def append(self, topic: str, value: bytes) -> Message:
        records = self.log.setdefault((topic, 0), [])
        records.append(Record(topic, 0, len(records), None, value))
        return Message(value, len(records) - 1, topic=topic)

    def has_unhandled(self, topic: str, partition: int, handled_up_to: int) -> bool:
        return handled_up_to < len(self.log.get((topic, partition), []))

    async def read_range(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        return self.log.get((topic, partition), [])[start:end]


async def test_after_redis_lost_writes_a_purchase_applied_again_still_converts_its_touch() -> None:
    """Redis lost the writes of a touch's converting purchase and of a purchase a month later.
    This worker's event time had moved on a month; the partition's watermark must wait for
    the lost range, or the purchase, applied again, would be taken as older than what is
    settled and not attributed (seen in the Redis power-loss fault scenario)."""
    import copy

    from streamcrm.core.events import CampaignTouch
    from streamcrm.core.marketing import Tally

    store = InMemoryStateStore()
    pipeline = ScoringPipeline(store, ScoringConfig(), shared_models=True)
    metrics = WorkerMetrics("w1", TOPICS.inputs, pipeline.outcomes, pipeline.dead_letters)
    broker = LoggedBroker()
    names = {"scores": TOPICS.scores, "alerts": TOPICS.alerts}
    worker = Worker(
        SETTINGS,
        pipeline,
        SharedLearner(store),
        metrics,
        OutboxPublisher(store, FakeOutputs()),
        broker,
        names,
    )
    touch = CampaignTouch(
        event_id="m1",
        customer_id="c1",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        touch_id="t1",
        campaign_id="spring",
        arm="A",
        channel="email",
    )

    async def deliver(topic: str, value: bytes) -> None:
        await worker.handle_message(broker.append(topic, value))

    await deliver(TOPICS.marketing, touch.model_dump_json().encode())
    await deliver(TOPICS.purchases, purchase("c2", 0.0))
    before_the_loss = copy.deepcopy(store.__dict__)
    await deliver(TOPICS.purchases, purchase("c1", 2.0))  # converts the touch
    await deliver(TOPICS.purchases, purchase("c3", 30.0))
    store.__dict__.update(before_the_loss)  # Redis lost the last two writes

    await deliver(TOPICS.purchases, purchase("c4", 31.0))  # finds the store behind

    (figures,) = Tally.from_fields(await store.campaign_fields(0)).by_campaign_arm().values()
    assert (figures.touches, figures.conversions) == (1, 1)
    assert pipeline.outcomes["rewinds"] == 1 and pipeline.outcomes["re-applied"] == 2


async def test_the_outboxes_of_a_batchs_partitions_are_published_at_once() -> None:
    worker, _, outputs = a_worker()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for partition in (0, 1):
        await worker.pipeline.store.save(
            CustomerState(customer_id=f"c{partition}", first_seen_at=at, last_event_at=at),
            None,
            None,
            InputPosition(TOPICS.purchases, None, partition, 0),
            (OutboxRecord("scores", f"c{partition}", "{}", f"id{partition}"),),
        )
    in_flight, most_in_flight = 0, 0
    send = outputs.send_all

    async def acknowledged_later(records):  # type: ignore[no-untyped-def]
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.01)
        await send(records)
        in_flight -= 1

    outputs.send_all = acknowledged_later  # type: ignore[method-assign]

    await worker.publish_outputs([0, 1])

    assert outputs.ids() == ["id0", "id1"]
    assert most_in_flight == 2  # the second partition did not wait for the first's acks


async def a_worker_past_its_first_message() -> tuple[Worker, FakeOutputs]:
    """A worker that has handled partition 0's first message (handled alone: its stored
    mark is checked first), so the next ones are scored as batches."""
    worker, _, outputs = a_worker()
    await worker.handle_batch([Message(purchase("c0", 0.0), 0)])
    return worker, outputs


class HeldAcknowledgements:
    """Output topics whose acknowledgements wait until the test lets them through."""

    def __init__(self, outputs: FakeOutputs) -> None:
        self.outputs = outputs
        self.send = outputs.send_all
        self.let_through = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        outputs.send_all = self.send_all  # type: ignore[method-assign]

    async def send_all(self, records):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.let_through.wait()
        await self.send(records)
        self.in_flight -= 1


async def test_a_batch_does_not_wait_for_its_outputs_acknowledgements() -> None:
    worker, outputs = await a_worker_past_its_first_message()
    held = HeldAcknowledgements(outputs)

    await asyncio.wait_for(worker.handle_batch([Message(purchase("c1", 1.0), 1)]), 1.0)

    assert held.in_flight == 1  # sent, not yet acknowledged
    held.let_through.set()
    assert await worker.outputs_published()
    assert len(published(outputs, "scores")) == 2


async def test_a_partitions_next_batch_waits_for_the_publication_of_the_one_before() -> None:
    worker, outputs = await a_worker_past_its_first_message()
    held = HeldAcknowledgements(outputs)
    await worker.handle_batch([Message(purchase("c1", 1.0), 1)])

    second = asyncio.create_task(worker.handle_batch([Message(purchase("c2", 2.0), 2)]))
    await asyncio.sleep(0.05)

    assert not second.done()  # scored, but waiting for the first batch's publication
    held.let_through.set()
    await asyncio.wait_for(second, 1.0)
    assert await worker.outputs_published()
    assert held.most_in_flight == 1
    assert len(published(outputs, "scores")) == 3


async def test_a_hand_over_waits_for_publications_at_most_half_the_session_timeout() -> None:
    worker, outputs = await a_worker_past_its_first_message()
    worker.settings = SETTINGS.model_copy(update={"broker_session_timeout_s": 0.1})
    held = HeldAcknowledgements(outputs)
    await worker.handle_batch([Message(purchase("c1", 1.0), 1)])

    await asyncio.wait_for(worker.finish_publishing(), 1.0)  # the broker never acknowledges

    assert held.in_flight == 1 and len(published(outputs, "scores")) == 1
    held.let_through.set()
    await worker.finish_publishing()
    assert len(published(outputs, "scores")) == 2


@dataclass(frozen=True)
class TimedMessage(Message):
    """A message with its Kafka timestamp (epoch seconds; 0: none)."""

    timestamp: float = 0.0


async def test_a_scores_latency_is_noted_once_its_publication_is_done() -> None:
    worker, outputs = await a_worker_past_its_first_message()
    noted_before = worker.metrics.latency.count
    held = HeldAcknowledgements(outputs)
    batch = [TimedMessage(purchase("c1", 1.0), 1, timestamp=1.0), Message(purchase("c2", 1.0), 2)]

    await worker.handle_batch(batch)

    assert worker.metrics.latency.count == noted_before  # not published yet
    held.let_through.set()
    await worker.outputs_published()
    await asyncio.sleep(0)  # the note follows the publication's completion
    assert worker.metrics.latency.count == noted_before + 1  # c2's message had no timestamp
