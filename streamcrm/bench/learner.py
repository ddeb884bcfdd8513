"""``streamcrm bench --learner-only``: how many model updates per second one
``streamcrm learner`` absorbs, and so how many scoring workers it can serve.

1. **Updates per event.** A simulated stream goes through a scoring pipeline with shared
   models (as a worker under ``STREAMCRM_LEARNER=process``: it only queues updates), on the
   in-memory store, with a sweep of every partition every :data:`SWEEP_EVERY` events (the
   sweeps settle churn labels and send heartbeats); every queued update is kept. Updates per
   event is their count over the events scored.
2. **The learner, in process.** Those updates, in the worker's batches of
   :data:`~streamcrm.worker.worker.MODEL_UPDATE_BATCH`, decoded and learned by a
   :class:`~streamcrm.learner.learner.PositionedLearner` with a checkpoint (to the in-memory
   store) every :data:`CHECKPOINT_INTERVAL_S`: the learner's own CPU cost, no Kafka.
3. **The learner, end to end.** The same messages on a model-updates topic of their own;
   ``run_learner`` (the loop of ``streamcrm learner``) reads, learns and checkpoints them to
   Redis; the rate is the sustained one (10 % to 90 % of the messages) of the checkpoints'
   offsets.

Workers served = updates/s ÷ (updates per event × events/s per worker).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from streamcrm.bench.harness import fresh_settings, sustained_rate
from streamcrm.core.events import Event
from streamcrm.core.scoring import ScoringConfig
from streamcrm.learner.learner import PositionedLearner
from streamcrm.learner.process import run_learner
from streamcrm.learner.resume import position_field
from streamcrm.models import ModelUpdate, ModelUpdateBatch
from streamcrm.services.connections import kafka_client_options, redis_state_store
from streamcrm.services.kafka import Record, ensure_topics, event_topic, make_producer, topic_ids
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from streamcrm.store import InMemoryStateStore, partition_of
from streamcrm.worker.learning import MODEL_CHECKPOINT
from streamcrm.worker.pipeline import ScoringPipeline
from streamcrm.worker.worker import MODEL_UPDATE_BATCH

WORKER_EVENTS_PER_S = 5_000
"""The rate a scoring worker is to reach (issue 20): what a learner must keep up with."""
SWEEP_EVERY = 1_000
"""Events between two sweeps while the updates are recorded."""
CHECKPOINT_INTERVAL_S = 1.0
"""The learner's checkpoint interval in the bench (production: 10 s; shorter costs more)."""


def workers_served(
    updates_per_s: float, updates_per_event: float, events_per_s: float = WORKER_EVENTS_PER_S
) -> float:
    """How many workers, each scoring ``events_per_s``, one learner keeps up with.

    >>> workers_served(60_000, 1.5, 5_000)
    8.0
    """
    return updates_per_s / (updates_per_event * events_per_s)


@dataclass
class LearnerFigures:
    """What ``streamcrm bench --learner-only`` measured."""

    events: int
    updates: int
    messages: int
    kinds: dict[str, int] = field(default_factory=dict)
    in_process_updates_per_s: float = 0.0
    """Decode, learn and checkpoint, with the repeat-buying refits the stream's event time
    calls for (every 7 days of it)."""
    refits: int = 0
    steady_updates_per_s: float = 0.0
    """The same without refits: what a live learner pays between two weekly refits."""
    seconds_per_refit: float | None = None
    end_to_end_updates_per_s: float | None = None

    @property
    def updates_per_event(self) -> float:
        return self.updates / max(self.events, 1)

    @property
    def workers_served(self) -> float:
        """Workers at :data:`WORKER_EVENTS_PER_S` one learner serves: at the end-to-end rate
        where measured, else the in-process one (both with the stream's refits)."""
        rate = self.end_to_end_updates_per_s or self.in_process_updates_per_s
        return workers_served(rate, self.updates_per_event)

    @property
    def workers_served_live(self) -> float:
        """The same at the steady rate: live, event time passes as wall time and a refit
        comes once a week, so refits take no measurable share."""
        return workers_served(self.steady_updates_per_s, self.updates_per_event)


async def recorded_updates(
    settings: Settings, events: Sequence[Event], sweep_every: int = SWEEP_EVERY
) -> list[ModelUpdate]:
    """Every update a worker with shared models queues for ``events`` (with sweeps)."""
    pipeline = ScoringPipeline(
        InMemoryStateStore(),
        ScoringConfig(heartbeat_interval=timedelta(days=30)),
        shared_models=True,
    )
    partitions = range(settings.partitions)
    updates: list[ModelUpdate] = []
    offsets: Counter[tuple[str, int]] = Counter()
    for index, event in enumerate(events, start=1):
        topic = event_topic(settings, event)
        partition = partition_of(event.customer_id, settings.partitions)
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] += 1
        await pipeline.handle(
            event.model_dump_json().encode(),
            topic,
            partition,
            offset,
            key=event.customer_id.encode(),
        )
        if index % sweep_every == 0:
            await pipeline.sweep(partitions, limit=10_000)
        updates.extend(pipeline.drain_updates())
    await pipeline.sweep(partitions, limit=10_000)
    updates.extend(pipeline.drain_updates())
    return updates


def as_messages(updates: Sequence[ModelUpdate], topic: str) -> list[Record]:
    """``updates`` as a worker publishes them: batches of ``MODEL_UPDATE_BATCH``."""
    return [
        Record(
            topic,
            0,
            offset,
            b"models",
            ModelUpdateBatch(updates=list(updates[start : start + MODEL_UPDATE_BATCH]))
            .model_dump_json()
            .encode(),
        )
        for offset, start in enumerate(range(0, len(updates), MODEL_UPDATE_BATCH))
    ]


