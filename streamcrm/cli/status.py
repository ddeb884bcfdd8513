"""``streamcrm status``: every worker's newest report and the latest alerts, read from Kafka.

It reads ``crm.model-metrics`` from the beginning with a group-less consumer (nothing is
committed, nothing else sees it) and keeps each worker's newest report: model quality,
segment shares, outcomes and, since issue 7, the worker's traffic (rates, lag per partition,
records out, latency; :class:`~streamcrm.core.records.TopicMetrics`). Since issue 18 it also
reads the compacted ``crm.campaign-metrics`` and ``crm.uplift`` to their ends and keeps each
key's newest record (:func:`latest_by_key`): each campaign's arms and A/B test, and the uplift
of acting on alerts per kind and segment. The latest alerts come from the tail of
``crm.alerts``. :func:`status_view` lays all of it out with rich; :func:`format_status`
renders that to plain text.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from kafka import TopicPartition
from pydantic import ValidationError
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamcrm.core.events import WireRecord
from streamcrm.core.records import Alert, CampaignMetrics, ModelMetrics, UpliftMetrics
from streamcrm.services.kafka import Record, read_to_end, read_topic
from streamcrm.store import StateStore

R = TypeVar("R", bound=WireRecord)


def latest_reports(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, ModelMetrics]:
    """Each worker's newest report, reading the topic up to its end at call time
    (``client_options``: :func:`streamcrm.services.connections.kafka_client_options`)."""
    reports: dict[str, ModelMetrics] = {}
    for record in read_to_end(bootstrap, topic, timeout_s, client_options):
        if record.value:
            report = ModelMetrics.model_validate_json(record.value)
            reports[report.worker] = report
    return reports


def latest_by_key(records: Iterable[Record], model: type[R]) -> dict[str, R]:
    """The newest record of each key of a compacted topic, read in offset order (a key's
    records all sit in one partition): a later record replaces an earlier one and a
    tombstone (a null value) deletes its key. A record without a key or with an unreadable
    value is skipped, leaving what its key had.

    >>> from streamcrm.core.records import UpliftMetrics as U
    >>> def rec(key, value):
    ...     return Record("crm.uplift", 0, 0, key, value)
    >>> latest_by_key([rec(b"churn_risk|", b"not json"), rec(b"gone|", None)], U)
    {}
    """
    latest: dict[str, R] = {}
    for record in records:
        if record.key is None:
            continue
        key = record.key.decode("utf-8", errors="replace")
        if record.value is None:
            latest.pop(key, None)
            continue
        try:
            latest[key] = model.model_validate_json(record.value)
        except ValidationError:
            continue
    return latest


def latest_on_topic(
    bootstrap: str,
    topic: str,
    model: type[R],
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
    missing_ok: bool = False,
) -> dict[str, R]:
    """:func:`latest_by_key` of a compacted topic read up to its end at call time: what
    ``crm.campaign-metrics`` (:class:`CampaignMetrics`) and ``crm.uplift``
    (:class:`UpliftMetrics`) say now. Raises ``TimeoutError``, as
    :func:`~streamcrm.services.kafka.read_to_end`, and ``LookupError`` for a topic with no
    partitions unless ``missing_ok`` (then: nothing published yet)."""
    try:
        records = read_to_end(bootstrap, topic, timeout_s, client_options)
    except LookupError:
        if not missing_ok:
            raise
        return {}
    return latest_by_key(records, model)


async def without_erased(alerts: Sequence[Alert], store: StateStore) -> list[Alert]:
    """``alerts`` but those of customers erased since they were sent (the block list): the
    alerts topic keeps them for its retention, ``streamcrm status`` must not show them.
    Raises ``StoreUnavailableError``."""
    named = sorted({alert.customer_id for alert in alerts if alert.customer_id is not None})
    erased = await store.erased_among(named)
    return [alert for alert in alerts if alert.customer_id not in erased]


def latest_alerts(
    bootstrap: str,
    topic: str,
    count: int = 10,
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[Alert]:
    """The ``count`` alerts sent last (by Kafka timestamp: ``raised_at`` is event time for
    customer alerts), reading only the tail of each partition: its last ``count`` records (a
    few more against Tansu, whose end offsets read low; docs/tansu.md). Unreadable records
    are skipped."""
    if count <= 0:
        return []
    consumer = read_topic(bootstrap, topic, client_options=client_options)
    alerts: list[tuple[int, Alert]] = []
    try:
        partitions: list[TopicPartition] = sorted(consumer.assignment())
        ends = consumer.end_offsets(partitions)
        firsts = consumer.beginning_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(firsts[tp], ends[tp] - count))
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the tail of {topic} in {timeout_s:g} s")
            for batch in consumer.poll(timeout_ms=300).values():
                for message in batch:
                    try:
                        alerts.append((message.timestamp, Alert.model_validate_json(message.value)))
                    except (ValidationError, TypeError):  # unreadable, or a null value
                        continue
    finally:
        consumer.close()
    alerts.sort(key=lambda sent: sent[0], reverse=True)
    return [alert for _, alert in alerts[:count]]


def _figure(value: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counts.items()) or "–"


def _worker_view(report: ModelMetrics) -> RenderableType:
    """One worker's panel: traffic, partitions, model quality, segments."""
    r = report
    header = Text(r.worker, style="bold")
    header.append(f"\nreported {r.published_at:%Y-%m-%d %H:%M:%S}Z", style="dim")
    if r.event_time is not None:
        header.append(f", event time {r.event_time:%Y-%m-%d}", style="dim")

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="cyan", no_wrap=True)
    facts.add_column()
    traffic = r.topics
    if traffic is not None:
        facts.add_row(
            "rate", f"{traffic.events_per_s:,.1f} events/s over {traffic.rate_window_s:g} s"
        )
        lag = sum(p.lag or 0 for p in traffic.partitions)
        facts.add_row("lag", f"{lag:,} messages")
        facts.add_row(
            "latency",
            f"p50 {_seconds(traffic.latency_p50_s)}, p95 {_seconds(traffic.latency_p95_s)},"
            f" p99 {_seconds(traffic.latency_p99_s)} ({traffic.latency_count:,} scores)",
        )
        facts.add_row("records out", _counts(traffic.records_out))
    facts.add_row("models", r.model_version)
    facts.add_row("churn labels", f"{r.labelled_examples:,} ({r.churned_examples:,} churned)")
    facts.add_row(
        "ROC AUC",
        f"{_figure(r.roc_auc)} overall, {_figure(r.rolling_roc_auc)} over the newest 2,000",
    )
    facts.add_row(
        "Brier",
        f"{_figure(r.brier, '{:.4f}')} overall, {_figure(r.recent_brier, '{:.4f}')} recent;"
        f" log loss {_figure(r.log_loss, '{:.4f}')}",
    )
    drift = Text(f"{r.drifts_detected} detected")
    if r.model_drift:
        drift.append("  ** MODEL DRIFT since the previous report **", style="bold red")
    facts.add_row("drift", drift)
    shares = ", ".join(f"{name} {share:.0%}" for name, share in r.segment_shares.items())
    facts.add_row("segments", shares or "–")
    facts.add_row("messages", _counts(r.events))
    facts.add_row("dead letters", _counts(r.dead_letters))

    parts: list[RenderableType] = [header, facts]
    if traffic is not None and traffic.partitions:
        partitions = Table(box=None, padding=(0, 2), header_style="bold")
        for column in ("topic", "partition", "events in", "end", "committed", "lag"):
            partitions.add_column(column, justify="left" if column == "topic" else "right")
        for p in traffic.partitions:
            partitions.add_row(
                p.topic,
                str(p.partition),
                f"{p.events_in:,}",
                *(("–" if v is None else f"{v:,}") for v in (p.end_offset, p.committed, p.lag)),
            )
        parts.append(partitions)
    return Panel(Group(*parts), expand=True)


