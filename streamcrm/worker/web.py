"""The worker's HTTP API on Faust's web server, and what feeds its topic metrics.

Routes (served on ``settings.web_port``; the contract is in docs/metrics.md):

=============================  ==================================================================
``GET /metrics``               Prometheus text exposition (:mod:`streamcrm.worker.metrics`)
``GET /healthz``               200 ``{"status": "ok"}`` while the process serves
``GET /readyz``                200 when broker and Redis answer and partitions are assigned,
                               else 503 ``{"ready": false, "checks": {...}}``
``GET /customers/{id}``        the customer's state, latest score and score history; 404 unknown
``GET /api/overview``          throughput and lag over time, partitions, outcomes, churn risk,
                               segments, latest alerts, model quality (the dashboard's source)
``GET /api/marketing``         the newest campaign reports (A/B tests) and uplift of acting on
                               alerts this worker computed (:class:`MarketingReports`)
=============================  ==================================================================

A Faust sensor counts messages in (per topic and partition) and records out (per topic) as
Faust sees them, so no send site counts anything; a timer reads consumer positions and takes
one point of the throughput and lag series every :data:`SAMPLE_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from streamcrm.core.records import Alert, CampaignMetrics, CustomerScore, UpliftMetrics
from streamcrm.core.scoring import ScoredEvent
from streamcrm.errors import StoreUnavailableError
from streamcrm.store import StateStore
from streamcrm.worker.learning import MODEL_CHECKPOINT
from streamcrm.worker.metrics import PartitionPosition, WorkerMetrics
from streamcrm.worker.pipeline import BatchOutcome, InputMessage, ScoringPipeline

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 2.0
"""How often consumer positions are read and a throughput and lag point is taken."""
PROBE_TIMEOUT_S = 2.0
"""How long a readiness check or a position read may take before it counts as failed."""


class TrafficSensor(faust.Sensor):
    """Counts every message Faust consumes and every record it produces into ``metrics``.

    Faust calls these hooks once a message, whatever the agent; a record produced with the
    bare ``app.producer.send`` (the erasure tombstone) bypasses them and is counted where it
    is sent.
    """

    def __init__(self, metrics: WorkerMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        self.metrics.count_in(tp.topic, tp.partition)

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        self.metrics.count_out(topic)
        return None


def message_timestamp(message: InputMessage) -> float | None:
    """The Kafka timestamp of a message, in epoch seconds (None for a re-read record)."""
    timestamp = getattr(message, "timestamp", None)
    return float(timestamp) if isinstance(timestamp, int | float) and timestamp > 0 else None


def scored_in(
    messages: Sequence[InputMessage], outcomes: Sequence[BatchOutcome]
) -> Iterator[tuple[float | None, CustomerScore]]:
    """Each new score of a handled batch with its input message's timestamp."""
    for message, outcome in zip(messages, outcomes, strict=False):
        if isinstance(outcome, ScoredEvent) and outcome.score is not None:
            yield message_timestamp(message), outcome.score


async def partition_positions(consumer: Any, topics: Iterable[str]) -> list[PartitionPosition]:
    """End and committed offsets of the partitions of ``topics`` assigned to ``consumer``.

    The end offset is the larger of the broker's answer to ListOffsets (``highwaters``) and
    the high-water mark of the last fetch response: against Tansu the first reads up to one
    batch low (docs/tansu.md). The committed offset is the one Faust last committed (or found
    committed at assignment): the next offset to read.
    """
    wanted = set(topics)
    assigned = sorted(tp for tp in consumer.assignment() if tp.topic in wanted)
    if not assigned:
        return []
    listed = await consumer.highwaters(*assigned)
    positions = []
    for tp in assigned:
        ends = [end for end in (listed.get(tp), consumer.highwater(tp)) if end is not None]
        committed = consumer._committed_offset.get(tp)  # Faust keeps no public accessor
        positions.append(
            PartitionPosition(tp.topic, tp.partition, max(ends) if ends else None, committed)
        )
    return positions


