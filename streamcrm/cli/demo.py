"""``streamcrm demo``: the whole product on one machine, with scores printed as they flow.

A worker process consumes the input topics; a producer thread replays a seeded simulated
history in *accelerated event time* (``days_per_second``) as if it were live; the main thread
reads ``crm.scores`` and prints a table of the customers most at risk, then a summary that
scores the scorer against the simulator's ground truth. The worker serves the live dashboard
(:mod:`streamcrm.worker.dashboard`) on ``settings.web_port``; its address is printed first.
"""

from __future__ import annotations

import math
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TextIO

from streamcrm.bench.churn import oracle_auc
from streamcrm.core.records import CustomerScore, ModelMetrics
from streamcrm.models.metrics import roc_auc
from streamcrm.services.connections import kafka_client_options
from streamcrm.services.kafka import (
    ensure_topics,
    make_producer,
    poll_records,
    produce_events,
    read_topic,
)
from streamcrm.services.processes import start_worker_process, stop_worker_process
from streamcrm.settings import Settings
from streamcrm.sim.simulator import CustomerTruth, Simulation, simulate
from streamcrm.worker.dashboard import dashboard_url

TARGET_RATIO = 0.9
"""Issue 15's target: progressive ROC AUC at least this share of the oracle's."""

QUIET_PERIOD_S = 8.0
"""After the last event is sent, stop once no score has arrived for this long."""


