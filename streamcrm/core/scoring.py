"""One customer event in, one score out: the pure core of streamcrm.

``score_event(state, event, models, config)`` follows the one-way flow

    apply event to state → settle the label ledger (models learn) → features
    → churn probability + segment → deterministic scores → alerts + score history
    → new pending snapshot

and ``sweep_customer`` moves a quiet customer on when the watermark advances: their label
ledger, and a re-score as of the passing event time, so the churn score stays current for the
customers who leave without a word.

It does no I/O; the River models are the only thing it changes besides the returned state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from streamcrm.core.alerts import AlertRules, evaluate_alerts
from streamcrm.core.events import (
    CampaignTouch,
    CancellationEvent,
    Event,
    MarketingEvent,
    PurchaseEvent,
    RetentionOffer,
    TouchClicked,
    TouchOpened,
)
from streamcrm.core.experiments import is_control
from streamcrm.core.features import churn_features, customer_features, repeat_buying
from streamcrm.core.interventions import (
    AlertOutcomes,
    AlertSent,
    RetentionTally,
    record_alert,
    settle,
)
from streamcrm.core.interventions import record_purchase as record_outcome_purchase
from streamcrm.core.labels import (
    MAX_PENDING_SNAPSHOTS,
    LabelledExample,
    add_snapshot,
    heartbeat_times,
    next_due,
    record_purchase,
    settle_closed,
    settle_on_cancellation,
)
from streamcrm.core.marketing import (
    Tally,
    Touch,
    forget_before,
    record_click,
    record_open,
    record_touch,
)
from streamcrm.core.records import Alert, ChurnDriver, CustomerScore, ScoreTrigger, rescore_id
from streamcrm.core.scores import (
    DEFAULT_DISCOUNT_RATE,
    DEFAULT_HORIZON_YEARS,
    clv_discounted,
    clv_simple,
    clv_to_acquisition_cost,
    csat_mean,
    customer_value,
    health_score,
    loyalty_index,
    mean_first_response_hours,
    mean_resolution_hours,
    net_promoter_score,
    satisfaction_mean,
)
from streamcrm.core.state import (
    CustomerState,
    PendingSnapshot,
    StateRules,
    apply,
    attribution_settled_before,
    counted_late,
    state_for,
    with_event_id,
    with_score_point,
)
from streamcrm.core.trusted import unvalidated, with_changes
from streamcrm.models import BuyingObservation, Learner, ModelBundle
from streamcrm.models.repeat_buying import RepeatBuying


@dataclass(frozen=True)
class ScoringConfig:
    """The knobs of the scoring core (a slice of the settings)."""

    churn_window: timedelta = timedelta(days=90)
    heartbeat_interval: timedelta = timedelta(days=30)
    """A quiet customer is snapshotted again every this much event time..."""
    heartbeat_horizon: timedelta = timedelta(days=180)
    """...until quiet for this long (by then their churn label is long settled)."""
    max_pending_snapshots: int = MAX_PENDING_SNAPSHOTS
    """Snapshots awaiting a label per customer (the oldest is dropped beyond this): keep it
    above churn window / heartbeat interval, or quiet customers' heartbeats are lost."""
    clv_horizon: timedelta = timedelta(days=365)
    """The horizon of the probabilistic CLV (expected purchases × expected spend)."""
    discount_rate: float = DEFAULT_DISCOUNT_RATE
    horizon_years: int = DEFAULT_HORIZON_YEARS
    rules: StateRules = field(default_factory=StateRules)
    alerts: AlertRules = field(default_factory=AlertRules)
    """The alert thresholds (see streamcrm.core.alerts)."""
    rescore_interval: timedelta | None = timedelta(days=7)
    """A quiet customer is re-scored when their newest score is this old in event time
    (None: never; scores then come only with events)."""
    rescore_horizon: timedelta = timedelta(days=180)
    """Quiet this long after their last event, a customer gets one last score marked lapsed
    and is not re-scored again until their next event."""
    alert_control_share: float = 0.0
    """Share of churn alerts held out as control (see
    :func:`streamcrm.core.experiments.is_control`)."""


