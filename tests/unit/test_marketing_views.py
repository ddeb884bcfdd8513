"""``GET /api/marketing`` (the dashboard's campaign and uplift tables): every worker keeps the
newest campaign and uplift reports it computed, though only the owner of marketing partition
0 publishes them; the endpoint serves them, and names no customer."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.web.drivers.aiohttp import Web

from streamcrm.core.events import CampaignTouch
from streamcrm.core.scoring import ScoringConfig
from streamcrm.store import InMemoryStateStore
from streamcrm.worker.metrics import WorkerMetrics
from streamcrm.worker.pipeline import ScoringPipeline
from streamcrm.worker.web import MarketingReports, register_web_views
from streamcrm.worker.worker import Worker
from tests.unit.test_pipeline_batches import Message
from tests.unit.test_status_campaigns import campaign, uplift
from tests.unit.test_worker import TOPICS, FakeBroker, a_worker

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


class NotTheOwner(FakeBroker):
    """A broker whose worker owns no partition of the marketing topic."""

    def owned_partitions(self, topic: str) -> list[int]:
        return [] if topic == TOPICS.marketing else [0]


async def touch(
    worker: Worker, customer_id: str, campaign_id: str = "spring", offset: int = 0
) -> None:
    event = CampaignTouch(
        event_id=f"m-{customer_id}",
        customer_id=customer_id,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        touch_id=f"t-{customer_id}",
        campaign_id=campaign_id,
        arm="A",
        channel="email",
        cost=0.5,
    )
    await worker.handle_message(
        Message(event.model_dump_json().encode(), offset, topic=TOPICS.marketing)
    )


# --- what the worker keeps --------------------------------------------------------------------


async def test_the_publishing_worker_keeps_the_reports_it_sent() -> None:
    worker, broker, _ = a_worker()
    await touch(worker, "c1")

    await worker.publish_campaign_metrics()

    kept = worker.marketing_reports
    assert kept.publisher and kept.computed_at is not None
    assert [report.campaign_id for report in kept.campaigns] == ["spring"]
    assert [report.model_dump_json().encode() for report in kept.campaigns] == broker.on(
        TOPICS.campaign_metrics
    )


async def test_a_worker_that_does_not_publish_still_computes_the_same_reports() -> None:
    worker, _, _ = a_worker()
    worker.broker = silent = NotTheOwner()
    await touch(worker, "c1")

    await worker.publish_campaign_metrics()

    assert silent.sent == []  # the owner of marketing partition 0 publishes, not this one
    kept = worker.marketing_reports
    assert not kept.publisher
    assert [(r.campaign_id, r.arms[0].touches) for r in kept.campaigns] == [("spring", 1)]


async def test_each_tick_replaces_the_reports_with_the_newest() -> None:
    worker, _, _ = a_worker()
    await touch(worker, "c1")
    await worker.publish_campaign_metrics()
    first = worker.marketing_reports

    await touch(worker, "c2", campaign_id="winback", offset=1)
    await worker.publish_campaign_metrics()

    assert [r.campaign_id for r in worker.marketing_reports.campaigns] == ["spring", "winback"]
    assert first.computed_at is not None and worker.marketing_reports.computed_at is not None
    assert worker.marketing_reports.computed_at >= first.computed_at


async def test_reports_stay_as_they_were_when_the_figures_cannot_be_read() -> None:
    worker, _, _ = a_worker()
    await touch(worker, "c1")
    await worker.publish_campaign_metrics()
    before = worker.marketing_reports

    async def unreadable(partition: int) -> Any:
        raise ConnectionError("redis away")

    worker.pipeline.store.campaign_fields = unreadable  # type: ignore[method-assign]
    await worker.publish_campaign_metrics()

    assert worker.marketing_reports is before


# --- the endpoint -----------------------------------------------------------------------------


@pytest.fixture
def serve() -> Callable[[Callable[[], MarketingReports]], Any]:
    """A test client of the worker's web views, its reports given by the argument."""

    def client_for(reports: Callable[[], MarketingReports]) -> TestClient:
        app = faust.App("marketing-view-test", broker="kafka://127.0.0.1:1", web_enabled=False)
        pipeline = ScoringPipeline(InMemoryStateStore(), ScoringConfig())
        metrics = WorkerMetrics("w1", TOPICS.inputs, pipeline.outcomes, pipeline.dead_letters)
        register_web_views(app, pipeline, metrics, TOPICS.inputs, marketing_reports=reports)
        return TestClient(TestServer(cast(Web, app.web).web_app))

    return client_for


async def get_marketing(client: TestClient) -> dict[str, Any]:
    async with client:
        response = await client.get("/api/marketing")
        assert response.status == 200
        return cast(dict[str, Any], await response.json())


async def test_the_endpoint_serves_the_newest_campaign_and_uplift_reports(serve: Any) -> None:
    reports = MarketingReports(NOW, (campaign(),), (uplift("loyal"), uplift("")), publisher=False)

    document = await get_marketing(serve(lambda: reports))

    assert document["worker"] == "w1"
    assert document["computed_at"] == "2026-03-01T12:00:00+00:00"
    assert document["publisher"] is False
    (spring,) = document["campaigns"]
    assert (spring["campaign_id"], spring["leader"], spring["stop"]) == ("spring", "B", True)
    assert [arm["arm"] for arm in spring["arms"]] == ["A", "B"]
    assert spring["arms"][1]["conversion_interval"] == [0.0689, 0.0929]
    assert [(u["kind"], u["segment"]) for u in document["uplift"]] == [
        ("churn_risk", "loyal"),
        ("churn_risk", ""),
    ]
    assert document["uplift"][0]["probability_positive"] == 0.993


async def test_the_endpoint_asks_for_the_reports_at_each_request(serve: Any) -> None:
    shown = [MarketingReports()]
    client = serve(lambda: shown[0])
    async with client:
        before = await (await client.get("/api/marketing")).json()
        shown[0] = MarketingReports(NOW, (campaign(),))
        after = await (await client.get("/api/marketing")).json()

    assert before["campaigns"] == [] and len(after["campaigns"]) == 1


async def test_before_the_first_metrics_tick_the_endpoint_says_nothing_was_computed(
    serve: Any,
) -> None:
    document = await get_marketing(serve(MarketingReports))

    assert document["computed_at"] is None
    assert document["campaigns"] == [] and document["uplift"] == []


async def test_the_marketing_document_names_no_customer() -> None:
    worker, _, _ = a_worker()
    for offset, customer in enumerate(("cust-secret-1", "cust-secret-2")):
        await touch(worker, customer, offset=offset)
    await worker.publish_campaign_metrics()

    document = worker.marketing_reports.document("w1", NOW)

    assert document["campaigns"][0]["arms"][0]["touches"] == 2  # both customers counted
    assert "cust-secret" not in json.dumps(document)
