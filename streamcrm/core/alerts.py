"""Alert rules: which scores a person should hear about, once, and when again.

One step in the shape of bytewax's ``stateful_map``: :func:`evaluate_alerts` takes a
customer's :class:`AlertMemory` (kept in the customer's state) and a new score, and returns
the new memory and the alerts the score raised. Every rule runs in event time (the score's
``as_of``), never on a clock, so replaying the same events gives the same alerts, with the
same ``alert_id`` (``"{event_id}:{kind}"``), which is what a consumer de-duplicates on.

The rules (``docs/alerts.md`` has them with their settings):

- ``churn_risk``: P(churn) rises to ``churn_enter`` or above. Hysteresis: it is raised again
  only after P(churn) fell below ``churn_leave``, so a customer hovering at the line does not
  flap. An explicit cancellation (P(churn) = 1) raises it at once, cooldown or not, and once
  per cancellation: that is the alert an analyst most wants, and the only one a cancelled
  customer gets (their other scores only restate that they left).
- ``value_at_risk``: P(churn) × CLV₀ rises to ``value_at_risk_enter`` (reporting currency),
  with CLV₀ the discounted CLV the customer brings *if retained*; leaves below
  ``value_at_risk_leave``.
- ``satisfaction_drop``: the recent-satisfaction EWMA falls ``satisfaction_drop_enter`` or
  more below the customer's own long-run mean (both on the normalised [0, 1] scale); leaves
  when the gap closes below ``satisfaction_drop_leave``.
- ``sla_breach``: the customer's count of support tickets answered later than their
  first-response SLA went up.
- ``segment_change``: the customer's segment *name* differs from their settled segment (the
  first one seen, or the last one alerted) in ``segment_confirm_scores`` scores in a row.
  Segments are named by rank, so a new id under the same name is the same kind of customer;
  and a customer near a border, or centres that move as the clustering learns, would flip
  segments every few events: a move must hold before anyone is told. On a simulated year of
  300 customers (9,591 scores) a change of name raised 1,834 alerts, against about 54 for
  each other kind; confirmed by 3 scores, 732; by 4 (the default), 319; by 5, 167.
- ``model_drift`` (:func:`drift_alert`): the churn model's error rate changed.

**Cooldown.** A customer gets at most one alert of a kind per ``cooldown`` of event time
(cancellations excepted). A threshold crossed within the cooldown is not remembered as
alerted: if the score is still over the line at the first score after the cooldown, the alert
goes out then.

The unit tests (``tests/unit/test_alerts.py``) read as the specification of each rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streamcrm.core.records import (
    Alert,
    AlertKind,
    AlertSeverity,
    CustomerScore,
    DeadLetter,
    ModelMetrics,
)
from streamcrm.core.scores import discounted_value
from streamcrm.core.state import AlertMemory
from streamcrm.core.trusted import unvalidated

DRIVERS_PER_ALERT = 3
"""The churn drivers an alert carries (the score's strongest, in its order)."""

DECLINING_SEGMENTS = frozenset({"at_risk", "hibernating"})
"""Segments whose entry makes a segment change a warning rather than news."""


@dataclass(frozen=True)
class AlertRules:
    """The thresholds of the alert rules (defaults in brackets; settings ``STREAMCRM_ALERT_*``).

    Every ``*_enter`` / ``*_leave`` pair is a hysteresis band: a kind is raised when its
    figure reaches ``enter`` and re-armed only once it is back beyond ``leave``.
    """

    churn_enter: float = 0.7
    """P(churn) at or above which ``churn_risk`` is raised [0.7]."""
    churn_leave: float = 0.6
    """P(churn) below which ``churn_risk`` is re-armed [0.6]."""
    churn_critical: float = 0.9
    """P(churn) at or above which a ``churn_risk`` alert is critical, not a warning [0.9]."""
    value_at_risk_enter: float = 10_000.0
    """P(churn) × CLV₀, reporting currency, at or above which ``value_at_risk`` is raised
    [10,000: about the top 10 % of simulated scores]."""
    value_at_risk_leave: float = 8_000.0
    """...and below which it is re-armed [8,000]."""
    satisfaction_drop_enter: float = 0.15
    """How far below the customer's mean satisfaction (normalised to [0, 1]) the recent EWMA
    must fall to raise ``satisfaction_drop`` [0.15]."""
    satisfaction_drop_leave: float = 0.05
    """The gap below which ``satisfaction_drop`` is re-armed [0.05]."""
    segment_confirm_scores: int = 4
    """Scores in a row a new segment must hold before ``segment_change`` fires [4]."""
    cooldown: timedelta = timedelta(days=7)
    """Event time after an alert before the customer can get another of the same kind [7 d]."""
    discount_rate: float = 0.10
    """Yearly discount rate r of CLV₀ (the settings give it the scores' own) [0.10]."""
    horizon_years: int = 5
    """Horizon H of CLV₀ (the settings give it the scores' own) [5]."""

    def __post_init__(self) -> None:
        bands = {
            "churn": (self.churn_leave, self.churn_enter),
            "value_at_risk": (self.value_at_risk_leave, self.value_at_risk_enter),
            "satisfaction_drop": (self.satisfaction_drop_leave, self.satisfaction_drop_enter),
        }
        for name, (leave, enter) in bands.items():
            if leave > enter:
                raise ValueError(f"{name}: the leave threshold {leave:g} is above enter {enter:g}")
        if self.cooldown < timedelta(0):
            raise ValueError("the alert cooldown cannot be negative")
        if self.segment_confirm_scores < 1:
            raise ValueError("a segment change needs at least one score to confirm it")

    def clv_if_retained(self, customer_value: float) -> float:
        """CLV₀ = Σₜ₌₁..H V / (1 + r)ᵗ: the discounted CLV at P(churn) = 0, V the yearly value.

        It is :func:`streamcrm.core.scores.discounted_value` with retention 1. The churn-adjusted
        CLV on the score would not do: it shrinks as risk grows, so P(churn) × it falls for the
        customers most likely to leave.

        >>> round(AlertRules(discount_rate=0.1, horizon_years=2).clv_if_retained(1200.0), 2)
        2082.64
        """
        return discounted_value(customer_value, 1.0, self.discount_rate, self.horizon_years)


DEFAULT_ALERT_RULES = AlertRules()


def evaluate_alerts(
    memory: AlertMemory, score: CustomerScore, rules: AlertRules = DEFAULT_ALERT_RULES
) -> tuple[AlertMemory, list[Alert]]:
    """The alerts ``score`` raises, and what to remember for the next score.

    ``(memory, score) -> (memory, alerts)``: pure, in event time (``score.as_of``). Alerts
    come in a fixed order: churn_risk, value_at_risk, satisfaction_drop, sla_breach,
    segment_change.
    """
    step = _Step(memory, score, rules)
    if score.cancelled:
        step.cancellation()
    else:
        step.churn_risk()
        step.value_at_risk()
        step.satisfaction_drop()
        step.sla_breach()
        step.segment_change()
    return step.memory(), step.alerts


class _Step:
    """One evaluation: the rules read the score and memory, and note what changes."""

    def __init__(self, memory: AlertMemory, score: CustomerScore, rules: AlertRules) -> None:
        self.old, self.score, self.rules = memory, score, rules
        self.raised = set(memory.raised)
        self.last_fired = dict(memory.last_fired)
        self.segment_id, self.segment_name = memory.segment_id, memory.segment_name
        if self.segment_name is None:  # the first score settles the segment
            self.segment_id, self.segment_name = score.segment_id, score.segment_name
        self.segment_candidate = memory.segment_candidate
        self.segment_candidate_scores = memory.segment_candidate_scores
        self.alerts: list[Alert] = []

    def memory(self) -> AlertMemory:
        score = self.score
        return unvalidated(
            AlertMemory,
            raised=tuple(kind for kind in _THRESHOLD_KINDS if kind in self.raised),
            last_fired=dict(sorted(self.last_fired.items())),
            segment_id=self.segment_id,
            segment_name=self.segment_name,
            segment_candidate=self.segment_candidate,
            segment_candidate_scores=self.segment_candidate_scores,
            sla_breaches=max(score.sla_breaches, self.old.sla_breaches),
            cancelled=score.cancelled,
        )

    def cancellation(self) -> None:
        """A cancelled customer: one critical churn alert per cancellation, whatever the
        cooldown, and nothing else (the memory still follows their segment and SLA count, so
        nothing stale is alerted if they come back)."""
        self.raised.add("churn_risk")  # re-armed only when they come back and risk falls
        if self.score.segment_id is not None:  # followed silently: nothing stale later
            self.segment_id, self.segment_name = self.score.segment_id, self.score.segment_name
            self.segment_candidate, self.segment_candidate_scores = None, 0
        if self.old.cancelled:
            return
        score = self.score
        lost = score.customer_value
        self._fire(
            "churn_risk",
            "critical",
            f"customer {score.customer_id} cancelled: churn probability 1.0, "
            f"{_money(lost, score.currency)} a year of value lost",
            {
                "reason": "cancellation",
                "churn_probability": score.churn_probability,
                "customer_value": lost,
                "monetary": score.monetary,
                "churn_enter": self.rules.churn_enter,
            },
        )

    def churn_risk(self) -> None:
        """Raised at P(churn) ≥ churn_enter; re-armed below churn_leave."""
        score, rules = self.score, self.rules
        churn = score.churn_probability
        if not self._crossed("churn_risk", churn, rules.churn_enter, rules.churn_leave):
            return
        severity: AlertSeverity = "critical" if churn >= rules.churn_critical else "warning"
        drivers = ", ".join(d.feature for d in score.churn_drivers[:DRIVERS_PER_ALERT])
        quiet = quiet_note(score)
        self._fire(
            "churn_risk",
            severity,
            f"customer {score.customer_id}: churn probability {churn:.2f} reached "
            f"{rules.churn_enter:g}"
            + (f", {quiet}" if quiet else "")
            + (f" (drivers: {drivers})" if drivers else ""),
            {
                "churn_probability": churn,
                "churn_enter": rules.churn_enter,
                "churn_leave": rules.churn_leave,
                "health": score.health,
                "segment_name": score.segment_name,
                "trigger": score.trigger,
                "recency_days": score.recency_days,
                "silence_over_usual_gap": silence_over_usual_gap(score),
            },
        )

    def value_at_risk(self) -> None:
        """Raised at P(churn) × CLV₀ ≥ value_at_risk_enter; re-armed below value_at_risk_leave."""
        score, rules = self.score, self.rules
        clv = rules.clv_if_retained(score.customer_value)
        at_risk = score.churn_probability * clv
        enter, leave = rules.value_at_risk_enter, rules.value_at_risk_leave
        if not self._crossed("value_at_risk", at_risk, enter, leave):
            return
        currency = score.currency
        quiet = quiet_note(score)
        self._fire(
            "value_at_risk",
            "warning",
            f"customer {score.customer_id}: {_money(at_risk, currency)} of lifetime value at "
            f"risk (churn {score.churn_probability:.2f} × CLV if retained "
            f"{_money(clv, currency)}), over {_money(enter, currency)}"
            + (f"; {quiet}" if quiet else ""),
            {
                "value_at_risk": at_risk,
                "churn_probability": score.churn_probability,
                "clv_if_retained": clv,
                "clv_discounted": score.clv_discounted,
                "customer_value": score.customer_value,
                "currency": currency,
                "value_at_risk_enter": enter,
                "value_at_risk_leave": leave,
            },
        )

    def satisfaction_drop(self) -> None:
        """Raised when mean − recent EWMA ≥ satisfaction_drop_enter; re-armed below _leave."""
        score, rules = self.score, self.rules
        mean, recent = score.satisfaction_mean, score.satisfaction_recent
        gap = mean - recent if mean is not None and recent is not None else None
        enter, leave = rules.satisfaction_drop_enter, rules.satisfaction_drop_leave
        if gap is None or not self._crossed("satisfaction_drop", gap, enter, leave):
            return
        assert mean is not None and recent is not None
        self._fire(
            "satisfaction_drop",
            "warning",
            f"customer {score.customer_id}: recent satisfaction {recent:.2f} is {gap:.2f} "
            f"below their mean {mean:.2f}",
            {
                "satisfaction_recent": recent,
                "satisfaction_mean": mean,
                "drop": gap,
                "satisfaction_drop_enter": enter,
                "satisfaction_drop_leave": leave,
                "csat_mean": score.csat_mean,
                "nps": score.nps,
            },
        )

    def sla_breach(self) -> None:
        """Fires when the count of first-response SLA breaches goes up."""
        score = self.score
        new = score.sla_breaches - self.old.sla_breaches
        if new <= 0 or not self._cooled_down("sla_breach"):
            return
        self._fire(
            "sla_breach",
            "warning",
            f"customer {score.customer_id}: {new} more support ticket"
            f"{'s' if new > 1 else ''} answered after the first-response SLA "
            f"({score.sla_breaches} in all, {score.open_tickets} open)",
            {
                "sla_breaches": score.sla_breaches,
                "previous_sla_breaches": self.old.sla_breaches,
                "open_tickets": score.open_tickets,
                "mean_first_response_hours": score.mean_first_response_hours,
                "escalations": score.escalations,
            },
        )

    def segment_change(self) -> None:
        """Fires when a segment other than the settled one has held for
        ``segment_confirm_scores`` scores in a row (and the kind has cooled down); the new
        segment is then the settled one. Never on the first score."""
        score = self.score
        if score.segment_id is None or score.segment_name == self.segment_name:
            self.segment_candidate, self.segment_candidate_scores = None, 0
            if score.segment_id is not None:
                self.segment_id = score.segment_id  # same kind of customer, new cluster id
            return
        if score.segment_name == self.segment_candidate:
            self.segment_candidate_scores += 1
        else:
            self.segment_candidate, self.segment_candidate_scores = score.segment_name, 1
        if self.segment_candidate_scores < self.rules.segment_confirm_scores:
            return
        if not self._cooled_down("segment_change"):
            return  # still pending: fires at the first score after the cooldown if it holds
        previous_id, previous_name = self.segment_id, self.segment_name
        self.segment_id, self.segment_name = score.segment_id, score.segment_name
        self.segment_candidate, self.segment_candidate_scores = None, 0
        declining = score.segment_name in DECLINING_SEGMENTS
        self._fire(
            "segment_change",
            "warning" if declining else "info",
            f"customer {score.customer_id} moved from segment {previous_name} to "
            f"{score.segment_name} ({self.rules.segment_confirm_scores} scores in a row)",
            {
                "segment_id": score.segment_id,
                "segment_name": score.segment_name,
                "previous_segment_id": previous_id,
                "previous_segment_name": previous_name,
                "segment_distance": score.segment_distance,
                "confirmed_by_scores": self.rules.segment_confirm_scores,
            },
        )

    def _crossed(self, kind: AlertKind, value: float, enter: float, leave: float) -> bool:
        """Move the kind's hysteresis band on ``value``; True when an alert is due now."""
        if kind in self.raised:
            if value < leave:
                self.raised.discard(kind)
            return False
        return value >= enter and self._cooled_down(kind)

    def _cooled_down(self, kind: AlertKind) -> bool:
        last = self.last_fired.get(kind)
        return last is None or self.score.as_of - last >= self.rules.cooldown

    def _fire(
        self,
        kind: AlertKind,
        severity: AlertSeverity,
        message: str,
        scores: dict[str, float | int | str | None],
    ) -> None:
        score = self.score
        if kind in _THRESHOLD_KINDS:
            self.raised.add(kind)
        self.last_fired[kind] = score.as_of
        self.alerts.append(
            Alert(
                alert_id=f"{score.event_id}:{kind}",
                kind=kind,
                severity=severity,
                customer_id=score.customer_id,
                raised_at=score.as_of,
                event_id=score.event_id,
                message=message,
                scores=scores,
                churn_drivers=score.churn_drivers[:DRIVERS_PER_ALERT],
                model_version=score.model_version,
            )
        )


_THRESHOLD_KINDS: tuple[AlertKind, ...] = ("churn_risk", "value_at_risk", "satisfaction_drop")
"""Kinds with a hysteresis band (the others fire on a change)."""


def drift_alert(report: ModelMetrics, now: datetime) -> Alert | None:
    """The model-wide alert for a metrics report that flags drift (None when it does not).

    ADWIN flagged a change in the churn model's error rate since the worker's previous report:
    its probabilities may be off until it has learned the new behaviour. ``alert_id`` is the
    worker and its drift count, so a re-sent report gives the same id.
    """
    if not report.model_drift:
        return None
    return Alert(
        alert_id=f"{report.worker}:{report.drifts_detected}:model_drift",
        kind="model_drift",
        severity="warning",
        customer_id=None,
        raised_at=now,
        event_id=None,
        message=(
            f"churn model {report.model_version}: error rate changed (drift #"
            f"{report.drifts_detected}; recent Brier {_figure(report.recent_brier)}, "
            f"overall {_figure(report.brier)})"
        ),
        scores={
            "drifts_detected": report.drifts_detected,
            "recent_brier": report.recent_brier,
            "brier": report.brier,
            "roc_auc": report.roc_auc,
            "rolling_roc_auc": report.rolling_roc_auc,
            "log_loss": report.log_loss,
            "labelled_examples": report.labelled_examples,
        },
        model_version=report.model_version,
    )


def privacy_failure_alert(letter: DeadLetter, now: datetime) -> Alert:
    """The alert for an erasure or consent request that could not be applied (it was
    dead-lettered): a silently failed erasure is a compliance failure, so someone must fix
    and re-publish it.

    It names where the request sits (topic, partition, offset: the dead letter has it whole)
    and why, by reason code only: no customer id or payload, so the alerts topic takes on no
    personal data. ``alert_id`` is the request's position, so a re-sent dead letter gives
    the same id.
    """
    where = f"{letter.source_topic}[{letter.partition}]@{letter.offset}"
    return Alert(
        alert_id=f"{where}:privacy_request_failed",
        kind="privacy_request_failed",
        severity="critical",
        customer_id=None,
        raised_at=now,
        event_id=None,
        message=(
            f"privacy request at {where} was not applied ({letter.reason_code}): find it with"
            f" `streamcrm deadletter --at {letter.source_topic}:{letter.partition}:"
            f"{letter.offset}`, fix it and re-publish it"
        ),
        scores={
            "source_topic": letter.source_topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "reason_code": letter.reason_code,
        },
        model_version="-",
    )


def silence_over_usual_gap(score: CustomerScore) -> float | None:
    """Days since the last purchase over the customer's usual gap between purchase days
    (None without a repeat purchase).

    >>> from streamcrm.core.records import CustomerScore
    >>> silence_over_usual_gap(CustomerScore.model_construct(recency_days=42.0,
    ...                                                      usual_gap_days=10.0))
    4.2
    """
    if score.recency_days is None or not score.usual_gap_days:
        return None
    return score.recency_days / score.usual_gap_days


def quiet_note(score: CustomerScore) -> str | None:
    """What a person reads about a quiet customer's re-score: how long they have been quiet,
    against their own cadence, e.g. ``quiet 42 days, 4.2x their usual gap of 10.0 days``.
    None for a score made at an event (the customer is not quiet)."""
    if score.trigger != "time" or score.recency_days is None:
        return None
    ratio = silence_over_usual_gap(score)
    note = f"quiet {score.recency_days:.0f} days"
    if ratio is not None and score.usual_gap_days is not None:
        note += f", {ratio:.1f}x their usual gap of {score.usual_gap_days:.1f} days"
    if score.lapsed:
        note += "; now considered lapsed"
    return note


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.0f} {currency}"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