@dataclass(frozen=True)
class ScoredEvent:
    """The outcome of one event: the state to save, the score and the alerts to emit.

    ``score`` is None when the event was a duplicate (nothing changed) or late (only the
    customer's late-event count changed; ``late_by`` says by how much); there are no alerts
    then.
    """

    state: CustomerState
    score: CustomerScore | None
    alerts: tuple[Alert, ...] = ()
    """The alerts ``score`` raised (see :func:`streamcrm.core.alerts.evaluate_alerts`)."""
    examples_learned: int = 0
    labelled: tuple[LabelledExample, ...] = ()
    """The snapshots this event settled (learned, in this order)."""
    duplicate: bool = False
    erased: bool = False
    """The customer was erased: nothing was saved or learned (see streamcrm.core.privacy)."""
    late_by: timedelta | None = None
    due_at: datetime | None = None
    """When the customer next needs a sweep: their label ledger or their re-score."""
    rescores: tuple[Rescore, ...] = ()
    """Re-scores the customer was owed before this event (quiet through their moments, and
    not yet swept): published before ``score``, so a replay that outruns the sweeps gives the
    same re-scores as the live path."""
    campaigns: Tally = field(default_factory=Tally)
    """What the event changed in the campaign figures (a purchase a touch won)."""
    retention: RetentionTally = field(default_factory=RetentionTally)
    """Churn alerts whose outcome this event settled (see :mod:`streamcrm.core.interventions`)."""

    @property
    def outputs(self) -> list[tuple[CustomerScore, tuple[Alert, ...]]]:
        """Every score to publish, oldest first, with the alerts it raised."""
        made = [(rescore.score, rescore.alerts) for rescore in self.rescores]
        return made + ([(self.score, self.alerts)] if self.score is not None else [])


@dataclass(frozen=True)
class Rescore:
    """A re-score as of a passing event time, and the alerts it raised."""

    score: CustomerScore
    alerts: tuple[Alert, ...] = ()


def score_event(
    state: CustomerState | None,
    event: Event,
    models: ModelBundle,
    config: ScoringConfig,
    watermark: datetime | None = None,
    learner: Learner | None = None,
) -> ScoredEvent:
    """Apply ``event``, score the customer, and hand what the models should learn to
    ``learner`` (the models themselves by default: they learn at once).

    ``watermark`` (event time up to which every event of the customer's input partition is
    in, on every topic) closes churn windows and settles attribution. Settled
    labels are learned before the churn prediction; the scored customer is learned by the
    segments and population after they placed it (predict, then learn).
    """
    learner = models if learner is None else learner
    transition = apply(state, event, config.rules, watermark)
    if not transition.applied:
        return ScoredEvent(
            state=transition.state,
            score=None,
            duplicate=transition.duplicate,
            late_by=transition.late_by,
        )
    new_state = transition.state
    rescores: list[Rescore] = []
    if state is not None:
        # Quiet through moments before this event: owed their re-scores first, made from
        # the state as it was (the sweep may not have reached them yet).
        caught_up, rescores = _rescores_before(
            state, event.occurred_at, models, config, limit=None, inclusive=False
        )
        new_state = with_changes(
            new_state,
            alert_memory=caught_up.alert_memory,
            score_history=caught_up.score_history,
            last_scored_at=caught_up.last_scored_at,
        )

    pending = new_state.pending_snapshots
    labelled: list[LabelledExample] = []
    if isinstance(event, PurchaseEvent):
        pending = record_purchase(pending, event.occurred_at, config.churn_window)
    elif isinstance(event, CancellationEvent):
        labelled, pending = settle_on_cancellation(pending, event.occurred_at)
    if watermark is not None:
        closed, pending = settle_closed(pending, watermark, config.churn_window)
        labelled += closed
    _learn(learner, labelled)

    # Scores never go back in event time: an event that arrives behind the customer's newest
    # re-score (its topic consumed far behind another's) is scored as of that moment. But for
    # a cancelled customer, who is never re-scored again: their score is as of their newest
    # event, so their final score does not depend on whether a re-score came in before the
    # cancellation was read (live with one topic behind) or not (in-order replay).
    as_of = (
        new_state.last_event_at
        if new_state.explicitly_cancelled
        else max(new_state.last_event_at, new_state.newest_score_at or new_state.last_event_at)
    )
    lapsed = config.rescore_interval is not None and (
        as_of >= new_state.last_event_at + config.rescore_horizon
    )
    made = _score_as_of(new_state, as_of, event.event_id, "event", models, config, lapsed=lapsed)
    score, features, churn_inputs, cancelled = (
        made.score,
        made.features,
        made.churn_inputs,
        made.score.cancelled,
    )
    mean_satisfaction = score.satisfaction_mean
    buying = made.buying
    learner.learn_scored(
        features,
        mean_satisfaction,
        None if buying is None else BuyingObservation(new_state.customer_id, buying, as_of),
    )
    last_snapshot_at = new_state.last_snapshot_at
    if not cancelled:
        pending = add_snapshot(
            pending,
            unvalidated(PendingSnapshot, scored_at=as_of, features=churn_inputs),
            config.max_pending_snapshots,
        )
        last_snapshot_at = max(as_of, last_snapshot_at or as_of)
    alert_memory, alerts = evaluate_alerts(new_state.alert_memory, score, config.alerts)
    raised = [(r.score, r.alerts) for r in rescores] + [(score, tuple(alerts))]
    outcomes, retention = track_alert_outcomes(
        new_state,
        event.occurred_at if isinstance(event, PurchaseEvent) else None,
        raised,
        watermark,
        config,
    )
    final_state = with_changes(
        new_state,
        alert_outcomes=outcomes,
        pending_snapshots=pending,
        last_snapshot_at=last_snapshot_at,
        alert_memory=alert_memory,
        score_history=with_score_point(new_state.score_history, score),
        last_scored_at=max(as_of, new_state.newest_score_at or as_of),
    )
    return ScoredEvent(
        state=final_state,
        score=score,
        alerts=tuple(alerts),
        examples_learned=len(labelled),
        labelled=tuple(labelled),
        due_at=sweep_due_at(final_state, config),
        rescores=tuple(rescores),
        campaigns=transition.campaigns,
        retention=retention,
    )


