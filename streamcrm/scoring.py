"""One customer event in, one score out: the pure core of streamcrm.

``score_event(state, event, models, config)`` follows the one-way flow

    apply event to state → label pending snapshots (models learn) → features
    → churn probability + segment → deterministic scores → new pending snapshot

It does no I/O; the River models are the only thing it changes besides the returned state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from streamcrm.events import CustomerScore, Event
from streamcrm.features import customer_features
from streamcrm.models import ModelBundle
from streamcrm.models.churn import add_pending, settle_pending
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
from streamcrm.state import CustomerState, PendingSnapshot, StateRules, apply


@dataclass(frozen=True)
class ScoringConfig:
    """The knobs of the scoring core (a slice of the settings)."""

    churn_window: timedelta = timedelta(days=90)
    discount_rate: float = DEFAULT_DISCOUNT_RATE
    horizon_years: int = DEFAULT_HORIZON_YEARS
    rules: StateRules = field(default_factory=StateRules)


@dataclass(frozen=True)
class ScoredEvent:
    """The outcome of one event: the state to save and the score to emit.

    ``score`` is None when the event was a duplicate (nothing changed) or late (only the
    customer's late-event count changed; ``late_by`` says by how much).
    """

    state: CustomerState
    score: CustomerScore | None
    examples_learned: int = 0
    duplicate: bool = False
    late_by: timedelta | None = None


def score_event(
    state: CustomerState | None, event: Event, models: ModelBundle, config: ScoringConfig
) -> ScoredEvent:
    """Apply ``event``, let the models learn from what it settles, and score the customer."""
    transition = apply(state, event, config.rules)
    if not transition.applied:
        return ScoredEvent(
            state=transition.state,
            score=None,
            duplicate=transition.duplicate,
            late_by=transition.late_by,
        )
    new_state = transition.state

    labelled, pending = settle_pending(new_state.pending_snapshots, event, config.churn_window)
    for example in labelled:
        models.churn.learn_one(example.features, example.churned)

    as_of = new_state.last_event_at
    features = customer_features(new_state, as_of)
    cancelled = new_state.cancelled_at is not None and (
        new_state.last_purchase_at is None or new_state.last_purchase_at <= new_state.cancelled_at
    )
    churn_probability = 1.0 if cancelled else models.churn.predict_proba_one(features)
    segment_id, segment_name = models.segments.learn_predict_one(features)
    mean_satisfaction = satisfaction_mean(new_state)
    models.population.learn_one(features, mean_satisfaction)
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
        mean_first_response_hours=mean_first_response_hours(new_state),
        mean_resolution_hours=mean_resolution_hours(new_state),
        model_version=models.version,
    )
    if not cancelled:
        pending = add_pending(pending, PendingSnapshot(scored_at=as_of, features=features))
    return ScoredEvent(
        state=new_state.model_copy(update={"pending_snapshots": pending}),
        score=score,
        examples_learned=len(labelled),
    )