@dataclass(frozen=True)
class MarketingReports:
    """The newest campaign and uplift reports a worker computed, for ``GET /api/marketing``.

    Every worker computes them at each metrics tick, from the campaign and retention figures
    of every input partition summed in Redis (the store all workers share), though only the
    owner of partition 0 of the marketing topic publishes them: so every worker's dashboard
    shows the same figures as ``crm.campaign-metrics`` and ``crm.uplift``, give or take one
    metrics interval, whichever worker a browser reaches. They are sums: no customer id.
    """

    computed_at: datetime | None = None
    """When they were computed (None: not yet, the first metrics tick has not come)."""
    campaigns: tuple[CampaignMetrics, ...] = ()
    """One report per campaign with a touch, by campaign id."""
    uplift: tuple[UpliftMetrics, ...] = ()
    """Per alert kind, each segment's uplift then all segments' (``segment`` ``""``)."""
    publisher: bool = False
    """Whether this worker is the one publishing them (it owns marketing partition 0)."""

    def document(self, worker: str, now: datetime) -> dict[str, Any]:
        """The ``GET /api/marketing`` document (docs/metrics.md).

        >>> MarketingReports().document("w1", datetime(2026, 3, 1, tzinfo=UTC))["campaigns"]
        []
        """
        return {
            "worker": worker,
            "generated_at": now.astimezone(UTC).isoformat(),
            "computed_at": None
            if self.computed_at is None
            else self.computed_at.astimezone(UTC).isoformat(),
            "publisher": self.publisher,
            "campaigns": [report.model_dump(mode="json") for report in self.campaigns],
            "uplift": [report.model_dump(mode="json") for report in self.uplift],
        }


