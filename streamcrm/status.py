"""``streamcrm status``: the newest model-quality report of every worker, read from Kafka.

It reads ``crm.model-metrics`` from the beginning with a group-less consumer (nothing is
committed, nothing else sees it) and keeps each worker's newest report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streamcrm.events import ModelMetrics
from streamcrm.kafka_io import read_to_end


def latest_reports(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
) -> dict[str, ModelMetrics]:
    """Each worker's newest report, reading the topic up to its end at call time
    (``client_options``: :func:`streamcrm.connections.kafka_client_options`)."""
    reports: dict[str, ModelMetrics] = {}
    for record in read_to_end(bootstrap, topic, timeout_s, client_options):
        if record.value:
            report = ModelMetrics.model_validate_json(record.value)
            reports[report.worker] = report
    return reports


def _figure(value: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def format_status(reports: Mapping[str, ModelMetrics]) -> str:
    """One block per worker: model version, churn-model quality, drift, segment shares."""
    if not reports:
        return "no model-metrics reports yet: is a worker running?"
    blocks: list[str] = []
    for worker, r in sorted(reports.items()):
        shares = ", ".join(f"{name} {share:.0%}" for name, share in r.segment_shares.items())
        events: Iterable[str] = (f"{k} {v}" for k, v in r.events.items())
        blocks.append(
            "\n".join(
                [
                    f"{worker}  (reported {r.published_at:%Y-%m-%d %H:%M:%S}Z,"
                    f" event time {r.event_time:%Y-%m-%d} )"
                    if r.event_time
                    else f"{worker}  (reported {r.published_at:%Y-%m-%d %H:%M:%S}Z)",
                    f"  models          {r.model_version}",
                    f"  churn labels    {r.labelled_examples} ({r.churned_examples} churned)",
                    f"  ROC AUC         {_figure(r.roc_auc)} overall,"
                    f" {_figure(r.rolling_roc_auc)} over the newest 2,000",
                    f"  Brier           {_figure(r.brier, '{:.4f}')} overall,"
                    f" {_figure(r.recent_brier, '{:.4f}')} recent;"
                    f" log loss {_figure(r.log_loss, '{:.4f}')}",
                    f"  drift           {r.drifts_detected} detected"
                    + ("  ** MODEL DRIFT since the previous report **" if r.model_drift else ""),
                    f"  segments        {shares or '–'}",
                    f"  messages        {', '.join(events) or '–'}",
                ]
            )
        )
    return "\n\n".join(blocks)
