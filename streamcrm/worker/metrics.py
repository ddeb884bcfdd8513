"""A worker's topic metrics: counts, rates, consumer lag, latency and recent scores.

Pure bookkeeping, fed by the worker's adapter (:mod:`streamcrm.worker.web`): it counts what Faust
reports, samples consumer positions on a timer, and turns all of it into three views of the
same figures:

* the Prometheus text of ``GET /metrics``, from a per-worker ``CollectorRegistry`` whose one
  collector reads the counters at scrape time (so the hot path only bumps plain counters);
* the JSON document of ``GET /api/overview`` (:meth:`WorkerMetrics.overview`);
* :class:`~streamcrm.core.records.TopicMetrics`, sent inside the worker's periodic
  :class:`~streamcrm.core.records.ModelMetrics` report, for readers with Kafka alone.

Every metric name, its type, labels and meaning: docs/metrics.md (and :data:`METRIC_NAMES`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from streamcrm.core.records import (
    Alert,
    CustomerScore,
    ModelMetrics,
    PartitionMetrics,
    TopicMetrics,
)

LATENCY_BUCKETS_S: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds of the end-to-end latency histogram, in seconds (+Inf follows)."""

METRIC_NAMES: Final = (
    "streamcrm_events_in_total",
    "streamcrm_event_outcomes_total",
    "streamcrm_dead_letters_total",
    "streamcrm_privacy_requests_failed_total",
    "streamcrm_records_out_total",
    "streamcrm_partition_end_offset",
    "streamcrm_partition_committed_offset",
    "streamcrm_consumer_lag_messages",
    "streamcrm_processing_rate_events_per_second",
    "streamcrm_end_to_end_latency_seconds",
    "streamcrm_model_info",
    "streamcrm_model_labelled_examples",
    "streamcrm_model_churned_examples",
    "streamcrm_model_roc_auc",
    "streamcrm_model_rolling_roc_auc",
    "streamcrm_model_log_loss",
    "streamcrm_model_brier",
    "streamcrm_model_drifts_detected_total",
    "streamcrm_segment_share_ratio",
)
"""Every metric a worker exposes (histogram and counter names as scraped)."""


def consumer_lag(end_offset: int | None, committed: int | None) -> int | None:
    """Messages of a partition the group has not committed yet: ``end_offset - committed``.

    None when either offset is unknown (nothing fetched or committed yet). Never below 0:
    Tansu's end offsets can read up to one batch low (docs/tansu.md), and a group cannot be
    ahead of its partition.

    >>> consumer_lag(120, 100)
    20
    >>> consumer_lag(None, 100) is None, consumer_lag(120, None) is None
    (True, True)
    >>> consumer_lag(98, 100)
    0
    """
    if end_offset is None or committed is None:
        return None
    return max(0, end_offset - committed)


@dataclass(frozen=True)
class PartitionPosition:
    """Where one consumed partition stands: its end and the group's committed offset."""

    topic: str
    partition: int
    end_offset: int | None
    committed: int | None

    @property
    def lag(self) -> int | None:
        """See :func:`consumer_lag`."""
        return consumer_lag(self.end_offset, self.committed)


class RateWindow:
    """Events per second over a sliding window, from samples of a running total.

    The oldest sample kept is the newest one at or before the window's start, so the rate
    always spans the whole window once there is that much history.

    >>> rate = RateWindow(window_s=10)
    >>> for second in range(31):
    ...     rate.record(float(second), 5 * second)  # 5 events a second
    >>> rate.per_second()
    5.0
    >>> rate.record(31.0, 150)  # then a second with nothing: the window still holds 45
    >>> round(rate.per_second(), 2)
    4.5
    """

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, at: float, total: int) -> None:
        """Note the running total at time ``at`` (seconds, non-decreasing)."""
        self._samples.append((at, total))
        start = at - self.window_s
        while len(self._samples) > 1 and self._samples[1][0] <= start:
            self._samples.popleft()

    def per_second(self) -> float:
        """The rate over the samples in the window; 0.0 with fewer than two."""
        if len(self._samples) < 2:
            return 0.0
        (first_at, first_total), (last_at, last_total) = self._samples[0], self._samples[-1]
        span = last_at - first_at
        return (last_total - first_total) / span if span > 0 else 0.0


