"""Wire models of the records streamcrm produces: scores (``crm.scores``), alerts
(``crm.alerts``), dead letters (``crm.deadletter``) and the workers' metrics reports
(``crm.model-metrics``). Each topic's JSON Schema in ``schemas/`` is generated from these.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import Field

from streamcrm.core.events import MAX_KEY_BYTES, SCHEMA_VERSION, WireRecord


class ChurnDriver(WireRecord):
    """One feature's contribution to a churn score, in log-odds (weight × scaled value)."""

    feature: str
    log_odds: float


SCORE_SCHEMA_VERSION: Final = 2
"""Version of the ``crm.scores`` record. Version 2 added ``trigger``, ``lapsed`` and
``usual_gap_days``; a version-1 record still reads (as an event-triggered score)."""

ScoreTrigger = Literal["event", "time"]
"""What made a score: an event of the customer, or the passage of event time (a re-score)."""


RESCORE_ID_PREFIX: Final = "asof:"
"""How every re-score's ``event_id`` begins (see :func:`rescore_id`)."""


def rescore_id(customer_id: str, as_of: datetime) -> str:
    """The ``event_id`` of a customer's re-score as of ``as_of``: deterministic, so a replay
    or a re-run sweep names the same re-score (and its alerts) the same way.

    >>> rescore_id("c1", datetime(2026, 3, 1, 12, tzinfo=UTC))
    'asof:c1:2026-03-01T12:00:00Z'
    """
    return f"{RESCORE_ID_PREFIX}{customer_id}:{as_of.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


class CustomerScore(WireRecord):
    """What streamcrm says about one customer, keyed by ``customer_id``.

    A score is made at each of the customer's events (``trigger`` "event": ``as_of`` is the
    event time of the newest event applied) and again as event time passes while the
    customer is quiet (``trigger`` "time": ``as_of`` is the moment of the re-score, and
    recency and every time-based figure are measured then; see ``docs/scores.md``). Scores
    never read the wall clock. Every model-made field comes with ``model_version``. Fields in
    ``MODEL_FIELDS`` depend on the shared models and population; ``event_id`` names the event
    that triggered the record (for a re-score, :func:`rescore_id`). All other fields are a
    function of the customer's events alone, whatever order they were consumed in, so
    replaying a history reproduces them exactly.
    """

    customer_id: str
    as_of: datetime
    event_id: str
    churn_probability: float
    cancelled: bool = Field(description="the customer explicitly cancelled (churn is then 1)")
    segment_id: int | None
    segment_name: str
    satisfaction_mean: float | None
    satisfaction_recent: float | None
    csat_mean: float | None
    nps: float | None
    currency: str = Field(description="the reporting currency of every money field")
    customer_value: float
    clv_simple: float
    clv_to_acquisition_cost: float | None
    clv_discounted: float
    loyalty: float
    health: float
    recency_days: float | None
    frequency: int
    monetary: float
    rfm_recency: int = Field(ge=1, le=5, description="1-5 against the population, 5 = most recent")
    rfm_frequency: int = Field(ge=1, le=5, description="1-5 against the population, 5 = most")
    rfm_monetary: int = Field(ge=1, le=5, description="1-5 against the population, 5 = most")
    population_satisfaction_mean: float | None
    open_tickets: int
    tickets_by_category: dict[str, int] = Field(description="tickets opened, by category")
    escalations: int
    sla_breaches: int
    mean_first_response_hours: float | None
    mean_resolution_hours: float | None
    churn_drivers: list[ChurnDriver] = Field(
        default_factory=list,
        description="the features that moved the churn log-odds most (positive: raise the risk)",
    )
    segment_distance: float | None = Field(
        default=None, description="distance to the segment's centre in scaled units"
    )
    probability_alive: float | None = Field(
        default=None, description="BG/NBD P(still a customer); null before a purchase or a fit"
    )
    expected_purchases: float | None = Field(
        default=None,
        description="BG/NBD expected purchase days within the churn window (0 once cancelled)",
    )
    clv_expected: float | None = Field(
        default=None,
        description="expected spend over the CLV horizon: BG/NBD purchases × Gamma-Gamma spend",
    )
    trigger: ScoreTrigger = Field(
        default="event",
        description="what made the score: an event, or the passage of event time (a re-score)",
    )
    lapsed: bool = Field(
        default=False,
        description="quiet past the re-score horizon: the last re-score until the next event",
    )
    usual_gap_days: float | None = Field(
        default=None,
        description="the customer's mean days between purchase days (null before a repeat)",
    )
    model_version: str
    schema_version: Literal[1, 2] = SCORE_SCHEMA_VERSION


MODEL_FIELDS: frozenset[str] = frozenset(
    {
        "churn_probability",
        "segment_id",
        "segment_name",
        "clv_simple",
        "clv_to_acquisition_cost",
        "clv_discounted",
        "health",
        "rfm_recency",
        "rfm_frequency",
        "rfm_monetary",
        "population_satisfaction_mean",
        "churn_drivers",
        "segment_distance",
        "probability_alive",
        "expected_purchases",
        "clv_expected",
        "model_version",
    }
)
"""Score fields made by (or from) the shared models and population statistics."""


