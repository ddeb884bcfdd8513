"""The scoring core's golden stream: one SHA-256 over everything the core produces.

Run ``python benchmarks/golden_stream.py`` before and after a change to the pure core
(``streamcrm.core``, ``streamcrm.models``) that must not change its output: the digest
printed must be the same. It replays a seeded simulation (``--customers`` customers over
``--days`` days, plus a campaign touching a share of them, so attribution runs too) in event
time, as a worker would:

- the watermark trails the newest event by the allowed lateness, and before each event every
  customer whose sweep fell due by the watermark is swept (:func:`sweep_customer`: heartbeats,
  settled labels, as-of re-scores);
- each customer event goes through :func:`score_event`, each marketing event through
  :func:`apply_marketing`;
- the models learn as they go: every update the core queues is learned before the next step,
  so the churn, segment, population and repeat-buying models are read fitted, not only empty;
- the run ends with a sweep to the newest event.

The digest covers, in order: every state saved (its JSON, and its JSON with
``exclude_unset=True``, so a state built another way must also have the same fields set),
every score and alert (the same two JSONs), every re-score, every queued model update (its
JSON), and each step's other outcomes (duplicate, lateness, due time, labels settled,
campaign and retention tallies, by ``repr``). The event count is printed with it.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel

from streamcrm.core.events import (
    CampaignTouch,
    Event,
    MarketingEvent,
    RetentionOffer,
    TouchClicked,
    TouchOpened,
)
from streamcrm.core.scoring import ScoringConfig, apply_marketing, score_event, sweep_customer
from streamcrm.core.state import CustomerState
from streamcrm.models import ModelBundle, QueuedUpdates
from streamcrm.sim.campaigns import CampaignTruth, simulate_campaign
from streamcrm.sim.simulator import DEFAULT_START, simulate

MARKETING_EVENTS = (CampaignTouch, RetentionOffer, TouchOpened, TouchClicked)
"""The event classes :func:`apply_marketing` takes (the others are scored)."""


class Digest:
    """A running SHA-256 over labelled records."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.records = 0

    def add(self, label: str, text: str) -> None:
        """Fold one record, tagged with what it is, into the digest."""
        self.sha.update(f"{label}\x1f{text}\x1e".encode())
        self.records += 1

    def add_model(self, label: str, model: BaseModel) -> None:
        """A pydantic record: its JSON, and its JSON with only the fields set."""
        self.add(label, model.model_dump_json())
        self.add(f"{label}:set", model.model_dump_json(exclude_unset=True))

    def add_models(self, label: str, models: Iterable[BaseModel]) -> None:
        for model in models:
            self.add_model(label, model)


def golden_events(
    customers: int, days: int, seed: int, touched: float
) -> list[Event | MarketingEvent]:
    """The simulated customer events and a campaign's marketing events (and the purchases it
    caused) to ``touched`` of the customers, sorted by event time, then id."""
    simulation = simulate(customers=customers, days=days, seed=seed)
    campaign = CampaignTruth.with_rates(
        "golden", {"A": 0.05, "B": 0.15}, open_rate=0.5, click_rate=0.2
    )
    reached = sorted(simulation.truth)[: int(customers * touched)]
    marketing = simulate_campaign(
        campaign, reached, DEFAULT_START + timedelta(days=10), max(days - 20, 1), seed=seed
    )
    events: list[Event | MarketingEvent] = [*simulation.events, *marketing]
    return sorted(events, key=lambda event: (event.occurred_at, event.event_id))


def replay(events: Sequence[Event | MarketingEvent], digest: Digest) -> float:
    """Replay ``events`` through the pure core (module docstring), folding every output into
    ``digest``; the seconds spent in the core."""
    config = ScoringConfig(heartbeat_interval=timedelta(days=30))
    models, queued = ModelBundle(), QueuedUpdates()
    states: dict[str, CustomerState] = {}
    due: list[tuple[datetime, str]] = []
    core_s = 0.0

    def learn_queued() -> None:
        for update in queued.drain():
            digest.add("update", update.model_dump_json())
            models.learn(update)

    def sweep_until(watermark: datetime) -> None:
        nonlocal core_s
        while due and due[0][0] <= watermark:
            at, customer_id = heapq.heappop(due)
            started = time.perf_counter()
            swept = sweep_customer(states[customer_id], watermark, models, config, queued)
            core_s += time.perf_counter() - started
            digest.add("swept", repr((at, swept.examples_learned, swept.heartbeats, swept.due_at)))
            digest.add("swept-outcomes", repr((swept.labelled, swept.retention)))
            digest.add_model("state", swept.state)
            if swept.score is not None:
                digest.add_model("rescore", swept.score)
            digest.add_models("alert", swept.alerts)
            learn_queued()
            states[customer_id] = swept.state
            if swept.due_at is not None:
                heapq.heappush(due, (swept.due_at, customer_id))

    lateness = config.rules.allowed_lateness
    newest: datetime | None = None
    for event in events:
        newest = event.occurred_at if newest is None else max(newest, event.occurred_at)
        watermark = newest - lateness
        sweep_until(watermark)
        state = states.get(event.customer_id)
        if not isinstance(event, MARKETING_EVENTS):
            started = time.perf_counter()
            scored = score_event(state, event, models, config, watermark, queued)
            core_s += time.perf_counter() - started
            digest.add(
                "scored",
                repr(
                    (
                        event.event_id,
                        scored.duplicate,
                        scored.erased,
                        scored.late_by,
                        scored.due_at,
                        scored.examples_learned,
                        scored.labelled,
                        scored.campaigns,
                        scored.retention,
                    )
                ),
            )
            digest.add_model("state", scored.state)
            for score, alerts in scored.outputs:
                digest.add_model("score", score)
                digest.add_models("alert", alerts)
            learn_queued()
            states[event.customer_id] = scored.state
            if scored.due_at is not None:
                heapq.heappush(due, (scored.due_at, event.customer_id))
        else:
            started = time.perf_counter()
            step = apply_marketing(state, event, config, watermark)
            core_s += time.perf_counter() - started
            digest.add(
                "marketing", repr((event.event_id, step.duplicate, step.late_by, step.campaigns))
            )
            digest.add_model("state", step.state)
            states[event.customer_id] = step.state
    if newest is not None:
        sweep_until(newest)
    return core_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--touched", type=float, default=0.2, help="share of customers in the campaign"
    )
    args = parser.parse_args(argv)
    events = golden_events(args.customers, args.days, args.seed, args.touched)
    digest = Digest()
    core_s = replay(events, digest)
    per_event_us = core_s / len(events) * 1e6
    print(f"events {len(events)}  records {digest.records}  core {per_event_us:.1f} us/event")
    print(f"sha256 {digest.sha.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
