"""``streamcrm bench --learner-only``: the update stream it measures is a worker's, whole."""

from __future__ import annotations

import asyncio

from streamcrm.bench.learner import (
    NO_REFITS,
    LearnerFigures,
    as_messages,
    learn_in_process,
    recorded_updates,
    workers_served,
)
from streamcrm.models import ModelUpdateBatch
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from streamcrm.worker.worker import MODEL_UPDATE_BATCH


def test_every_scored_event_queues_an_update_and_settled_labels_add_more() -> None:
    events = list(simulate(customers=40, days=120, seed=3).events)

    updates = asyncio.run(recorded_updates(Settings(), events, sweep_every=50))

    kinds = {kind: sum(u.kind == kind for u in updates) for kind in ("scored", "labelled")}
    assert kinds["scored"] == len(events)  # the simulated stream has no invalid event
    assert kinds["labelled"] > 0


def test_updates_travel_in_the_worker_s_batches_and_are_all_learned() -> None:
    events = list(simulate(customers=40, days=120, seed=3).events)
    updates = asyncio.run(recorded_updates(Settings(), events))

    messages = as_messages(updates, "crm.model-updates")

    sizes = [len(ModelUpdateBatch.model_validate_json(m.value or b"").updates) for m in messages]
    assert sum(sizes) == len(updates) and max(sizes) <= MODEL_UPDATE_BATCH
    assert [m.offset for m in messages] == list(range(len(messages)))
    assert learn_in_process(messages).updates == len(updates)
    assert learn_in_process(messages, NO_REFITS).refits <= 1


def test_workers_served_divide_the_learner_s_rate_by_what_the_workers_send() -> None:
    figures = LearnerFigures(events=1_000, updates=1_200, messages=3)
    figures.in_process_updates_per_s = 30_000.0
    figures.steady_updates_per_s = 60_000.0

    assert figures.workers_served == workers_served(30_000, 1.2) == 5.0
    assert figures.workers_served_live == 10.0
    figures.end_to_end_updates_per_s = 24_000.0
    assert figures.workers_served == 4.0