class BucketHistogram:
    """Observations counted into buckets with inclusive upper bounds, Prometheus-style.

    >>> latency = BucketHistogram((0.1, 0.5, 1.0))
    >>> for seconds in (0.05, 0.1, 0.3, 0.7, 2.0):
    ...     latency.observe(seconds)
    >>> latency.cumulative()
    [(0.1, 2), (0.5, 3), (1.0, 4), (inf, 5)]
    >>> latency.quantile(0.5)  # rank 2.5 falls halfway into the (0.1, 0.5] bucket
    0.3
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        """Per bucket, not cumulative; the last is the +Inf bucket."""
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, +Inf last."""
        running, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated linearly inside its bucket (as Prometheus'
        ``histogram_quantile``); the largest finite bound when it falls in +Inf; None
        before any observation."""
        if self.count == 0:
            return None
        rank = q * self.count
        below = 0
        for index, count in enumerate(self.counts):
            if count and below + count >= rank:
                if index == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[index - 1] if index > 0 else 0.0
                upper = self.bounds[index]
                return round(lower + (upper - lower) * (rank - below) / count, 12)
            below += count
        return self.bounds[-1]


def churn_risk_histogram(probabilities: Iterable[float], bins: int = 10) -> dict[str, list[Any]]:
    """Counts of churn probabilities in ``bins`` equal bins over [0, 1] (1.0 in the last).

    >>> churn_risk_histogram([0.05, 0.15, 0.12, 1.0], bins=4)
    {'edges': [0.0, 0.25, 0.5, 0.75, 1.0], 'counts': [3, 0, 0, 1]}
    """
    counts = [0] * bins
    for probability in probabilities:
        counts[min(bins - 1, max(0, int(probability * bins)))] += 1
    return {"edges": [index / bins for index in range(bins + 1)], "counts": counts}


@dataclass(frozen=True)
class MapPoint:
    """What the dashboard's segment map needs of one score (not the state's history point,
    ``streamcrm.core.state.ScorePoint``)."""

    customer_id: str
    recency_days: float | None
    monetary: float
    segment_name: str
    churn_probability: float
    trigger: str = "event"
    """What made the score: an event, or the passage of time (a quiet customer's re-score)."""
    usual_gap_days: float | None = None

    @classmethod
    def of(cls, score: CustomerScore) -> MapPoint:
        return cls(
            score.customer_id,
            score.recency_days,
            score.monetary,
            score.segment_name,
            score.churn_probability,
            score.trigger,
            score.usual_gap_days,
        )


class RecentScores:
    """The latest score of each of the ``capacity`` customers scored most recently."""

    def __init__(self, capacity: int = 2_000) -> None:
        self.capacity = capacity
        self._latest: OrderedDict[str, MapPoint] = OrderedDict()

    def __len__(self) -> int:
        return len(self._latest)

    def add(self, point: MapPoint) -> None:
        """Keep ``point`` as its customer's latest; forget the customer scored longest ago."""
        self._latest.pop(point.customer_id, None)
        self._latest[point.customer_id] = point
        while len(self._latest) > self.capacity:
            self._latest.popitem(last=False)

    def customer_ids(self) -> list[str]:
        """The customers kept."""
        return list(self._latest)

    def forget(self, customer_ids: Iterable[str]) -> None:
        """Drop these customers (erased): no view shows them again."""
        for customer_id in customer_ids:
            self._latest.pop(customer_id, None)

    def points(self, limit: int = 500) -> list[MapPoint]:
        """The ``limit`` customers scored most recently, oldest first."""
        return list(self._latest.values())[-limit:] if limit > 0 else []

    def most_at_risk(self, count: int = 10) -> list[MapPoint]:
        """The ``count`` customers kept with the highest churn probability, highest first
        (quiet customers included: their re-scores are kept like any score)."""
        return sorted(self._latest.values(), key=lambda p: -p.churn_probability)[:count]

    def segment_shares(self) -> dict[str, float]:
        """Each segment's share among the customers kept, by segment name.

        >>> recent = RecentScores()
        >>> for customer, segment in [("a", "loyal"), ("b", "at risk"), ("a", "champions")]:
        ...     recent.add(MapPoint(customer, 3.0, 10.0, segment, 0.2))
        >>> recent.segment_shares()  # a moved from loyal to champions
        {'at risk': 0.5, 'champions': 0.5}
        """
        counts = Counter(point.segment_name for point in self._latest.values())
        total = sum(counts.values())
        return {name: counts[name] / total for name in sorted(counts)}

    def churn_risk(self, bins: int = 10) -> dict[str, list[Any]]:
        """:func:`churn_risk_histogram` of the customers kept."""
        return churn_risk_histogram((p.churn_probability for p in self._latest.values()), bins)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class WorkerMetrics:
    """Every traffic figure of one worker, and its Prometheus registry.

    ``outcomes`` and ``dead_letters`` are the pipeline's own running counters (by outcome,
    by reason code), read at scrape time rather than counted twice. ``input_topics`` are the
    topics whose partitions make up throughput and lag.
    """

    def __init__(
        self,
        worker: str,
        input_topics: Iterable[str],
        outcomes: Mapping[str, int],
        dead_letters: Mapping[str, int],
        rate_window_s: float = 60.0,
        history_s: float = 900.0,
        sample_interval_s: float = 5.0,
        started_at: datetime | None = None,
    ) -> None:
        """``started_at``: when counting began, the base of the first throughput point (else
        the first sample is the base, and counts before it show in no point)."""
        self.worker = worker
        self.input_topics = frozenset(input_topics)
        self.outcomes = outcomes
        self.dead_letters = dead_letters
        self.sample_interval_s = sample_interval_s
        self.events_in: Counter[tuple[str, int]] = Counter()
        """Messages consumed since start, by topic and partition."""
        self.records_out: Counter[str] = Counter()
        """Records produced since start, by topic."""
        self.privacy_failures: Counter[str] = Counter()
        """Erasure and consent requests dead-lettered since start, by reason code."""
        self.latency = BucketHistogram(LATENCY_BUCKETS_S)
        """Seconds from an input message's Kafka timestamp to its score being sent."""
        self.positions: dict[tuple[str, int], PartitionPosition] = {}
        self.rate = RateWindow(rate_window_s)
        points = max(2, round(history_s / sample_interval_s))
        self.throughput: deque[tuple[datetime, float]] = deque(maxlen=points)
        self.lag_history: deque[tuple[datetime, int]] = deque(maxlen=points)
        self.recent = RecentScores()
        self.model: ModelMetrics | None = None
        """The worker's newest model-quality report."""
        self._last_sample: tuple[float, int] | None = None
        if started_at is not None:
            self._last_sample = (started_at.timestamp(), 0)
            self.rate.record(started_at.timestamp(), 0)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- fed by the adapter ---------------------------------------------------------------

    def count_in(self, topic: str, partition: int, messages: int = 1) -> None:
        self.events_in[topic, partition] += messages

    def count_out(self, topic: str, records: int = 1) -> None:
        self.records_out[topic] += records

    def note_scores(
        self, scored: Iterable[tuple[float | None, CustomerScore]], sent_at: float
    ) -> None:
        """Scores sent at ``sent_at`` (epoch seconds), each with its input message's Kafka
        timestamp (epoch seconds, None when unknown): latency and the recent-score sample."""
        for timestamp, score in scored:
            if timestamp is not None and timestamp > 0:
                self.latency.observe(max(0.0, sent_at - timestamp))
            self.recent.add(MapPoint.of(score))

    def set_positions(self, positions: Iterable[PartitionPosition]) -> None:
        """Replace the consumed partitions' positions (the worker's current assignment)."""
        self.positions = {(p.topic, p.partition): p for p in positions}

    def note_model_report(self, report: ModelMetrics) -> None:
        self.model = report

    def sample(self, now: datetime) -> None:
        """Take one point of the throughput and lag series (the adapter's timer)."""
        at, total = now.timestamp(), self.inputs_consumed()
        self.rate.record(at, total)
        if self._last_sample is not None and at > self._last_sample[0]:
            events_per_s = (total - self._last_sample[1]) / (at - self._last_sample[0])
        else:
            events_per_s = 0.0
        self._last_sample = (at, total)
        self.throughput.append((now, events_per_s))
        self.lag_history.append((now, self.total_lag()))

    # -- derived figures ------------------------------------------------------------------

    def inputs_consumed(self) -> int:
        """Messages consumed from the input topics since start."""
        return sum(n for (topic, _), n in self.events_in.items() if topic in self.input_topics)

    def total_lag(self) -> int:
        """Sum of the known lags of the input partitions owned (unknown ones count 0)."""
        return sum(p.lag or 0 for p in self.positions.values() if p.topic in self.input_topics)

    def input_partitions(self) -> list[PartitionMetrics]:
        """Each input partition owned or consumed from, with its count and offsets."""
        keys = {k for k in self.positions if k[0] in self.input_topics}
        keys |= {k for k in self.events_in if k[0] in self.input_topics}
        partitions = []
        for topic, partition in sorted(keys):
            position = self.positions.get((topic, partition))
            end = position.end_offset if position else None
            committed = position.committed if position else None
            partitions.append(
                PartitionMetrics(
                    topic=topic,
                    partition=partition,
                    events_in=self.events_in[topic, partition],
                    end_offset=end,
                    committed=committed,
                    lag=consumer_lag(end, committed),
                )
            )
        return partitions

    def topic_summary(self) -> TopicMetrics:
        """The figures that go to Kafka inside the model-metrics report."""
        return TopicMetrics(
            events_per_s=self.rate.per_second(),
            rate_window_s=self.rate.window_s,
            partitions=self.input_partitions(),
            records_out=dict(sorted(self.records_out.items())),
            latency_count=self.latency.count,
            latency_p50_s=self.latency.quantile(0.5),
            latency_p95_s=self.latency.quantile(0.95),
            latency_p99_s=self.latency.quantile(0.99),
        )

    def overview(
        self, now: datetime, alerts: Iterable[Alert], model_version: str
    ) -> dict[str, Any]:
        """The ``GET /api/overview`` document (the dashboard's one source; see
        docs/metrics.md). ``alerts``: those this worker sent, oldest first (the newest 50
        are kept, newest first). ``model_version`` stands in until the first model report."""
        newest_alerts = list(alerts)[::-1][:50]
        return {
            "worker": self.worker,
            "generated_at": _iso(now),
            "throughput": [{"at": _iso(at), "events_per_s": rate} for at, rate in self.throughput],
            "lag": [{"at": _iso(at), "lag": lag} for at, lag in self.lag_history],
            "partitions": [p.model_dump(mode="json") for p in self.input_partitions()],
            "outcomes": dict(sorted(self.outcomes.items())),
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "privacy_requests_failed": dict(sorted(self.privacy_failures.items())),
            "records_out": dict(sorted(self.records_out.items())),
            "churn_risk": self.recent.churn_risk(),
            "at_risk": [
                {
                    "customer_id": p.customer_id,
                    "churn_probability": p.churn_probability,
                    "segment_name": p.segment_name,
                    "recency_days": p.recency_days,
                    "usual_gap_days": p.usual_gap_days,
                    "quiet": p.trigger == "time",
                }
                for p in self.recent.most_at_risk()
            ],
            "segments": {
                "shares": self.recent.segment_shares(),
                "points": [
                    {
                        "customer_id": p.customer_id,
                        "recency_days": p.recency_days,
                        "monetary": p.monetary,
                        "segment_name": p.segment_name,
                        "churn_probability": p.churn_probability,
                    }
                    for p in self.recent.points(500)
                ],
            },
            "alerts": [alert.model_dump(mode="json") for alert in newest_alerts],
            "model": self._model_summary(model_version),
        }

    def _model_summary(self, model_version: str) -> dict[str, Any]:
        report = self.model
        if report is None:
            return {
                "version": model_version,
                "labelled_examples": 0,
                "roc_auc": None,
                "log_loss": None,
                "brier": None,
                "drifts_detected": 0,
            }
        return {
            "version": report.model_version,
            "labelled_examples": report.labelled_examples,
            "roc_auc": report.roc_auc,
            "log_loss": report.log_loss,
            "brier": report.brier,
            "drifts_detected": report.drifts_detected,
        }

    def exposition(self) -> bytes:
        """The Prometheus text of every metric (``GET /metrics``)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Every metric family, as of now (what a scrape reads)."""
        events_in = CounterMetricFamily(
            "streamcrm_events_in",
            "Messages consumed, by topic and partition.",
            labels=("topic", "partition"),
        )
        for (topic, partition), count in sorted(self.events_in.items()):
            events_in.add_metric((topic, str(partition)), count)
        yield events_in

        yield _labelled_counter(
            "streamcrm_event_outcomes",
            "Input messages handled, by outcome (scored, duplicate, late, invalid, ...).",
            "outcome",
            self.outcomes,
        )
        yield _labelled_counter(
            "streamcrm_dead_letters",
            "Messages sent to the dead-letter topic, by reason code.",
            "reason",
            self.dead_letters,
        )
        yield _labelled_counter(
            "streamcrm_privacy_requests_failed",
            "Erasure and consent requests not applied (dead-lettered), by reason code: each"
            " is a compliance failure until fixed and re-published.",
            "reason",
            self.privacy_failures,
        )
        yield _labelled_counter(
            "streamcrm_records_out",
            "Records produced, by output topic.",
            "topic",
            self.records_out,
        )

        end = GaugeMetricFamily(
            "streamcrm_partition_end_offset",
            "End offset (next offset to be written) of each consumed partition.",
            labels=("topic", "partition"),
        )
        committed = GaugeMetricFamily(
            "streamcrm_partition_committed_offset",
            "The consumer group's committed offset of each consumed partition.",
            labels=("topic", "partition"),
        )
        lag = GaugeMetricFamily(
            "streamcrm_consumer_lag_messages",
            "Messages not yet committed: end offset - committed offset, per partition.",
            labels=("topic", "partition"),
        )
        for (topic, partition), position in sorted(self.positions.items()):
            labels = (topic, str(partition))
            if position.end_offset is not None:
                end.add_metric(labels, position.end_offset)
            if position.committed is not None:
                committed.add_metric(labels, position.committed)
            if position.lag is not None:
                lag.add_metric(labels, position.lag)
        yield end
        yield committed
        yield lag

        yield GaugeMetricFamily(
            "streamcrm_processing_rate_events_per_second",
            f"Input messages consumed per second over the last {self.rate.window_s:g} s.",
            value=self.rate.per_second(),
        )

        latency = HistogramMetricFamily(
            "streamcrm_end_to_end_latency_seconds",
            "Seconds from an input message's Kafka timestamp to its score being sent.",
            buckets=[(floatToGoString(le), count) for le, count in self.latency.cumulative()],
            sum_value=self.latency.sum,
        )
        yield latency
        yield from self._model_metrics()

    def _model_metrics(self) -> Iterator[Metric]:
        report = self.model
        if report is None:
            return
        info = GaugeMetricFamily(
            "streamcrm_model_info",
            "The model version this worker scores with (value 1).",
            labels=("version",),
        )
        info.add_metric((report.model_version,), 1)
        yield info
        gauges = {
            "labelled_examples": ("Labelled churn examples learned.", report.labelled_examples),
            "churned_examples": ("Of them, labelled churned.", report.churned_examples),
            "roc_auc": ("Progressive ROC AUC of the churn model.", report.roc_auc),
            "rolling_roc_auc": (
                "ROC AUC over the newest 2,000 labelled examples.",
                report.rolling_roc_auc,
            ),
            "log_loss": ("Progressive log loss of the churn model.", report.log_loss),
            "brier": ("Progressive Brier score of the churn model.", report.brier),
        }
        for name, (documentation, value) in gauges.items():
            family = GaugeMetricFamily(f"streamcrm_model_{name}", documentation)
            if value is not None:
                family.add_metric((), value)
            yield family
        drifts = CounterMetricFamily(
            "streamcrm_model_drifts_detected",
            "Changes in the churn model's error rate flagged by ADWIN.",
        )
        drifts.add_metric((), report.drifts_detected)
        yield drifts
        shares = GaugeMetricFamily(
            "streamcrm_segment_share_ratio",
            "Share of each segment among the scores of the last report interval.",
            labels=("segment",),
        )
        for segment, share in sorted(report.segment_shares.items()):
            shares.add_metric((segment,), share)
        yield shares


def _labelled_counter(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=(label,))
    for value, count in sorted(counts.items()):
        family.add_metric((value,), count)
    return family


class _Collector:
    """Reads a :class:`WorkerMetrics` at scrape time (the registry's one collector)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