def track_alert_outcomes(
    state: CustomerState,
    purchased_at: datetime | None,
    raised: Sequence[tuple[CustomerScore, Sequence[Alert]]],
    watermark: datetime | None,
    config: ScoringConfig,
) -> tuple[AlertOutcomes, RetentionTally]:
    """The customer's pending churn alerts after a purchase (``purchased_at``) and the alerts
    just raised (each with the score that raised it, for its segment), and what settled by
    ``watermark`` (see :mod:`streamcrm.core.interventions`). Whether an alert is held out is
    a pure function of customer and alert (:func:`streamcrm.core.experiments.is_control`),
    the same the worker marks the published alert with."""
    outcomes = state.alert_outcomes
    if purchased_at is not None:
        outcomes = record_outcome_purchase(outcomes, purchased_at)
    for score, alerts in raised:
        for alert in alerts:
            if alert.kind != "churn_risk":
                continue
            control = is_control(state.customer_id, alert.alert_id, config.alert_control_share)
            sent = AlertSent(
                alert.alert_id, alert.kind, score.segment_name, alert.raised_at, control
            )
            outcomes = record_alert(outcomes, sent)
    if watermark is None or not outcomes.pending:
        return outcomes, RetentionTally()
    settled_before = attribution_settled_before(state, config.rules, watermark)
    assert settled_before is not None  # the watermark bounds it
    return settle(outcomes, watermark, config.churn_window, settled_before)


@dataclass(frozen=True)
class MarketingStep:
    """The outcome of one marketing event: the state to save and the campaign figures it
    changed. Nothing is scored: a touch is what the business did, not the customer."""

    state: CustomerState
    campaigns: Tally = field(default_factory=Tally)
    duplicate: bool = False
    late_by: timedelta | None = None


def apply_marketing(
    state: CustomerState | None,
    event: MarketingEvent,
    config: ScoringConfig,
    watermark: datetime | None = None,
) -> MarketingStep:
    """Record a touch, retention offer, open or click in the customer's marketing memory.

    A repeated ``event_id`` changes nothing. An event older than the customer's newest
    marketing event less the allowed lateness (the rule of every topic), or than
    :func:`attribution_settled_before` (``watermark``: as there), is late: counted
    (``late_events``), not applied. A
    touch to a customer not seen yet makes a state for them (a prospect: their first event
    sets when they were first seen). The touch is filed under the customer's segment of their
    newest score ("" before any). Marketing events do not move the customer's last event
    time: recency and churn are about what the customer did.
    """
    if state is not None and event.event_id in state.recent_event_ids:
        return MarketingStep(state=state, duplicate=True)
    state = state_for(state, event)
    recent_ids = with_event_id(state, event.event_id)
    newest = state.newest_by_topic.get("marketing")
    horizons = [
        horizon
        for horizon in (
            None if newest is None else newest - config.rules.allowed_lateness,
            attribution_settled_before(state, config.rules, watermark),
        )
        if horizon is not None
    ]
    if horizons and event.occurred_at < max(horizons):
        late_by = max(horizons) - event.occurred_at
        return MarketingStep(state=counted_late(state, recent_ids), late_by=late_by)
    window = config.rules.attribution_window
    memory = state.marketing
    match event:
        case CampaignTouch() | RetentionOffer():
            segment = state.score_history[-1].segment_name if state.score_history else ""
            cost = config.rules.to_reporting_cents(event.cost, event.currency)
            touch = Touch(
                event.touch_id, event.campaign_id, event.arm, event.occurred_at, cost, segment
            )
            memory, campaigns = record_touch(memory, touch, window)
        case TouchOpened():
            memory, campaigns = record_open(memory, event.touch_id, event.occurred_at, window)
        case TouchClicked():
            memory, campaigns = record_click(memory, event.touch_id, event.occurred_at, window)
    moved = with_changes(
        state,
        recent_event_ids=recent_ids,
        newest_by_topic={
            **state.newest_by_topic,
            "marketing": event.occurred_at if newest is None else max(newest, event.occurred_at),
        },
    )
    settled = attribution_settled_before(moved, config.rules, watermark)
    if settled is not None:
        memory = forget_before(memory, settled, window)
    return MarketingStep(state=with_changes(moved, marketing=memory), campaigns=campaigns)