def _alerts_view(alerts: Sequence[Alert]) -> RenderableType:
    if not alerts:
        return Text("latest alerts: none")
    table = Table(title="latest alerts", title_justify="left", header_style="bold", expand=True)
    table.add_column("raised at", no_wrap=True)
    table.add_column("severity")
    table.add_column("kind")
    table.add_column("customer")
    table.add_column("scored")
    table.add_column("message", ratio=1)
    styles = {"critical": "bold red", "warning": "yellow"}
    for alert in alerts:
        table.add_row(
            f"{alert.raised_at:%Y-%m-%d %H:%M:%S}",
            Text(str(alert.severity), style=styles.get(str(alert.severity), "")),
            str(alert.kind),
            alert.customer_id or "(model)",
            "quiet" if (alert.event_id or "").startswith("asof:") else "event",
            alert.message,
        )
    return table


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _points(difference: float) -> str:
    """A difference of two rates in percentage points, signed."""
    return f"{difference * 100:+.1f}"


def _interval(low: float, high: float, fmt: Callable[[float], str] = _percent) -> str:
    return f"[{fmt(low)}, {fmt(high)}]"


def _campaign_view(report: CampaignMetrics) -> RenderableType:
    """One campaign's arms: touches and conversions, the conversion rate (posterior mean) and
    its 95 % interval, effect and ROI, P(best) and expected loss; the arm the stopping rule
    chose (or the leader) marked, and the decision beneath."""
    table = Table(
        title=f"campaign {report.campaign_id} (reported {report.published_at:%Y-%m-%d %H:%M:%S}Z)",
        title_justify="left",
        caption=report.decision,
        caption_justify="left",
        caption_style="bold green" if report.stop else "dim",
        header_style="bold",
        expand=True,
    )
    table.add_column("arm")
    for column in (
        "touches",
        "converted",
        "rate",
        "95 % interval",
        "effect",
        "ROI",
        "P(best)",
        "exp. loss",
    ):
        table.add_column(column, justify="right")
    for arm in report.arms:
        name = Text(arm.arm)
        if arm.arm == report.leader:
            name.append(" (chosen)" if report.stop else " (leader)", style="bold")
        table.add_row(
            name,
            f"{arm.touches:,}",
            f"{arm.conversions:,}",
            _percent(arm.conversion_rate),
            _interval(*arm.conversion_interval),
            f"{arm.effect:,.2f}",
            _figure(arm.roi, "{:+,.0%}"),
            _percent(arm.probability_best),
            f"{arm.expected_loss:.4f}",
        )
    return table