AlertKind = Literal[
    "churn_risk",
    "value_at_risk",
    "satisfaction_drop",
    "sla_breach",
    "segment_change",
    "model_drift",
    "privacy_request_failed",
]
"""What an alert is about; ``docs/alerts.md`` gives each rule, its thresholds and hysteresis."""

AlertSeverity = Literal["info", "warning", "critical"]


class Alert(WireRecord):
    """One alert on ``crm.alerts``, keyed by ``customer_id`` (``model`` for model-wide alerts).

    ``alert_id`` is deterministic (the triggering event's id and the kind), so a consumer can
    drop a redelivered alert. ``raised_at`` is event time for customer alerts (the score's
    ``as_of``) and wall-clock time for model alerts.
    """

    alert_id: str
    kind: AlertKind
    severity: AlertSeverity
    customer_id: str | None = Field(description="null for a model-wide alert (model_drift)")
    raised_at: datetime
    event_id: str | None = Field(description="the event whose score raised the alert")
    message: str = Field(description="one line a person can act on")
    scores: dict[str, float | int | str | None] = Field(
        description="the score values that triggered the alert, and the thresholds crossed"
    )
    churn_drivers: list[ChurnDriver] = Field(
        default_factory=list, description="the features behind the churn score, strongest first"
    )
    model_version: str
    control: bool | None = Field(
        default=None,
        description="churn alerts: true when held out as control (downstream alerting does not "
        "act on it), by a hash of customer and alert; null for other kinds",
    )
    recommended_campaign: str | None = Field(
        default=None, description="the retention campaign whose arm is recommended"
    )
    recommended_arm: str | None = Field(
        default=None,
        description="the arm to use, by Thompson sampling over the posteriors of the "
        "customer's segment (null for a control alert, or when the campaign has no arms yet)",
    )
    schema_version: Literal[1] = SCHEMA_VERSION


class DeadLetter(WireRecord):
    """A message that could not be processed, with where it came from and why.

    ``raw`` holds the payload exactly (UTF-8 text, or base64 when the bytes are not UTF-8) up
    to ``MAX_DEADLETTER_RAW_BYTES``; a longer payload is cut and ``raw_truncated`` set, and
    only an uncut payload can be re-published (``streamcrm deadletter --republish``).
    """

    source_topic: str
    partition: int
    offset: int
    key: str | None
    error_type: str
    reason_code: str = Field(
        default="invalid", description="short stable cause, for counting: too_large, schema:..."
    )
    reason: str
    raw: str = Field(description="the raw payload (see raw_encoding), at most 16 KiB of it")
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_truncated: bool = False
    raw_size: int
    schema_version: Literal[1] = SCHEMA_VERSION

    @classmethod
    def of(
        cls,
        raw: bytes,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        error_type: str,
        reason_code: str,
        reason: str,
    ) -> DeadLetter:
        """A dead letter for ``raw``, stored exactly (UTF-8 text, else base64), size-bounded.

        >>> letter = DeadLetter.of(b"\\xff{", source_topic="crm.purchases", partition=0,
        ...     offset=7, key=b"c1", error_type="UndecodableEventError", reason_code="not_json",
        ...     reason="not valid JSON")
        >>> letter.raw_encoding, letter.payload()
        ('base64', b'\\xff{')
        """
        kept = raw[:MAX_DEADLETTER_RAW_BYTES]
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            # At most MAX_KEY_BYTES of the key: a 100 KB key is not copied into every letter.
            key=key[:MAX_KEY_BYTES].decode("utf-8", "replace") if key is not None else None,
            error_type=error_type,
            reason_code=reason_code,
            reason=reason,
            raw=text,
            raw_encoding=encoding,  # type: ignore[arg-type]
            raw_truncated=len(raw) > len(kept),
            raw_size=len(raw),
        )

    def payload(self) -> bytes:
        """The stored payload bytes (all of them unless ``raw_truncated``)."""
        if self.raw_encoding == "base64":
            return base64.b64decode(self.raw)
        return self.raw.encode("utf-8")


MAX_DEADLETTER_RAW_BYTES = 16 * 1024


class PartitionMetrics(WireRecord):
    """One consumed partition's figures in a worker's :class:`TopicMetrics`.

    ``lag`` is ``end_offset - committed``: messages in the partition this worker's group has
    not committed yet. Offsets are null until known (no fetch or commit yet).
    """

    topic: str
    partition: int
    events_in: int = Field(description="messages consumed from it since the worker started")
    end_offset: int | None = Field(description="the partition's end (next offset to write)")
    committed: int | None = Field(description="the group's committed offset (next to read)")
    lag: int | None = Field(description="end_offset - committed, never below 0")