def _rescores_before(
    state: CustomerState,
    until: datetime,
    models: ModelBundle,
    config: ScoringConfig,
    limit: int | None,
    inclusive: bool,
) -> tuple[CustomerState, list[Rescore]]:
    """Re-score ``state`` at each of its re-score moments up to ``until`` (at most ``limit``),
    each through the alert rules and into the score history."""
    made: list[Rescore] = []
    while limit is None or len(made) < limit:
        moment = rescore_due_at(state, config)
        if moment is None or moment > until or (moment == until and not inclusive):
            break
        lapsed = moment >= state.last_event_at + config.rescore_horizon
        score = _score_as_of(
            state,
            moment,
            rescore_id(state.customer_id, moment),
            "time",
            models,
            config,
            lapsed=lapsed,
        ).score
        alert_memory, alerts = evaluate_alerts(state.alert_memory, score, config.alerts)
        state = with_changes(
            state,
            alert_memory=alert_memory,
            score_history=with_score_point(state.score_history, score),
            last_scored_at=moment,
        )
        made.append(Rescore(score, tuple(alerts)))
    return state, made


@dataclass(frozen=True)
class _Made:
    """A score and the features it was made from."""

    score: CustomerScore
    features: dict[str, float]
    churn_inputs: dict[str, float]
    buying: RepeatBuying | None
    """The customer's repeat-buying statistics (None before a first purchase)."""


def _score_as_of(
    state: CustomerState,
    as_of: datetime,
    event_id: str,
    trigger: ScoreTrigger,
    models: ModelBundle,
    config: ScoringConfig,
    lapsed: bool = False,
) -> _Made:
    """Score ``state`` as of event time ``as_of``: the one scoring step of events and re-scores.

    Every time-based figure (recency, tenure, rates, silence against the customer's usual gap,
    the repeat-buying forecasts) is measured at ``as_of``; the models are only read.
    """
    tickets = state.ticket_totals
    features = customer_features(state, as_of, tickets)
    churn_inputs = churn_features(state, as_of, config.churn_window, features)
    cancelled = state.explicitly_cancelled
    churn_probability, drivers = (
        (1.0, []) if cancelled else models.churn.predict_and_explain(churn_inputs)
    )
    buying = repeat_buying(state)
    forecasts = (
        models.forecasts(buying, as_of, (config.churn_window, config.clv_horizon))
        if buying
        else None
    )
    window_forecast, value_forecast = forecasts if forecasts is not None else (None, None)
    segment_id, segment_name, segment_distance = models.segments.place_one(features)
    mean_satisfaction = satisfaction_mean(state)
    recency_code, frequency_code, monetary_code = models.population.rfm_codes(features)
    loyalty = loyalty_index(state, features)
    simple_clv = clv_simple(features, churn_probability)

    # Built unvalidated: every value below is computed here, of its field's type (see
    # streamcrm.core.trusted; tests/unit/test_trusted.py holds it to the validated build).
    score = unvalidated(
        CustomerScore,
        customer_id=state.customer_id,
        as_of=as_of,
        event_id=event_id,
        churn_probability=churn_probability,
        cancelled=cancelled,
        segment_id=segment_id,
        segment_name=segment_name,
        satisfaction_mean=mean_satisfaction,
        satisfaction_recent=state.satisfaction_recent,
        csat_mean=csat_mean(state),
        nps=net_promoter_score(state),
        currency=config.rules.reporting_currency,
        customer_value=customer_value(features),
        clv_simple=simple_clv,
        clv_to_acquisition_cost=clv_to_acquisition_cost(
            simple_clv,
            state.acquisition.cents / 100 if state.acquisition is not None else None,
        ),
        clv_discounted=clv_discounted(
            features, churn_probability, config.discount_rate, config.horizon_years
        ),
        loyalty=loyalty,
        health=health_score(
            churn_probability, features["satisfaction_recent"], loyalty, features["open_tickets"]
        ),
        recency_days=features["recency_days"] if state.last_purchase_at else None,
        frequency=state.order_count,
        rfm_recency=recency_code,
        rfm_frequency=frequency_code,
        rfm_monetary=monetary_code,
        population_satisfaction_mean=models.population.mean_satisfaction,
        monetary=state.monetary,
        open_tickets=state.open_tickets,
        tickets_by_category=dict(sorted(tickets.by_category.items())),
        escalations=state.escalations,
        sla_breaches=tickets.sla_breaches,
        mean_first_response_hours=mean_first_response_hours(tickets),
        mean_resolution_hours=mean_resolution_hours(tickets),
        churn_drivers=[
            unvalidated(ChurnDriver, feature=name, log_odds=value) for name, value in drivers
        ],
        segment_distance=segment_distance,
        probability_alive=None if window_forecast is None else window_forecast.probability_alive,
        expected_purchases=(
            None if window_forecast is None or cancelled else window_forecast.expected_purchases
        ),
        clv_expected=(
            None if value_forecast is None else 0.0 if cancelled else value_forecast.expected_value
        ),
        trigger=trigger,
        lapsed=lapsed,
        usual_gap_days=usual_gap_days(state),
        model_version=models.version,
    )
    return _Made(score, features, churn_inputs, buying)


