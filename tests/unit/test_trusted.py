"""The scoring core's unvalidated builds and copies give exactly the validated models.

:mod:`streamcrm.core.trusted` builds the models the core makes per event without validating
them: right only while every value the core passes has its field's declared type (validation
would convert an ``int`` or a numpy float to ``float``, a list to a tuple, and copy a dict).
Here every build and every copy of a simulated stream (learning models, sweeps and re-scores,
a campaign's touches) is made both ways and compared field by field, type by type, with the
same fields set, the same JSON and the same JSON of the fields set.
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from streamcrm.core import trusted
from streamcrm.core.events import CampaignTouch, RetentionOffer, TouchClicked, TouchOpened
from streamcrm.core.records import ChurnDriver
from streamcrm.core.scoring import ScoringConfig, apply_marketing, score_event, sweep_customer
from streamcrm.core.state import CustomerState, ScorePoint
from streamcrm.models import ModelBundle
from streamcrm.sim.campaigns import CampaignTruth, simulate_campaign
from streamcrm.sim.simulator import DEFAULT_START, simulate


def typed(value: Any) -> Any:
    """``value`` with the type of every part of it spelled out, so two values compare equal
    only if they are equal and of the same types all the way down."""
    if isinstance(value, BaseModel):
        return (
            type(value),
            typed(value.__dict__),
            sorted(value.model_fields_set),
            value.__pydantic_extra__,
            value.__pydantic_private__,
        )
    if isinstance(value, dict):
        return (type(value), [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple | set | frozenset):
        return (type(value), [typed(item) for item in value])
    return (type(value), value)


def assert_same_model(fast: BaseModel, plain: BaseModel) -> None:
    assert typed(fast) == typed(plain)
    assert fast.model_dump_json() == plain.model_dump_json()
    assert fast.model_dump_json(exclude_unset=True) == plain.model_dump_json(exclude_unset=True)


def assert_same_copy(fast: BaseModel, plain: BaseModel) -> None:
    """Two shallow copies hold the very same field values (so the same JSON), in the same
    order, with the same fields set."""
    assert type(fast) is type(plain)
    assert list(fast.__dict__) == list(plain.__dict__)
    assert all(fast.__dict__[name] is value for name, value in plain.__dict__.items())
    assert fast.model_fields_set == plain.model_fields_set
    assert (fast.__pydantic_extra__, fast.__pydantic_private__) == (
        plain.__pydantic_extra__,
        plain.__pydantic_private__,
    )


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every module that uses :func:`trusted.unvalidated` or :func:`trusted.with_changes`
    gets a version that also builds the plain way and compares; counts what was checked."""
    counts: Counter[str] = Counter()
    fast_build, fast_copy = trusted.unvalidated, trusted.with_changes

    def unvalidated(model: type[BaseModel], /, **values: Any) -> BaseModel:
        fast = fast_build(model, **values)
        assert_same_model(fast, model(**values))
        counts[f"build {model.__name__}"] += 1
        return fast

    def with_changes(model: BaseModel, /, **changes: Any) -> BaseModel:
        fast = fast_copy(model, **changes)
        assert_same_copy(fast, model.model_copy(update=changes))
        counts[f"copy {type(model).__name__}"] += 1
        return fast

    for name, module in list(sys.modules.items()):
        if not name.startswith("streamcrm.") or name == "streamcrm.core.trusted":
            continue
        if getattr(module, "unvalidated", None) is fast_build:
            monkeypatch.setattr(module, "unvalidated", unvalidated)
        if getattr(module, "with_changes", None) is fast_copy:
            monkeypatch.setattr(module, "with_changes", with_changes)
    return counts


def replay_simulated_stream() -> None:
    """A simulated stream through the core as a worker runs it: the models learning as they
    go, quiet customers swept as the watermark passes their due time (re-scores), a
    campaign's touches, opens and clicks included."""
    simulation = simulate(customers=60, days=120, seed=11)
    campaign = CampaignTruth.with_rates("spring", {"A": 0.2, "B": 0.4}, open_rate=0.6)
    touched = sorted(simulation.truth)[:20]
    marketing = simulate_campaign(campaign, touched, DEFAULT_START + timedelta(days=20), 60, 11)
    events = sorted(
        [*simulation.events, *marketing], key=lambda event: (event.occurred_at, event.event_id)
    )
    models, config = ModelBundle(), ScoringConfig(heartbeat_interval=timedelta(days=30))
    states: dict[str, CustomerState] = {}
    due: list[tuple[datetime, str]] = []
    for event in events:
        watermark = event.occurred_at - config.rules.allowed_lateness
        while due and due[0][0] <= watermark:
            _, customer_id = heapq.heappop(due)
            swept = sweep_customer(states[customer_id], watermark, models, config)
            states[customer_id] = swept.state
            if swept.due_at is not None:
                heapq.heappush(due, (swept.due_at, customer_id))
        state = states.get(event.customer_id)
        if isinstance(event, CampaignTouch | RetentionOffer | TouchOpened | TouchClicked):
            states[event.customer_id] = apply_marketing(state, event, config, watermark).state
        else:
            scored = score_event(state, event, models, config, watermark)
            states[event.customer_id] = scored.state
            if scored.due_at is not None:
                heapq.heappush(due, (scored.due_at, event.customer_id))


def test_every_unvalidated_build_and_copy_of_a_stream_is_the_validated_model(
    checked: Counter[str],
) -> None:
    replay_simulated_stream()

    builds = {kind.removeprefix("build ") for kind in checked if kind.startswith("build ")}
    assert builds == {
        "AlertMemory",
        "ChurnDriver",
        "CustomerScore",
        "CustomerState",
        "PendingSnapshot",
        "ScorePoint",
        "TicketTotals",
    }
    assert checked["copy CustomerState"] > 1_000
    assert checked["build ChurnDriver"] > 1_000  # the churn model was fitted and explained


def test_the_check_would_see_a_value_of_another_type() -> None:
    """The control: an ``int`` where the field says ``float`` is validated to ``1.0``, and
    the comparison tells the two apart."""
    values = {"feature": "complaints", "log_odds": 1}
    with pytest.raises(AssertionError):
        assert_same_model(trusted.unvalidated(ChurnDriver, **values), ChurnDriver(**values))


def test_fields_left_to_their_defaults_are_not_set() -> None:
    at = DEFAULT_START
    point = trusted.unvalidated(
        ScorePoint,
        as_of=at,
        churn_probability=0.5,
        health=50.0,
        clv_discounted=10.0,
        segment_name="loyal",
    )
    assert point.model_fields_set == set(ScorePoint.model_fields)
    state = trusted.unvalidated(CustomerState, customer_id="c1", first_seen_at=at, last_event_at=at)
    assert_same_model(state, CustomerState(customer_id="c1", first_seen_at=at, last_event_at=at))
    assert (
        state.tickets
        is not trusted.unvalidated(
            CustomerState, customer_id="c2", first_seen_at=at, last_event_at=at
        ).tickets
    )  # a default made by a factory is made afresh


def test_unknown_and_missing_fields_are_refused() -> None:
    with pytest.raises(TypeError, match="no field colour"):
        trusted.unvalidated(ChurnDriver, feature="complaints", log_odds=1.0, colour="red")
    with pytest.raises(TypeError, match="missing log_odds"):
        trusted.unvalidated(ChurnDriver, feature="complaints")