class TopicMetrics(WireRecord):
    """A worker's traffic figures, sent inside its :class:`ModelMetrics` report.

    The same figures as the worker's Prometheus ``/metrics`` (see docs/metrics.md), so they
    can be read with Kafka alone (``streamcrm status``).
    """

    events_per_s: float = Field(description="input messages consumed per second, recently")
    rate_window_s: float = Field(description="the sliding window the rate is taken over")
    partitions: list[PartitionMetrics] = Field(
        description="every input partition this worker owns, by topic and partition"
    )
    records_out: dict[str, int] = Field(description="records produced since start, by output topic")
    latency_count: int = Field(
        description="scores whose end-to-end latency (input timestamp to score sent) was measured"
    )
    latency_p50_s: float | None = Field(description="median end-to-end latency, in seconds")
    latency_p95_s: float | None
    latency_p99_s: float | None


class ModelMetrics(WireRecord):
    """A worker's periodic report on ``crm.model-metrics``, keyed by worker.

    Churn quality is measured progressively (each labelled example is predicted before it is
    learned), so every figure is on data the model had not seen. Figures are null until the
    first label arrives. Counts are since the worker started.
    """

    worker: str
    published_at: datetime = Field(description="wall-clock time of this report")
    event_time: datetime | None = Field(description="newest event time this worker has seen")
    model_version: str
    labelled_examples: int
    churned_examples: int
    roc_auc: float | None
    log_loss: float | None
    brier: float | None
    rolling_roc_auc: float | None = Field(
        default=None, description="ROC AUC over the newest 2,000 labelled examples"
    )
    recent_brier: float | None = Field(
        default=None, description="mean squared error over ADWIN's current window"
    )
    drifts_detected: int = Field(
        default=0, description="changes in the churn model's error rate ADWIN has flagged"
    )
    model_drift: bool = Field(
        default=False, description="true when drift was flagged since the previous report"
    )
    customers_scored: int
    segment_shares: dict[str, float] = Field(
        description="share of each segment among the scores made since the last report"
    )
    events: dict[str, int] = Field(
        description="messages since start by outcome: scored, duplicate, late, invalid"
    )
    dead_letters: dict[str, int] = Field(
        default_factory=dict,
        description="messages dead-lettered since start, by reason code (too_large, schema:...)",
    )
    topics: TopicMetrics | None = Field(
        default=None, description="traffic: rates, lag per partition, records out, latency"
    )
    schema_version: Literal[1] = SCHEMA_VERSION


class ArmReport(WireRecord):
    """One arm of a campaign on ``crm.campaign-metrics`` (money in the reporting currency)."""

    arm: str
    touches: int
    opens: int
    clicks: int
    conversions: int
    attributed_revenue: float
    cost: float
    effect: float = Field(description="attributed revenue − cost")
    effect_per_touch: float | None = Field(description="effect / touches")
    roi: float | None = Field(description="effect / cost; null when nothing was spent")
    conversion_rate: float = Field(description="posterior mean of the conversion rate")
    conversion_interval: tuple[float, float] = Field(
        description="equal-tailed 95 % credible interval of the conversion rate"
    )
    probability_best: float = Field(description="P(this arm's conversion rate is the highest)")
    expected_loss: float = Field(
        description="E[best rate − this rate]: what choosing this arm costs, in conversion rate"
    )


class CampaignMetrics(WireRecord):
    """A campaign's figures and A/B test on ``crm.campaign-metrics``, keyed by campaign id:
    summed over every input partition's partial figures when published (docs/marketing.md)."""

    campaign_id: str
    published_at: datetime = Field(description="wall-clock time of this report")
    arms: list[ArmReport]
    leader: str = Field(description="the arm with the least expected loss")
    stop: bool = Field(description="the stopping rule says the test can end, choosing leader")
    decision: str = Field(description="why the test stops or goes on")
    schema_version: Literal[1] = SCHEMA_VERSION


class UpliftMetrics(WireRecord):
    """The uplift of acting on one kind of alert, in one segment (``""``: all segments), on
    ``crm.uplift``, keyed by ``{kind}|{segment}``: retention (a purchase within the churn
    window after the alert) of alerts acted on against alerts held out as control, counted
    once each alert's window has closed (docs/marketing.md)."""

    kind: str
    segment: str
    published_at: datetime = Field(description="wall-clock time of this report")
    acted_alerts: int
    acted_retained: int
    control_alerts: int
    control_retained: int
    acted_rate: float = Field(description="posterior mean of the acted-on retention rate")
    control_rate: float = Field(description="posterior mean of the control retention rate")
    uplift: float = Field(description="acted_rate − control_rate")
    uplift_interval: tuple[float, float] = Field(
        description="95 % credible interval of the uplift (the two Beta posteriors convolved)"
    )
    probability_positive: float = Field(description="P(acting retains more than not acting)")
    schema_version: Literal[1] = SCHEMA_VERSION