def usual_gap_days(state: CustomerState) -> float | None:
    """The customer's mean days between purchase days, (last − first) / (days − 1): what their
    silence is measured against ("quiet 4.2x their usual gap"). None before a repeat purchase.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> usual_gap_days(CustomerState(customer_id="c", first_seen_at=t0, last_event_at=t0,
    ...     first_purchase_at=t0, last_purchase_at=t0 + timedelta(days=21), purchase_days=4))
    7.0
    """
    first, last = state.first_purchase_at, state.last_purchase_at
    if first is None or last is None or state.purchase_days < 2:
        return None
    return (last - first).total_seconds() / 86_400 / (state.purchase_days - 1)


@dataclass(frozen=True)
class SweptCustomer:
    """A quiet customer after the watermark moved: heartbeats added, windows closed, and the
    re-score that fell due (with the alerts it raised), if one did."""

    state: CustomerState
    examples_learned: int
    heartbeats: int
    due_at: datetime | None
    score: CustomerScore | None = None
    alerts: tuple[Alert, ...] = ()
    labelled: tuple[LabelledExample, ...] = ()
    """The snapshots this sweep settled (learned, in this order)."""
    retention: RetentionTally = field(default_factory=RetentionTally)
    """Churn alerts whose outcome this sweep settled."""