@dataclass(frozen=True)
class Learned:
    """One in-process pass of a learner over the messages."""

    seconds: float
    updates: int
    refits: int

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds


NO_REFITS = timedelta(days=365_000)
"""A repeat-buying refit interval no bench stream reaches (one fit at the start at most)."""


def learn_in_process(
    messages: Sequence[Record], refit_interval: timedelta | None = None
) -> Learned:
    """Decode, learn and checkpoint (to the in-memory store) every message, as the learner
    does but without Kafka or Redis; ``refit_interval``: the repeat-buying models' refit
    interval in event time (None: the models' own, 7 days)."""
    learner = PositionedLearner(InMemoryStateStore(), messages[0].topic, None)
    if refit_interval is not None:
        learner.models.repeat_buying.refit_interval = refit_interval

    async def learn_all() -> Learned:
        updates = 0
        started = due = time.perf_counter()
        for message in messages:
            updates += learner.learn_records([message]).updates
            if time.perf_counter() >= due:
                await learner.checkpoint()
                due = time.perf_counter() + CHECKPOINT_INTERVAL_S
        await learner.checkpoint()
        return Learned(time.perf_counter() - started, updates, learner.models.repeat_buying.fits)

    return asyncio.run(learn_all())


def measure_end_to_end(settings: Settings, messages: Sequence[Record]) -> float:
    """Updates per second ``run_learner`` sustains from a Kafka topic to Redis checkpoints."""
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings, settings.kafka_bootstrap)
    topic = settings.topics.model_updates
    producer = make_producer(settings.kafka_bootstrap, kafka_client_options(settings))
    for message in messages:
        producer.send(topic, key=message.key, value=message.value)
    producer.flush()
    producer.close()
    ids = topic_ids(settings.kafka_bootstrap, [topic], kafka_client_options(settings))
    here = position_field(topic, ids[topic])
    sizes = [len(ModelUpdateBatch.model_validate_json(m.value or b"").updates) for m in messages]
    learned_before = [sum(sizes[:n]) for n in range(len(sizes) + 1)]

    async def follow() -> list[tuple[float, int]]:
        stop = asyncio.Event()
        learner = asyncio.create_task(run_learner(settings, stop))
        store = redis_state_store(settings)
        samples = [(time.perf_counter(), 0)]
        try:
            while samples[-1][1] < learned_before[-1]:
                if learner.done():
                    learner.result()  # raises what stopped it
                    raise RuntimeError("the learner stopped before learning every update")
                offsets = await store.load_model_next_offsets(MODEL_CHECKPOINT)
                samples.append((time.perf_counter(), learned_before[offsets.get(here, 0)]))
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await learner
            await store.close()
        return samples

    return sustained_rate(asyncio.run(follow()), learned_before[-1])


def run_learner_bench(
    base: Settings,
    customers: int,
    days: int,
    seed: int,
    out: Callable[[str], None] = print,
    end_to_end: bool = True,
) -> LearnerFigures:
    """Every measurement of the module docstring, in turn."""
    out(f"simulating {customers:,} customers over {days} days ...")
    events = list(simulate(customers=customers, days=days, seed=seed).events)
    settings = fresh_settings(base, "learner").model_copy(
        update={"learner": "process", "model_checkpoint_interval_s": CHECKPOINT_INTERVAL_S}
    )
    out(f"{len(events):,} events through a worker's pipeline, recording its model updates ...")
    updates = asyncio.run(recorded_updates(settings, events))
    messages = as_messages(updates, settings.topics.model_updates)
    figures = LearnerFigures(
        events=len(events),
        updates=len(updates),
        messages=len(messages),
        kinds=dict(sorted(Counter(update.kind for update in updates).items())),
    )
    out(f"{len(updates):,} updates in {len(messages):,} messages; learning them in process ...")
    with_refits = learn_in_process(messages)
    steady = learn_in_process(messages, NO_REFITS)
    figures.in_process_updates_per_s = with_refits.updates_per_s
    figures.refits = with_refits.refits
    figures.steady_updates_per_s = steady.updates_per_s
    extra_seconds = with_refits.seconds - steady.seconds
    if with_refits.refits > steady.refits and extra_seconds > 0:  # else lost in the noise
        figures.seconds_per_refit = extra_seconds / (with_refits.refits - steady.refits)
    if end_to_end:
        out("the learner loop, from Kafka to checkpoints in Redis ...")
        figures.end_to_end_updates_per_s = measure_end_to_end(settings, messages)
    return figures


def format_learner_report(figures: LearnerFigures) -> str:
    """The figures as a few lines of text."""
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in figures.kinds.items())
    lines = [
        f"events scored                    {figures.events:,}",
        f"model updates queued             {figures.updates:,} ({kinds})",
        f"updates per event                {figures.updates_per_event:.3f}",
        f"learner, in process              {figures.in_process_updates_per_s:,.0f} updates/s"
        f" (decode + learn + checkpoints, {figures.refits} repeat-buying refits)",
        f"learner, in process, no refits   {figures.steady_updates_per_s:,.0f} updates/s",
    ]
    if figures.seconds_per_refit is not None:
        lines.append(f"one repeat-buying refit          {figures.seconds_per_refit:.2f} s")
    if figures.end_to_end_updates_per_s is not None:
        lines.append(
            f"learner, Kafka to Redis          {figures.end_to_end_updates_per_s:,.0f} updates/s"
            " (streamcrm learner's loop, sustained)"
        )
    lines.append(
        f"workers served at {WORKER_EVENTS_PER_S:,} events/s   {figures.workers_served:.1f}"
        f" (= updates/s / ({figures.updates_per_event:.3f} x {WORKER_EVENTS_PER_S:,}));"
        f" live, refits weekly: {figures.workers_served_live:.1f}"
    )
    return "\n".join(lines)
