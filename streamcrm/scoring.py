"""One customer event in, one score out: the pure core of streamcrm.

``score_event(state, event, models, config)`` follows the one-way flow

    apply event to state → settle the label ledger (models learn) → features
    → churn probability + segment → deterministic scores → alerts + score history
    → new pending snapshot

and ``sweep_customer`` moves a quiet customer's ledger on when the watermark advances.

It does no I/O; the River models are the only thing it changes besides the returned state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from streamcrm.alerts import AlertRules, evaluate_alerts
from streamcrm.events import (
    Alert,
    CancellationEvent,
    ChurnDriver,
    CustomerScore,
    Event,
    PurchaseEvent,
)
from streamcrm.features import churn_features, customer_features, repeat_buying
from streamcrm.labels import (
    MAX_PENDING_SNAPSHOTS,
    LabelledExample,
    add_snapshot,
    heartbeat_times,
    next_due,
    record_purchase,
    settle_closed,
    settle_on_cancellation,
)
from streamcrm.models import BuyingObservation, Learner, ModelBundle
from streamcrm.scores import (
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
from streamcrm.state import CustomerState, PendingSnapshot, StateRules, apply, with_score_point


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
    """The alert thresholds (see streamcrm.alerts)."""


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
    """The alerts ``score`` raised (see :func:`streamcrm.alerts.evaluate_alerts`)."""
    examples_learned: int = 0
    duplicate: bool = False
    erased: bool = False
    """The customer was erased: nothing was saved or learned (see streamcrm.privacy)."""
    late_by: timedelta | None = None
    due_at: datetime | None = None
    """When the customer's label ledger next needs the watermark (see streamcrm.labels)."""


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

    ``watermark`` (event time up to which all events are in) closes churn windows. Settled
    labels are learned before the churn prediction; the scored customer is learned by the
    segments and population after they placed it (predict, then learn).
    """
    learner = models if learner is None else learner
    transition = apply(state, event, config.rules)
    if not transition.applied:
        return ScoredEvent(
            state=transition.state,
            score=None,
            duplicate=transition.duplicate,
            late_by=transition.late_by,
        )
    new_state = transition.state

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

    as_of = new_state.last_event_at
    features = customer_features(new_state, as_of)
    churn_inputs = churn_features(new_state, as_of, config.churn_window, features)
    cancelled = new_state.cancelled_at is not None and (
        new_state.last_purchase_at is None or new_state.last_purchase_at <= new_state.cancelled_at
    )
    churn_probability = 1.0 if cancelled else models.churn.predict_proba_one(churn_inputs)
    buying = repeat_buying(new_state)
    forecasts = (
        models.repeat_buying.forecasts(buying, as_of, (config.churn_window, config.clv_horizon))
        if buying
        else None
    )
    window_forecast, value_forecast = forecasts if forecasts is not None else (None, None)
    segment_id, segment_name, segment_distance = models.segments.place_one(features)
    mean_satisfaction = satisfaction_mean(new_state)
    recency_code, frequency_code, monetary_code = models.population.rfm_codes(features)
    loyalty = loyalty_index(new_state, features)
    tickets = new_state.ticket_totals
    simple_clv = clv_simple(features, churn_probability)

    score = CustomerScore(
        customer_id=new_state.customer_id,
        as_of=as_of,
        event_id=event.event_id,
        churn_probability=churn_probability,
        cancelled=cancelled,
        segment_id=segment_id,
        segment_name=segment_name,
        satisfaction_mean=mean_satisfaction,
        satisfaction_recent=new_state.satisfaction_recent,
        csat_mean=csat_mean(new_state),
        nps=net_promoter_score(new_state),
        currency=config.rules.reporting_currency,
        customer_value=customer_value(features),
        clv_simple=simple_clv,
        clv_to_acquisition_cost=clv_to_acquisition_cost(
            simple_clv,
            new_state.acquisition.cents / 100 if new_state.acquisition is not None else None,
        ),
        clv_discounted=clv_discounted(
            features, churn_probability, config.discount_rate, config.horizon_years
        ),
        loyalty=loyalty,
        health=health_score(
            churn_probability, features["satisfaction_recent"], loyalty, features["open_tickets"]
        ),
        recency_days=features["recency_days"] if new_state.last_purchase_at else None,
        frequency=new_state.order_count,
        rfm_recency=recency_code,
        rfm_frequency=frequency_code,
        rfm_monetary=monetary_code,
        population_satisfaction_mean=models.population.mean_satisfaction,
        monetary=new_state.monetary,
        open_tickets=new_state.open_tickets,
        tickets_by_category=dict(sorted(tickets.by_category.items())),
        escalations=new_state.escalations,
        sla_breaches=tickets.sla_breaches,
        mean_first_response_hours=mean_first_response_hours(tickets),
        mean_resolution_hours=mean_resolution_hours(tickets),
        churn_drivers=[]
        if cancelled
        else [
            ChurnDriver(feature=name, log_odds=value)
            for name, value in models.churn.explain_one(churn_inputs)
        ],
        segment_distance=segment_distance,
        probability_alive=None if window_forecast is None else window_forecast.probability_alive,
        expected_purchases=(
            None if window_forecast is None or cancelled else window_forecast.expected_purchases
        ),
        clv_expected=(
            None if value_forecast is None else 0.0 if cancelled else value_forecast.expected_value
        ),
        model_version=models.version,
    )
    learner.learn_scored(
        features,
        mean_satisfaction,
        None if buying is None else BuyingObservation(new_state.customer_id, buying, as_of),
    )
    last_snapshot_at = new_state.last_snapshot_at
    if not cancelled:
        pending = add_snapshot(
            pending,
            PendingSnapshot(scored_at=as_of, features=churn_inputs),
            config.max_pending_snapshots,
        )
        last_snapshot_at = max(as_of, last_snapshot_at or as_of)
    alert_memory, alerts = evaluate_alerts(new_state.alert_memory, score, config.alerts)
    final_state = new_state.model_copy(
        update={
            "pending_snapshots": pending,
            "last_snapshot_at": last_snapshot_at,
            "alert_memory": alert_memory,
            "score_history": with_score_point(new_state.score_history, score),
        }
    )
    return ScoredEvent(
        state=final_state,
        score=score,
        alerts=tuple(alerts),
        examples_learned=len(labelled),
        due_at=ledger_due_at(final_state, config),
    )


@dataclass(frozen=True)
class SweptCustomer:
    """A quiet customer's ledger after the watermark moved: heartbeats added, windows closed."""

    state: CustomerState
    examples_learned: int
    heartbeats: int
    due_at: datetime | None


def sweep_customer(
    state: CustomerState,
    watermark: datetime,
    models: ModelBundle,
    config: ScoringConfig,
    learner: Learner | None = None,
) -> SweptCustomer:
    """Add the heartbeat snapshots a quiet customer is owed and learn the windows now closed.

    A heartbeat at time g scores the customer's features as of g (recency keeps growing), so
    the model also learns what long silences lead to.
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
            snapshot = PendingSnapshot(
                scored_at=moment,
                features=churn_features(state, moment, config.churn_window),
                purchased=purchased,
            )
            pending = add_snapshot(pending, snapshot, config.max_pending_snapshots)
            last_snapshot_at = moment
            heartbeats += 1
    labelled, pending = settle_closed(pending, watermark, config.churn_window)
    _learn(models if learner is None else learner, labelled)
    swept = state.model_copy(
        update={"pending_snapshots": pending, "last_snapshot_at": last_snapshot_at}
    )
    return SweptCustomer(
        state=swept,
        examples_learned=len(labelled),
        heartbeats=heartbeats,
        due_at=ledger_due_at(swept, config),
    )


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