def sweep_customer(
    state: CustomerState,
    watermark: datetime,
    models: ModelBundle,
    config: ScoringConfig,
    learner: Learner | None = None,
) -> SweptCustomer:
    """Move a quiet customer on to ``watermark``: the label ledger, then the re-score.

    **Ledger.** Add the heartbeat snapshots the customer is owed and learn the windows now
    closed. A heartbeat at time g scores the customer's features as of g (recency keeps
    growing), so the model also learns what long silences lead to.

    **Re-score.** If the customer's next re-score moment m (:func:`rescore_due_at`: the grid
    *last event + k × interval*, after their newest score) has been passed by the watermark,
    score them again as of m: the same scoring core, the state otherwise unchanged, recency
    measured at m. The score goes through the alert rules and into the score history like any
    other. One re-score per visit: a customer owed several (event time jumped) is due again at
    once, so the caller's per-tick bound holds. Moments lie on the grid, never on the
    watermark itself, so replaying the same events gives the same re-scores (same ``as_of``,
    same ids), whenever the sweeps happen to run. At the re-score horizon the customer gets
    one last score marked ``lapsed`` and no more until their next event.
    """
    pending = state.pending_snapshots
    last_snapshot_at = state.last_snapshot_at
    heartbeats = 0
    if state.cancelled_at is None and last_snapshot_at is not None:
        last_activity = state.last_event_at
        for moment in heartbeat_times(
            last_snapshot_at,
            last_activity,
            watermark,
            config.heartbeat_interval,
            config.heartbeat_horizon,
        ):
            purchased = state.last_purchase_at is not None and (
                moment < state.last_purchase_at <= moment + config.churn_window
            )
            snapshot = unvalidated(
                PendingSnapshot,
                scored_at=moment,
                features=churn_features(state, moment, config.churn_window),
                purchased=purchased,
            )
            pending = add_snapshot(pending, snapshot, config.max_pending_snapshots)
            last_snapshot_at = moment
            heartbeats += 1
    labelled, pending = settle_closed(pending, watermark, config.churn_window)
    _learn(models if learner is None else learner, labelled)
    swept = with_changes(state, pending_snapshots=pending, last_snapshot_at=last_snapshot_at)
    swept, rescores = _rescores_before(swept, watermark, models, config, limit=1, inclusive=True)
    outcomes, retention = track_alert_outcomes(
        swept, None, [(r.score, r.alerts) for r in rescores], watermark, config
    )
    swept = with_changes(swept, alert_outcomes=outcomes)
    return SweptCustomer(
        retention=retention,
        state=swept,
        examples_learned=len(labelled),
        heartbeats=heartbeats,
        due_at=sweep_due_at(swept, config),
        score=rescores[0].score if rescores else None,
        alerts=rescores[0].alerts if rescores else (),
        labelled=tuple(labelled),
    )


def rescore_due_at(state: CustomerState, config: ScoringConfig) -> datetime | None:
    """When the customer is next re-scored as event time passes: the first moment
    m = last event + k × interval (k ≥ 1) after their newest score, or the re-score horizon
    after their last event (the lapsed score), whichever comes first. None: never scored,
    cancelled, or already scored as lapsed.

    The grid hangs on the customer's last event, the newest of their event times: the same
    whatever order their topics were consumed in, so once every event is in, a replay and the
    live path re-score a customer at the same moments.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> state = CustomerState(customer_id="c", first_seen_at=t0, last_event_at=t0,
    ...                       last_scored_at=t0)
    >>> config = ScoringConfig(rescore_interval=timedelta(days=7),
    ...                        rescore_horizon=timedelta(days=10))
    >>> rescore_due_at(state, config).day
    8
    >>> later = state.model_copy(update={"last_scored_at": t0 + timedelta(days=7)})
    >>> rescore_due_at(later, config).day  # the horizon comes first: the lapsed score
    11
    >>> rescore_due_at(later.model_copy(update={"last_scored_at": t0 + timedelta(days=10)}),
    ...                config) is None
    True
    """
    scored = state.newest_score_at
    interval = config.rescore_interval
    if scored is None or state.explicitly_cancelled or interval is None:
        return None
    anchor = state.last_event_at
    lapses_at = anchor + config.rescore_horizon
    if scored >= lapses_at:
        return None
    steps = max(1, (scored - anchor) // interval + 1)
    return min(anchor + steps * interval, lapses_at)


def sweep_due_at(state: CustomerState, config: ScoringConfig) -> datetime | None:
    """When the customer next needs a sweep: their ledger, their re-score or the settling of
    an alert's outcome, whichever comes first (None: none of them)."""
    moments = [
        moment
        for moment in (
            ledger_due_at(state, config),
            rescore_due_at(state, config),
            outcome_due_at(state, config),
        )
        if moment is not None
    ]
    return min(moments) if moments else None


def outcome_due_at(state: CustomerState, config: ScoringConfig) -> datetime | None:
    """When the customer's earliest pending churn alert settles: ``alert.at + churn window``
    (None: no alert pending). A customer who is otherwise never swept again (a cancellation,
    a lapsed score) is still visited then, so every alert is counted once its window closed,
    whether or not the customer comes back."""
    pending = state.alert_outcomes.pending
    return pending[0].at + config.churn_window if pending else None


def ledger_due_at(state: CustomerState, config: ScoringConfig) -> datetime | None:
    """When this customer's ledger next needs a sweep (None: nothing pending)."""
    return next_due(
        state.pending_snapshots,
        state.last_snapshot_at,
        state.last_event_at,
        config.churn_window,
        config.heartbeat_interval,
        config.heartbeat_horizon,
        cancelled=state.cancelled_at is not None,
    )


def _learn(learner: Learner, labelled: list[LabelledExample]) -> None:
    for example in labelled:
        learner.learn_labelled(example.features, example.churned)