def register_web_views(
    app: faust.App,
    pipeline: ScoringPipeline,
    metrics: WorkerMetrics,
    watched_topics: Iterable[str],
    recent_alerts: deque[Alert] | None = None,
    marketing_reports: Callable[[], MarketingReports] = MarketingReports,
) -> None:
    """Add the traffic sensor, the sampling timer and the HTTP routes to ``app``.

    ``watched_topics``: the consumed topics whose positions (and lag) are reported.
    ``recent_alerts``: the alerts the worker sent, newest last, kept up to date by the caller
    (``/api/overview`` shows them). Before each overview, the customers it would show are
    checked against the erasure block list and the erased ones forgotten
    (:func:`forget_erased`), so no worker serves a customer erased by another.
    ``marketing_reports``: the worker's newest campaign and uplift reports, asked at each
    request (``/api/marketing``; none by default).
    """
    alerts_shown: deque[Alert] = deque() if recent_alerts is None else recent_alerts
    watched = tuple(watched_topics)
    app.sensors.add(TrafficSensor(metrics))
    broker_seen: list[float] = []
    """Monotonic time of the last successful position read (one element once there is one)."""

    async def read_positions() -> bool:
        """Read the positions; True when there were partitions to ask the broker about."""
        positions = await asyncio.wait_for(
            partition_positions(app.consumer, watched), PROBE_TIMEOUT_S
        )
        metrics.set_positions(positions)
        if positions:
            broker_seen[:] = [time.monotonic()]
        return bool(positions)

    async def sample_traffic() -> None:
        # A timer that raises stops the app: a failed read keeps the previous positions.
        try:
            await read_positions()
        except Exception as error:  # noqa: BLE001 - not started yet, rebalancing, broker away
            logger.debug("consumer positions not read: %r", error)
        metrics.sample(datetime.now(UTC))

    app.timer(SAMPLE_INTERVAL_S, name="sample-topic-metrics")(sample_traffic)

    async def readiness() -> dict[str, bool]:
        try:
            assigned = bool(app.consumer.assignment())
        except Exception:  # noqa: BLE001 - the consumer has not started
            assigned = False
        try:
            # With nothing to ask about, the broker counts as reachable if it answered lately.
            broker = await read_positions() or (
                bool(broker_seen) and time.monotonic() - broker_seen[0] < 3 * SAMPLE_INTERVAL_S
            )
        except Exception:  # noqa: BLE001 - any failure means not reachable
            broker = False
        try:
            await asyncio.wait_for(
                pipeline.store.load_model_version(MODEL_CHECKPOINT), PROBE_TIMEOUT_S
            )
            store = True
        except Exception:  # noqa: BLE001 - any failure means not reachable
            store = False
        return {"broker": broker, "redis": store, "partitions_assigned": assigned}

    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    class Ready(View):
        async def get(self, request: Request) -> Response:
            checks = await readiness()
            ready = all(checks.values())
            return self.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            document = await customer_document(pipeline, customer_id)
            if document is None:
                return self.json({"error": f"no customer {customer_id!r}"}, status=404)
            return self.json(document)

    class Overview(View):
        async def get(self, request: Request) -> Response:
            try:
                await forget_erased(pipeline.store, metrics, alerts_shown)
            except StoreUnavailableError as error:
                # Fail closed: without the block list, an erased customer could be shown.
                return self.json({"error": f"cannot check erasures: {error}"}, status=503)
            return self.json(
                metrics.overview(datetime.now(UTC), list(alerts_shown), pipeline.models.version)
            )

    class Marketing(View):
        async def get(self, request: Request) -> Response:
            """The newest campaign and uplift reports this worker computed: every worker
            computes them from the figures all share in Redis, so any worker answers with
            what ``crm.campaign-metrics`` and ``crm.uplift`` carry (see
            :class:`MarketingReports`). They hold no customer id: nothing to check against
            the erasure block list."""
            return self.json(marketing_reports().document(metrics.worker, datetime.now(UTC)))

    app.page("/metrics", name="streamcrm-metrics")(Metrics)
    app.page("/healthz", name="streamcrm-healthz")(Health)
    app.page("/readyz", name="streamcrm-readyz")(Ready)
    app.page("/customers/{customer_id}", name="streamcrm-customer")(Customer)
    app.page("/api/overview", name="streamcrm-overview")(Overview)
    app.page("/api/marketing", name="streamcrm-marketing")(Marketing)


def forget_customers(
    customer_ids: Collection[str], metrics: WorkerMetrics, recent_alerts: deque[Alert]
) -> None:
    """Drop every in-memory copy of these (erased) customers the web views read: their
    recent scores and their alerts."""
    metrics.recent.forget(customer_ids)
    kept = [alert for alert in recent_alerts if alert.customer_id not in customer_ids]
    if len(kept) != len(recent_alerts):
        recent_alerts.clear()
        recent_alerts.extend(kept)


async def forget_erased(
    store: StateStore, metrics: WorkerMetrics, recent_alerts: deque[Alert]
) -> set[str]:
    """Forget the customers held in memory that the store's block list says are erased (by
    any worker); returns them. Raises ``StoreUnavailableError``."""
    shown = set(metrics.recent.customer_ids())
    shown.update(alert.customer_id for alert in recent_alerts if alert.customer_id is not None)
    erased = await store.erased_among(sorted(shown))
    if erased:
        forget_customers(erased, metrics, recent_alerts)
    return erased


async def customer_document(pipeline: ScoringPipeline, customer_id: str) -> dict[str, Any] | None:
    """``GET /customers/{id}``: state, latest score and score history; None if unknown."""
    state = await pipeline.store.load(customer_id)
    if state is None:
        return None
    score = await pipeline.store.load_score(customer_id)
    document = state.model_dump(mode="json")
    return {
        "customer_id": customer_id,
        "state": document,
        "score": score.model_dump(mode="json") if score is not None else None,
        "history": document["score_history"],
    }