def run_live_demo(
    settings: Settings,
    *,
    customers: int,
    days: int,
    days_per_second: float,
    seed: int,
    refresh_s: float,
    keep_serving: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Run worker + live simulated events + a score view until the simulation has played.

    With ``keep_serving`` the worker (and so its dashboard) keeps running after that, until
    the worker stops or the user presses Ctrl-C.
    """
    assert settings.kafka_bootstrap is not None and settings.redis_url is not None
    ensure_topics(settings, settings.kafka_bootstrap)
    # The simulated period ends today: a live worker refuses events dated in the future.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    simulation = simulate(
        customers=customers, days=days, seed=seed, start=today - timedelta(days=days)
    )
    log_path = settings.data_dir / "demo-worker.log"
    if settings.web_port is not None:
        print(
            f"\n  dashboard: {dashboard_url(settings.web_port)}"
            "   <- open in a browser: live charts, alerts, customer pages\n",
            file=out,
            flush=True,
        )
    print(
        f"streamcrm demo: {customers} simulated customers, {len(simulation.events):,} events over "
        f"{days} days, played at {days_per_second:g} days/s\n"
        f"  broker  {settings.kafka_bootstrap}   redis  {settings.redis_url_for_logs}\n"
        f"  worker log  {log_path}\n"
        f"  inspect one customer:  STREAMCRM_REDIS_URL={settings.redis_url_for_logs} "
        f"streamcrm score cust-00001\n",
        file=out,
        flush=True,
    )
    worker = start_worker_process(settings, log_path)
    producer = _LiveProducer(settings, simulation, days_per_second)
    security = kafka_client_options(settings)
    consumer = read_topic(settings.kafka_bootstrap, settings.topics.scores, client_options=security)
    metrics_consumer = read_topic(
        settings.kafka_bootstrap, settings.topics.model_metrics, client_options=security
    )
    latest: dict[str, CustomerScore] = {}
    quality: list[ModelMetrics] = []
    received = 0
    started = time.monotonic()
    first_score_after: float | None = None
    try:
        producer.start()
        next_refresh = time.monotonic() + refresh_s
        last_arrival = time.monotonic()
        while True:
            for record in poll_records(consumer, timeout_ms=200):
                if record.value is None:
                    continue
                score = CustomerScore.model_validate_json(record.value)
                latest[score.customer_id] = score
                received += 1
                last_arrival = time.monotonic()
                if first_score_after is None:
                    first_score_after = last_arrival - started
            for record in poll_records(metrics_consumer, timeout_ms=0):
                if record.value is not None:
                    quality.append(ModelMetrics.model_validate_json(record.value))
            now = time.monotonic()
            if now >= next_refresh:
                print(_view(latest, received, producer, simulation.truth, now - started), file=out)
                if quality:
                    print(_model_quality(quality[-1]), file=out)
                out.flush()
                next_refresh = now + refresh_s
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}; see {log_path}", file=out)
                return 1
            if producer.done and now - last_arrival > QUIET_PERIOD_S:
                break
        elapsed = time.monotonic() - started
        print(_view(latest, received, producer, simulation.truth, elapsed), file=out)
        print(_summary(latest, simulation.truth, first_score_after), file=out, flush=True)
        if quality:
            print(_model_quality(quality[-1]), file=out, flush=True)
        print("  measuring the oracle on an in-process replay of the same history...", file=out)
        oracle, oracle_labels = oracle_auc(simulation, settings.scoring)
        print(
            ceiling_line(
                quality[-1].roc_auc if quality else None,
                quality[-1].labelled_examples if quality else 0,
                oracle,
                oracle_labels,
            ),
            file=out,
            flush=True,
        )
        if keep_serving and settings.web_port is not None:
            _serve_until_interrupted(worker, dashboard_url(settings.web_port), out)
    finally:
        producer.stop()
        consumer.close()
        metrics_consumer.close()
        stop_worker_process(worker)
    return 0


def _serve_until_interrupted(worker: subprocess.Popen[bytes], url: str, out: TextIO) -> None:
    """Keep the worker, and so its dashboard, up until Enter, Ctrl-C or the worker stops.

    Enter is the clean way: Ctrl-C reaches the embedded broker and Redis as well, so the
    worker then shuts down without them (and slowly).
    """
    print(
        f"\nthe simulation has played; the dashboard stays up at {url}\n"
        "press Enter (or Ctrl-C) to stop",
        file=out,
        flush=True,
    )
    try:
        while worker.poll() is None:
            ready, _, _ = select.select([sys.stdin], [], [], 0.5)
            if ready:
                sys.stdin.readline()
                break
    except KeyboardInterrupt:
        pass
    print("stopping", file=out, flush=True)


def _model_quality(report: ModelMetrics) -> str:
    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"  churn model {report.model_version}: progressive ROC AUC {figure(report.roc_auc)}, "
        f"log loss {figure(report.log_loss)}, Brier {figure(report.brier)} over "
        f"{report.labelled_examples:,} labels ({report.churned_examples:,} churned)"
    )


class _LiveProducer(threading.Thread):
    """Sends the simulated events when their (accelerated) event time comes."""

    def __init__(self, settings: Settings, simulation: Simulation, days_per_second: float) -> None:
        super().__init__(name="simulated-live-events", daemon=True)
        self.settings = settings
        self.events = simulation.events
        self.seconds_per_day = 1.0 / days_per_second
        self.sent = 0
        self.done = False
        self._stopping = threading.Event()

    def run(self) -> None:
        assert self.settings.kafka_bootstrap is not None
        producer = make_producer(self.settings.kafka_bootstrap, kafka_client_options(self.settings))
        try:
            if not self.events:
                return
            origin = self.events[0].occurred_at
            started = time.monotonic()
            for event in self.events:
                due = started + (event.occurred_at - origin).total_seconds() / 86_400 * (
                    self.seconds_per_day
                )
                if self._stopping.wait(max(due - time.monotonic(), 0.0)):
                    return
                produce_events(producer, self.settings, [event])
                self.sent += 1
            producer.flush()
        finally:
            producer.close()
            self.done = True

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)


def _view(
    latest: Mapping[str, CustomerScore],
    received: int,
    producer: _LiveProducer,
    truth: Mapping[str, CustomerTruth],
    elapsed: float,
) -> str:
    lines = [
        f"\n[{elapsed:5.0f}s] events sent {producer.sent:,}/{len(producer.events):,}   "
        f"scores received {received:,}   customers scored {len(latest):,}"
    ]
    if not latest:
        lines.append("  waiting for the first scores (the worker is joining its consumer group)")
        return "\n".join(lines)
    newest = max(latest.values(), key=lambda s: s.as_of)
    segments = Counter(score.segment_name for score in latest.values())
    active = [score for score in latest.values() if not score.cancelled]
    lines.append(
        f"  event time {newest.as_of:%Y-%m-%d}   model {newest.model_version}   "
        f"cancelled {len(latest) - len(active)}   segments "
        + ", ".join(f"{name} {count}" for name, count in segments.most_common())
    )
    lines.append("  most at risk among active customers:")
    lines.append(
        f"  {'customer':<12}{'churn':>7}{'segment':>13}{'health':>8}{'CLV':>10}"
        f"{'satisf.':>9}{'orders':>8}{'recency':>9}  truth"
    )
    at_risk = sorted(active, key=lambda s: s.churn_probability, reverse=True)[:8]
    for score in at_risk:
        satisfaction = "-" if score.satisfaction_mean is None else f"{score.satisfaction_mean:.2f}"
        recency = "-" if score.recency_days is None else f"{score.recency_days:.0f}d"
        actual = truth.get(score.customer_id)
        lines.append(
            f"  {score.customer_id:<12}{score.churn_probability:>7.0%}{score.segment_name:>13}"
            f"{score.health:>8.0f}{score.clv_discounted:>10,.0f}{satisfaction:>9}"
            f"{score.frequency:>8}{recency:>9}  {'churns' if actual and actual.churns else 'stays'}"
        )
    return "\n".join(lines)


def _summary(
    latest: Mapping[str, CustomerScore],
    truth: Mapping[str, CustomerTruth],
    first_score_after: float | None,
) -> str:
    known = [c for c in latest if c in truth]
    auc = roc_auc([truth[c].churns for c in known], [latest[c].churn_probability for c in known])
    first = "never" if first_score_after is None else f"{first_score_after:.1f}s after start"
    return (
        f"\nsummary: {len(latest)} customers scored; first score {first}; "
        f"ROC AUC of each customer's last published churn probability against the "
        f"simulator's truth: {'n/a' if math.isnan(auc) else f'{auc:.3f}'} (a quiet customer's "
        "last score is a re-score as of event time, made every 7 days of silence until lapsed "
        "at 180: see docs/scores.md)"
    )


def ceiling_line(
    model_auc: float | None, model_labels: int, oracle: float, oracle_labels: int
) -> str:
    """The churn model's progressive ROC AUC set against the oracle's (the best the
    simulator's truth allows, :mod:`streamcrm.sim.oracle`) and their ratio.

    The live figure is River's running ROC AUC on the worker's labels; the oracle's is exact,
    on the labels of an in-process replay of the same history (the same ledger rules, so about
    the same labels: both counts are shown).

    >>> print(ceiling_line(0.62, 3300, 0.836, 3315))
      churn model vs oracle: progressive ROC AUC 0.620 (3,300 labels), oracle 0.836
        (3,315 labels), ratio 0.74 (target 0.90)
    >>> print(ceiling_line(None, 0, 0.836, 3315))
      churn model vs oracle: progressive ROC AUC n/a (0 labels), oracle 0.836
        (3,315 labels), ratio n/a (target 0.90)
    """
    figure = "n/a" if model_auc is None else f"{model_auc:.3f}"
    ratio = "n/a" if model_auc is None or not oracle > 0 else f"{model_auc / oracle:.2f}"
    return (
        f"  churn model vs oracle: progressive ROC AUC {figure} ({model_labels:,} labels), "
        f"oracle {oracle:.3f}\n    ({oracle_labels:,} labels), ratio {ratio} (target "
        f"{TARGET_RATIO:.2f})"
    )