def _campaigns_view(campaigns: Mapping[str, CampaignMetrics]) -> list[RenderableType]:
    if not campaigns:
        return [Text("campaigns: no campaign reports published yet (no marketing touch counted)")]
    return [_campaign_view(report) for _, report in sorted(campaigns.items())]


def _uplift_order(report: UpliftMetrics) -> tuple[str, bool, str]:
    """Per alert kind, its segments by name, then all segments together."""
    return report.kind, report.segment == "", report.segment


def _uplift_view(uplift: Mapping[str, UpliftMetrics]) -> RenderableType:
    if not uplift:
        return Text(
            "uplift of acting on alerts: none published yet"
            " (an alert counts once its churn window has closed)"
        )
    table = Table(
        title="uplift of acting on alerts: retention (retained / alerts) of alerts acted on"
        " against control; retained: a purchase within the churn window",
        title_justify="left",
        header_style="bold",
        expand=True,
    )
    table.add_column("alert kind")
    table.add_column("segment")
    for column in ("acted on", "control", "uplift", "95 % interval", "P(uplift > 0)"):
        table.add_column(column, justify="right")
    for r in sorted(uplift.values(), key=_uplift_order):
        table.add_row(
            r.kind,
            r.segment or "(all)",
            f"{_percent(r.acted_rate)} ({r.acted_retained:,} / {r.acted_alerts:,})",
            f"{_percent(r.control_rate)} ({r.control_retained:,} / {r.control_alerts:,})",
            f"{_points(r.uplift)} pp",
            _interval(*r.uplift_interval, fmt=_points),
            _percent(r.probability_positive),
        )
    return table


def status_view(
    reports: Mapping[str, ModelMetrics],
    alerts: Iterable[Alert] = (),
    campaigns: Mapping[str, CampaignMetrics] | None = None,
    uplift: Mapping[str, UpliftMetrics] | None = None,
) -> list[RenderableType]:
    """What ``streamcrm status`` shows: a panel per worker, each campaign's A/B test, the
    uplift of acting on alerts, then the latest alerts. ``campaigns`` and ``uplift`` (by
    topic key, as :func:`latest_by_key` gives them): None leaves their section out, empty
    says nothing has been published yet."""
    marketing: list[RenderableType] = []
    if campaigns is not None:
        marketing.extend(_campaigns_view(campaigns))
    if uplift is not None:
        marketing.append(_uplift_view(uplift))
    if not reports:
        return [Text("no model-metrics reports yet: is a worker running?"), *marketing]
    views = [_worker_view(report) for _, report in sorted(reports.items())]
    return [*views, *marketing, _alerts_view(list(alerts))]


def format_status(
    reports: Mapping[str, ModelMetrics],
    alerts: Iterable[Alert] = (),
    width: int = 120,
    campaigns: Mapping[str, CampaignMetrics] | None = None,
    uplift: Mapping[str, UpliftMetrics] | None = None,
) -> str:
    """:func:`status_view` as plain text, ``width`` columns wide."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    for renderable in status_view(reports, alerts, campaigns, uplift):
        console.print(renderable)
    return console.export_text()
