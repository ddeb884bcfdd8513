"""``streamcrm bench``: the whole pipeline measured against its ceiling and a baseline, in one run.

What it measures, on one machine, in one run (so ratios compare like with like):

- **pipeline**: one ``streamcrm worker`` consuming a preloaded, realistic mixed stream
  (simulated purchases, feedback and support of many customers). Sustained events/s is the
  rate between 10 % and 90 % of the stream, from the worker's own per-second metrics reports
  (start-up and group join excluded).
- **learner**: with ``learner=process`` (the bench's default, ``--learner``), every scoring
  worker runs beside one ``streamcrm learner`` process that learns what it queues, so the
  worker only scores (issue 20's architecture); the components then count learning apart.
- **Faust pass-through**: :mod:`streamcrm.bench.passthrough` on the same stream (decode →
  emit, no state, no models): what the framework itself allows.
- **Quix Streams pass-through**: :mod:`streamcrm.bench.quix`, the same with the framework a
  user would pick instead of Faust (when ``quixstreams``, a ``dev`` extra, is installed).
- **ceiling**: the sum of the measured per-event costs of the components a worker runs for
  every event (validate, the pure scoring core with its models, the Redis load + atomic save,
  serialising the score), in one process without Kafka: the rate if nothing else cost time.
- **scaling**: the same stream through two workers of one consumer group, as a ratio to one.
- **latency** at a fixed offered load (half the measured pipeline rate): event produced →
  its score consumed, p50 / p90 / p95 / p99 / max, once in steady state (event time moving
  at wall-clock pace after the worker finished the stream: issue 20's target) and once
  catching up (event time jumping ahead): :mod:`streamcrm.bench.latency`.
- **memory**: the worker's resident set at the start and the end of the run, and Redis memory
  per customer (``used_memory`` growth over the customers stored).
- **re-scores** of quiet customers: their cost per customer (the pure core, and the Redis
  load + save with the outbox), the re-scores the pipeline worker made during its run, and
  the pipeline's rate again with re-scoring off (``STREAMCRM_RESCORE_INTERVAL_DAYS`` unset),
  as a ratio.

Every figure is printed in a table and written to a JSON file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import redis

from streamcrm.bench.harness import (
    GroupProgress,
    follow_progress,
    fresh_settings,
    preload,
    rss_mib,
    scored_count,
    shared_learner,
    stream_for,
    sustained_rate,
)
from streamcrm.bench.latency import (
    measure_catch_up_latency,
    measure_steady_latency,
    wait_until_quiet,
)
from streamcrm.bench.soak import EventTime, measure_soak
from streamcrm.core.events import (
    CampaignTouch,
    Event,
    TouchClicked,
    TouchOpened,
    decode_event,
    decode_marketing_event,
)
from streamcrm.core.records import ModelMetrics
from streamcrm.core.scoring import ScoringConfig, apply_marketing, score_event, sweep_customer
from streamcrm.core.state import CustomerState
from streamcrm.models import ModelBundle, QueuedUpdates
from streamcrm.services.collector import collector_as_in_a_worker
from streamcrm.services.kafka import (
    ensure_topics,
)
from streamcrm.services.processes import (
    start_process,
    start_worker_process,
    stop_worker_process,
)
from streamcrm.settings import Settings
from streamcrm.sim.simulator import DEFAULT_START, simulate
from streamcrm.store import LedgerDue, PendingWrite, RedisStateStore

LATENCY_S = 20.0
"""How long each latency measurement offers its rate."""


@dataclass(frozen=True)
class Target:
    """One of issue 20's targets and the figure a run measured against it."""

    name: str
    measured: float | None
    """None: not measured in this run."""
    bound: float | None
    """None: a figure shown beside the targets for comparison, not itself a target."""
    style: str
    """How to print the figure and the bound (a format string)."""
    at_most: bool = False
    """Met at or below ``bound`` (else at or above it)."""

    @property
    def met(self) -> bool | None:
        if self.measured is None or self.bound is None:
            return None
        return self.measured <= self.bound if self.at_most else self.measured >= self.bound

    def row(self) -> str:
        """The target as one line of the report: name, bound, measured, met."""
        measured = "-" if self.measured is None else self.style.format(self.measured)
        if self.bound is None:
            return f"{self.name:<50}{'-':>12}{measured:>12}  not a target"
        bound = ("<= " if self.at_most else ">= ") + self.style.format(self.bound)
        verdict = {None: "not measured", True: "met", False: "NOT met"}[self.met]
        return f"{self.name:<50}{bound:>12}{measured:>12}  {verdict}"


@dataclass
class BenchReport:
    """Every figure of one ``streamcrm bench`` run."""

    events: int
    customers: int
    preload_events_per_s: float = 0.0
    pipeline_events_per_s: float = 0.0
    passthrough_events_per_s: float | None = None
    quix_events_per_s: float | None = None
    """The Quix Streams pass-through (None: not measured, e.g. quixstreams not installed)."""
    ceiling_events_per_s: float = 0.0
    component_us: dict[str, float] = field(default_factory=dict)
    latency_offered_per_s: float | None = None
    steady_latency_ms: dict[str, float] = field(default_factory=dict)
    """Event produced → score consumed at ``latency_offered_per_s``, event time moving at
    wall-clock pace after the worker finished the stream (:mod:`streamcrm.bench.latency`)."""
    quiet_after_s: float | None = None
    """How long the worker took, after the stream, until its sweeps went quiet."""
    catch_up_latency_ms: dict[str, float] = field(default_factory=dict)
    """The same at the same rate, event time jumping ahead (a worker catching up)."""
    worker_rss_mib: dict[str, float] = field(default_factory=dict)
    redis_bytes_per_customer: float | None = None
    """Redis ``used_memory`` growth over the pipeline run per customer: everything the run
    stored (checkpoints, offsets, outboxes too). The target is judged on it."""
    redis_customer_bytes: dict[str, float] = field(default_factory=dict)
    """Per customer, by part (``MEMORY USAGE`` of the run's keys): the customer hashes, the
    due indexes, and everything else of the run (model checkpoints among it)."""
    redis_one_by_one_us: float | None = None
    """The Redis load + save per event without batching, for comparison."""
    redis_without_outbox_us: float | None = None
    """The batched Redis load + save per event without the outbox (as before issue 16)."""
    scaling_workers: int | None = None
    scaling_events_per_s: float | None = None
    """The same stream through ``scaling_workers`` workers of one group."""
    rescore_us: dict[str, float] = field(default_factory=dict)
    marketing_us: dict[str, float] = field(default_factory=dict)
    """Per marketing event (a touch, an open, a click per customer), decode and core, to set
    against a purchase's (decode + score_event) in the same run (issue 18's target: no dearer
    than a purchase)."""
    """Per re-score of a quiet customer: the core, and the Redis round trips of the sweep."""
    rescores_in_pipeline_run: int | None = None
    """Re-scores the pipeline worker made while consuming the stream."""
    pipeline_without_rescoring_events_per_s: float | None = None
    """The same stream and worker with re-scoring off."""
    soak: dict[str, float] | None = None
    soak_event_time: str | None = None
    """How the soak's event time moved: ``wall`` (a live feed's pace) or ``simulated`` (a
    catch-up); see :mod:`streamcrm.bench.soak`."""
    """One worker under a steady load for minutes: RSS after warm-up and at the end
    (:mod:`streamcrm.bench.soak`); None when not run."""
    learner: str = "process"
    """Where the shared learner ran: ``process`` (its own, beside the workers) or
    ``in-worker``."""
    learning_us: float | None = None
    """What learning a scored event's model updates costs (in the learner), per event."""

    def targets(self) -> list[Target]:
        """Issue 20's targets, each with the figure this run measured (None: not measured)."""
        rate = self.pipeline_events_per_s or None
        faust, quix, scaling = (
            self.passthrough_events_per_s,
            self.quix_events_per_s,
            self.scaling_events_per_s,
        )
        redis_us = next((v for k, v in self.component_us.items() if k.startswith("Redis")), None)
        soak = self.soak or {}
        sent, scored = soak.get("events sent"), soak.get("events scored")
        offered = self.latency_offered_per_s or 0.0

        def ratio(over: float | None, under: float | None) -> float | None:
            return over / under if over is not None and under else None

        return [
            Target("pipeline / Faust pass-through", ratio(rate, faust), 1.0, "{:.2f}x"),
            Target("pipeline, events/s a worker", rate, 5_000, "{:,.0f}"),
            Target(
                "moonshot: pipeline / Quix Streams pass-through", ratio(rate, quix), 0.25, "{:.3f}x"
            ),
            Target(
                "scoring core, µs an event",
                self.component_us.get("scoring core + models (score_event)"),
                50,
                "{:,.0f}",
                at_most=True,
            ),
            Target("Redis, µs an event", redis_us, 40, "{:,.0f}", at_most=True),
            Target(
                f"p99 ms at {offered:,.0f} events/s, steady state",
                self.steady_latency_ms.get("p99"),
                100,
                "{:,.0f}",
                at_most=True,
            ),
            Target(
                f"  (p99 ms at {offered:,.0f} events/s, catching up)",
                self.catch_up_latency_ms.get("p99"),
                None,
                "{:,.0f}",
            ),
            Target(
                "soak: share of what was sent that was scored", ratio(scored, sent), 0.99, "{:.1%}"
            ),
            Target(
                "soak: RSS growth after warm-up",
                soak.get("RSS growth"),
                0.10,
                "{:+.1%}",
                at_most=True,
            ),
            Target(
                f"{self.scaling_workers or 2} workers / one", ratio(scaling, rate), 1.6, "{:.2f}x"
            ),
            Target(
                "Redis bytes a customer",
                self.redis_bytes_per_customer,
                1024,
                "{:,.0f}",
                at_most=True,
            ),
        ]

    def ratios(self) -> dict[str, float]:
        """The pipeline rate against each baseline measured in the same run."""
        out = {"pipeline / ceiling": self.pipeline_events_per_s / self.ceiling_events_per_s}
        if self.passthrough_events_per_s:
            out["pipeline / Faust pass-through"] = (
                self.pipeline_events_per_s / self.passthrough_events_per_s
            )
        if self.quix_events_per_s:
            out["pipeline / Quix Streams pass-through"] = (
                self.pipeline_events_per_s / self.quix_events_per_s
            )
        if self.pipeline_without_rescoring_events_per_s:
            out["pipeline, re-scoring on / off"] = (
                self.pipeline_events_per_s / self.pipeline_without_rescoring_events_per_s
            )
        if self.scaling_events_per_s and self.pipeline_events_per_s:
            out[f"{self.scaling_workers} workers / 1 worker"] = (
                self.scaling_events_per_s / self.pipeline_events_per_s
            )
        return out


def measure_pipeline_rate(
    base: Settings, events: Sequence[Event], log_dir: Path, label: str
) -> tuple[float, int]:
    """One worker through the preloaded stream with ``base``'s settings: sustained events/s
    and the re-scores it made meanwhile (no latency or memory figures)."""
    assert base.kafka_bootstrap is not None
    settings = fresh_settings(base, label).model_copy(update={"metrics_interval_s": 1.0})
    ensure_topics(settings, base.kafka_bootstrap)
    messages = stream_for(settings, events)
    preload(base.kafka_bootstrap, messages)
    with shared_learner(settings, log_dir / f"bench-{label}-learner.log"):
        worker = start_worker_process(settings, log_dir / f"bench-{label}.log")
        rescores = RescoreCount()
        try:
            samples = follow_progress(
                base.kafka_bootstrap,
                settings.topics.model_metrics,
                len(messages),
                rescores,
                timeout_s=max(600.0, len(messages) / 50),
            )
        finally:
            stop_worker_process(worker)
    return sustained_rate(samples, len(messages)), rescores.rescored


class RescoreCount:
    """:func:`scored_count`, remembering the re-scores the worker reported too."""

    def __init__(self) -> None:
        self.rescored = 0

    def __call__(self, raw: bytes) -> int:
        self.rescored = ModelMetrics.model_validate_json(raw).events.get("re-scored", 0)
        return scored_count(raw)


def measure_pipeline(
    base: Settings,
    events: Sequence[Event],
    customers: int,
    log_dir: Path,
    report: BenchReport,
    latency_rate: float | None = None,
) -> Settings:
    """Preload the stream, run one worker through it, then measure its latency at
    ``latency_rate`` (None: half the rate it reached), in steady state and catching up;
    fills the pipeline, latency and memory figures."""
    assert base.kafka_bootstrap is not None and base.redis_url is not None
    settings = fresh_settings(base, "pipeline").model_copy(update={"metrics_interval_s": 1.0})
    ensure_topics(settings, base.kafka_bootstrap)
    messages = stream_for(settings, events)
    report.preload_events_per_s = len(messages) / preload(base.kafka_bootstrap, messages)
    client = redis.Redis.from_url(base.redis_url)
    memory_before = int(client.info("memory")["used_memory"])
    learner = contextlib.ExitStack()
    learner.enter_context(shared_learner(settings, log_dir / "bench-learner.log"))
    worker = start_worker_process(settings, log_dir / "bench-worker.log")
    rescores = RescoreCount()
    try:
        time.sleep(1.0)
        report.worker_rss_mib["start"] = rss_mib(worker.pid)
        samples = follow_progress(
            base.kafka_bootstrap,
            settings.topics.model_metrics,
            len(messages),
            rescores,
            timeout_s=max(600.0, len(messages) / 50),
        )
        report.pipeline_events_per_s = sustained_rate(samples, len(messages))
        report.rescores_in_pipeline_run = rescores.rescored
        report.worker_rss_mib["after stream"] = rss_mib(worker.pid)
        memory_after = int(client.info("memory")["used_memory"])
        report.redis_bytes_per_customer = (memory_after - memory_before) / customers
        report.redis_customer_bytes = redis_memory_by_part(client, settings, customers)
        rate = latency_rate or report.pipeline_events_per_s / 2
        report.latency_offered_per_s = rate
        quiet_s = 2 * settings.sweep_interval_s + 2 * settings.metrics_interval_s
        report.quiet_after_s = wait_until_quiet(settings, quiet_s)
        report.steady_latency_ms = measure_steady_latency(settings, events, rate, LATENCY_S)
        report.catch_up_latency_ms = measure_catch_up_latency(settings, events, rate, LATENCY_S)
        report.worker_rss_mib["end"] = rss_mib(worker.pid)
    finally:
        stop_worker_process(worker)
        learner.close()
        client.close()
    return settings


def redis_memory_by_part(
    client: redis.Redis, settings: Settings, customers: int
) -> dict[str, float]:
    """``MEMORY USAGE`` of the run's keys (its namespace) per customer: customer hashes,
    due indexes, and the rest."""
    parts = {"customer hashes": 0, "due indexes": 0, "the rest (checkpoints, offsets, ...)": 0}
    keys = list(client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        usages = pipe.execute()
    for key, usage in zip(keys, usages, strict=True):
        name = key.decode() if isinstance(key, bytes) else str(key)
        part = (
            "customer hashes"
            if ":customer:" in name
            else "due indexes"
            if name.endswith(":due")
            else "the rest (checkpoints, offsets, ...)"
        )
        parts[part] += int(usage or 0)
    return {part: total / customers for part, total in parts.items()}


def measure_scaling(
    base: Settings, events: Sequence[Event], workers: int, log_dir: Path, report: BenchReport
) -> None:
    """The same stream through ``workers`` workers of one group (the topics have
    ``base.partitions`` partitions each); fills the scaling figures."""
    assert base.kafka_bootstrap is not None
    settings = fresh_settings(base, "scaling").model_copy(update={"metrics_interval_s": 1.0})
    ensure_topics(settings, base.kafka_bootstrap)
    messages = stream_for(settings, events)
    preload(base.kafka_bootstrap, messages)
    learner = contextlib.ExitStack()
    learner.enter_context(shared_learner(settings, log_dir / "bench-scaling-learner.log"))
    group = [
        start_worker_process(settings, log_dir / f"bench-scaling-worker-{n}.log")
        for n in range(workers)
    ]
    try:
        samples = follow_progress(
            base.kafka_bootstrap,
            settings.topics.model_metrics,
            len(messages),
            GroupProgress(),
            timeout_s=max(600.0, len(messages) / 50),
        )
        report.scaling_workers = workers
        report.scaling_events_per_s = sustained_rate(samples, len(messages))
    finally:
        for worker in group:
            stop_worker_process(worker)
        learner.close()


def measure_passthrough(
    base: Settings, events: Sequence[Event], log_dir: Path, report: BenchReport
) -> None:
    """The Faust pass-through baseline on the same stream."""
    assert base.kafka_bootstrap is not None
    settings = fresh_settings(base, "passthrough")
    ensure_topics(settings, base.kafka_bootstrap)
    messages = stream_for(settings, events)
    preload(base.kafka_bootstrap, messages)
    process = start_process(
        [
            sys.executable,
            "-m",
            "streamcrm.bench.passthrough",
            base.kafka_bootstrap,
            settings.topic_prefix,
        ],
        log_dir / "bench-passthrough.log",
    )
    try:
        samples = follow_progress(
            base.kafka_bootstrap,
            f"{settings.topic_prefix}.bench-progress",
            len(messages),
            lambda raw: int(json.loads(raw)["count"]),
            timeout_s=max(600.0, len(messages) / 50),
        )
        report.passthrough_events_per_s = sustained_rate(samples, len(messages))
    finally:
        stop_worker_process(process)


CHECKPOINT_EVERY_EVENTS = 5_000
"""How often the component measurement hands the learner's models to scoring: a worker
scores with the newest checkpoint (every ``model_checkpoint_interval_s``, 10 s by default:
some thousands of events at the rates measured here)."""


def measure_decode(raws: Sequence[bytes]) -> tuple[list[Event], float]:
    """Validate every message once with ``decode_event``: the events, and what it cost in
    microseconds per message (the "validate" component; it needs neither Kafka nor Redis)."""
    started = time.perf_counter()
    decoded = [decode_event(raw) for raw in raws]
    return decoded, (time.perf_counter() - started) / max(len(raws), 1) * 1e6


def measure_components(
    base: Settings, events: Sequence[Event], report: BenchReport, sample: int = 20_000
) -> None:
    """Per-event cost of each component, in one process without Kafka (microseconds), with
    the garbage collector set as in a worker (:mod:`streamcrm.services.collector`)."""
    with collector_as_in_a_worker():
        _measure_components(base, events, report, sample)


def _measure_components(
    base: Settings, events: Sequence[Event], report: BenchReport, sample: int
) -> None:
    assert base.redis_url is not None
    chosen = list(events[:sample])
    decoded, decode_us = measure_decode([e.model_dump_json().encode() for e in chosen])

    learning, config = ModelBundle(), ScoringConfig(heartbeat_interval=timedelta(days=30))
    models = ModelBundle.from_bytes(learning.to_bytes())
    states: dict[str, CustomerState] = {}
    scored = []
    queued = QueuedUpdates()
    core_s = learn_s = 0.0
    for index, event in enumerate(decoded):
        # What a scoring worker does: score with the models of the newest checkpoint, queuing
        # what they should learn; and what the shared learner does: learn it into its own
        # models, checkpointed every CHECKPOINT_EVERY_EVENTS (the scoring models follow).
        # Timed apart; the checkpoint copies are in neither.
        if index and index % CHECKPOINT_EVERY_EVENTS == 0:
            models = ModelBundle.from_bytes(learning.to_bytes())
        started = time.perf_counter()
        result = score_event(states.get(event.customer_id), event, models, config, learner=queued)
        learned = time.perf_counter()
        for update in queued.drain():
            learning.learn(update)
        learn_s += time.perf_counter() - learned
        core_s += learned - started
        states[event.customer_id] = result.state
        scored.append(result)

    started = time.perf_counter()
    payloads = [r.score.model_dump_json().encode() for r in scored if r.score is not None]
    encode_s = time.perf_counter() - started

    async def redis_round_trips(batch: int, outbox: bool = True) -> float:
        """Load and save every scored state, ``batch`` customers per round trip each way; with
        ``outbox``, as the worker does: the outputs saved into the outbox with the state, then
        read from it and cleared (the outbox's Redis side; sending is not measured here)."""
        store = RedisStateStore.from_url(base.redis_url or "", f"bench-{uuid.uuid4().hex[:8]}")
        try:
            began = time.perf_counter()
            for start in range(0, len(scored), batch):
                chunk = scored[start : start + batch]
                # As the worker loads them: each under its message's partition (the id's).
                partitions = {
                    result.state.customer_id: store.partition_of(result.state.customer_id)
                    for result in chunk
                }
                await store.load_many(list(partitions), partitions)
                await store.save_batch(
                    [
                        PendingWrite(
                            None,
                            result.state,
                            result.score,
                            outbox=PendingWrite.outputs_of(result.outputs) if outbox else (),
                        )
                        for result in chunk
                    ]
                )
                for partition in sorted(set(partitions.values())) if outbox else ():
                    waiting = await store.outbox(partition, 10 * batch)
                    await store.clear_outbox(partition, waiting)
            return time.perf_counter() - began
        finally:
            await store.close()

    one_by_one_s = asyncio.run(redis_round_trips(1))
    batched_s = asyncio.run(redis_round_trips(base.batch_max_events))
    without_outbox_s = asyncio.run(redis_round_trips(base.batch_max_events, outbox=False))
    n = len(chosen)
    report.learning_us = learn_s / n * 1e6
    report.learner = base.learner
    in_worker = (
        {"learning (the shared learner, in the worker)": report.learning_us}
        if base.learner == "in-worker"
        else {}
    )
    report.component_us = {
        "validate (decode_event)": decode_us,
        "scoring core + models (score_event)": core_s / n * 1e6,
        **in_worker,
        f"Redis load + atomic save + outbox, batches of {base.batch_max_events}": batched_s
        / n
        * 1e6,
        "serialise score": encode_s / max(len(payloads), 1) * 1e6,
    }
    report.ceiling_events_per_s = 1e6 / sum(report.component_us.values())
    report.redis_one_by_one_us = one_by_one_s / n * 1e6
    report.redis_without_outbox_us = without_outbox_s / n * 1e6
    report.rescore_us = measure_rescores(base, list(states.values()), models, config)
    report.marketing_us = measure_marketing(states, config)


def measure_marketing(
    states: Mapping[str, CustomerState], config: ScoringConfig
) -> dict[str, float]:
    """Per marketing event, decode and core in microseconds (``decode_marketing_event`` +
    ``apply_marketing``): a touch the day after each customer's newest event, its open and
    its click, on the customer's state as the stream left it."""
    marketing: list[tuple[CustomerState, bytes]] = []
    for state in states.values():
        at = state.last_event_at + timedelta(days=1)
        touch_id = f"bench-{state.customer_id}"
        fields = {"customer_id": state.customer_id, "occurred_at": at, "touch_id": touch_id}
        for event in (
            CampaignTouch(
                event_id=f"{touch_id}-t", campaign_id="bench", arm="A", channel="email", **fields
            ),
            TouchOpened(event_id=f"{touch_id}-o", **fields),
            TouchClicked(event_id=f"{touch_id}-c", **fields),
        ):
            marketing.append((state, event.model_dump_json().encode()))
    current: dict[str, CustomerState] = {}
    started = time.perf_counter()
    for state, raw in marketing:
        decoded = decode_marketing_event(raw)
        step = apply_marketing(current.get(state.customer_id, state), decoded, config)
        current[state.customer_id] = step.state
    return {
        "marketing event: decode + apply_marketing": (time.perf_counter() - started)
        / max(len(marketing), 1)
        * 1e6
    }


def measure_rescores(
    base: Settings, states: Sequence[CustomerState], models: ModelBundle, config: ScoringConfig
) -> dict[str, float]:
    """Per customer, what one re-score costs: the pure core (``sweep_customer`` a fortnight
    after each customer's newest score) and the sweep's Redis step (load, then save with the
    re-score and its alerts in the outbox, in batches as the sweep makes them), microseconds."""
    quiet = [state for state in states if state.newest_score_at is not None]
    started = time.perf_counter()
    swept = [
        sweep_customer(
            state, (state.newest_score_at or DEFAULT_START) + timedelta(days=14), models, config
        )
        for state in quiet
    ]
    core_s = time.perf_counter() - started

    async def sweep_round_trips() -> float:
        """As the sweep does: each batch of customers loaded in one round trip, then saved in
        one atomic step with the re-scores and their alerts in the outbox."""
        store = RedisStateStore.from_url(base.redis_url or "", f"bench-{uuid.uuid4().hex[:8]}")
        try:
            began = time.perf_counter()
            for start in range(0, len(swept), base.batch_max_events):
                chunk = swept[start : start + base.batch_max_events]
                ids = [result.state.customer_id for result in chunk]
                await store.load_many(ids, dict.fromkeys(ids, 0))
                await store.save_batch(
                    [
                        PendingWrite(
                            None,
                            result.state,
                            result.score,
                            LedgerDue(0, result.due_at),
                            PendingWrite.outputs_of(
                                [(result.score, result.alerts)] if result.score else []
                            ),
                        )
                        for result in chunk
                    ]
                )
            return time.perf_counter() - began
        finally:
            await store.close()

    redis_s = asyncio.run(sweep_round_trips())
    made = max(sum(1 for result in swept if result.score is not None), 1)
    return {
        "re-score core (sweep_customer)": core_s / made * 1e6,
        "re-score Redis load + save with outbox": redis_s / made * 1e6,
    }


def run_bench(
    base: Settings,
    customers: int,
    days: int,
    seed: int,
    log_dir: Path,
    passthrough: bool = True,
    scaling_workers: int = 2,
    soak_minutes: float = 0.0,
    soak_rate: float | None = None,
    soak_event_time: EventTime = "wall",
    out: Callable[[str], None] = print,
    rescoring_comparison: bool = True,
    latency_only: bool = False,
    latency_rate: float | None = None,
) -> BenchReport:
    """Every measurement in turn (see the module docstring); with ``latency_only``, only one
    worker through the stream and its latency after it (at ``latency_rate``, else half the
    rate it reached)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out(f"simulating {customers:,} customers over {days} days ...")
    events = list(simulate(customers=customers, days=days, seed=seed).events)
    report = BenchReport(events=len(events), customers=len({e.customer_id for e in events}))
    if latency_only:
        out(f"{len(events):,} events; one worker through them, then its latency ...")
        measure_pipeline(base, events, report.customers, log_dir, report, latency_rate)
        return report
    out(f"{len(events):,} events; measuring the components ...")
    measure_components(base, events, report)
    if passthrough:
        out("Faust pass-through baseline ...")
        measure_passthrough(base, events, log_dir, report)
        if importlib.util.find_spec("quixstreams") is None:
            out("Quix Streams pass-through: skipped, quixstreams is not installed (dev extra)")
        else:
            out("Quix Streams pass-through baseline ...")
            from streamcrm.bench.quix import measure_quix

            report.quix_events_per_s = measure_quix(base, events, log_dir)
    out("full pipeline (one worker), then latency at half its rate ...")
    measure_pipeline(base, events, report.customers, log_dir, report, latency_rate)
    if rescoring_comparison:
        out("the pipeline again, re-scoring off ...")
        off = base.model_copy(update={"rescore_interval_days": None})
        report.pipeline_without_rescoring_events_per_s, _ = measure_pipeline_rate(
            off, events, log_dir, "no-rescores"
        )
    if scaling_workers > 1:
        out(f"{scaling_workers} workers of one group, {base.partitions} partitions a topic ...")
        measure_scaling(base, events, scaling_workers, log_dir, report)
    if soak_minutes > 0:
        rate = soak_rate or report.pipeline_events_per_s / 2
        out(f"soak: one worker at {rate:,.0f} events/s for {soak_minutes:g} minutes ...")
        settings = fresh_settings(base, "soak").model_copy(update={"metrics_interval_s": 1.0})
        figures = measure_soak(
            settings, soak_minutes, rate, report.customers, seed, log_dir, soak_event_time
        )
        report.soak_event_time = figures.event_time
        report.soak = {
            "minutes": figures.minutes,
            "offered events/s": figures.offered_per_s,
            "events sent": figures.events_sent,
            "events scored": figures.events_scored,
            "RSS after warm-up MiB": figures.rss_after_warmup_mib,
            "RSS last minute MiB": figures.rss_last_minute_mib,
            "RSS min MiB": figures.rss_min_mib,
            "RSS max MiB": figures.rss_max_mib,
            "RSS growth": figures.growth,
            "RSS spread": figures.spread,
        }
    return report


def format_report(report: BenchReport) -> str:
    """The figures as a table."""
    ratios = report.ratios() if report.ceiling_events_per_s else {}
    lines = [
        f"stream: {report.events:,} events of {report.customers:,} customers"
        f" (preloaded at {report.preload_events_per_s:,.0f} events/s)",
        "",
        f"{'throughput':<44}{'events/s':>12}",
        f"{'streamcrm pipeline, one worker':<44}{report.pipeline_events_per_s:>12,.0f}",
    ]
    if report.passthrough_events_per_s is not None:
        lines.append(
            f"{'Faust pass-through (decode → emit)':<44}{report.passthrough_events_per_s:>12,.0f}"
        )
    if report.quix_events_per_s is not None:
        lines.append(
            f"{'Quix Streams pass-through (decode → emit)':<44}{report.quix_events_per_s:>12,.0f}"
        )
    if report.ceiling_events_per_s:
        lines.append(
            f"{'ceiling: sum of component costs':<44}{report.ceiling_events_per_s:>12,.0f}"
        )
    if report.scaling_events_per_s is not None:
        label = f"streamcrm pipeline, {report.scaling_workers} workers"
        lines.append(f"{label:<44}{report.scaling_events_per_s:>12,.0f}")
    if report.component_us:
        lines += ["", f"{'per-event cost of each component':<44}{'µs':>12}"]
        lines += [f"{name:<44}{cost:>12,.1f}" for name, cost in report.component_us.items()]
    if report.redis_one_by_one_us is not None:
        lines.append(
            f"{'  (Redis one event per round trip)':<44}{report.redis_one_by_one_us:>12,.1f}"
        )
    if report.redis_without_outbox_us is not None:
        lines.append(
            f"{'  (Redis batched, without the outbox)':<44}{report.redis_without_outbox_us:>12,.1f}"
        )
    if report.rescore_us:
        total = sum(report.rescore_us.values())
        lines += ["", f"{'per re-score of a quiet customer':<44}{'µs':>12}"]
        lines += [f"{name:<44}{cost:>12,.1f}" for name, cost in report.rescore_us.items()]
        lines.append(f"{'  re-scores/s if a worker did nothing else':<44}{1e6 / total:>12,.0f}")
    if report.marketing_us and report.component_us:
        event_us = sum(list(report.component_us.values())[:2])  # decode + score_event
        lines += ["", f"{'per event, decode + core':<44}{'µs':>12}"]
        lines.append(f"{'an input event: decode + score_event':<44}{event_us:>12,.1f}")
        lines += [f"{name:<44}{cost:>12,.1f}" for name, cost in report.marketing_us.items()]
        ratio = sum(report.marketing_us.values()) / event_us
        lines.append(f"{'  marketing event / input event':<44}{ratio:>12.2f}")
    if report.rescores_in_pipeline_run is not None:
        lines.append(f"re-scores made during the pipeline run: {report.rescores_in_pipeline_run:,}")
    if report.pipeline_without_rescoring_events_per_s is not None:
        lines.append(
            f"{'streamcrm pipeline, re-scoring off':<44}"
            f"{report.pipeline_without_rescoring_events_per_s:>12,.0f} events/s"
        )
    if ratios:
        lines += ["", "ratios (same run)"]
        lines += [f"{name:<44}{ratio:>12.2f}" for name, ratio in ratios.items()]
    if report.steady_latency_ms or report.catch_up_latency_ms:
        lines += [
            "",
            f"latency at {report.latency_offered_per_s:,.0f} events/s offered, produced → score"
            " consumed (worker: → score sent), ms:",
        ]
        if report.quiet_after_s is not None:
            lines.append(
                f"  (the worker's sweeps went quiet {report.quiet_after_s:,.0f} s after the stream)"
            )
        for label, figures in (
            ("steady state (event time at wall-clock pace)", report.steady_latency_ms),
            ("catching up (event time jumps a day in 20 s)", report.catch_up_latency_ms),
        ):
            if figures:
                lines.append(f"  {label}, {figures.get('events', 0):,.0f} events:")
                lines.append(
                    "    " + "  ".join(f"{k} {v:,.0f}" for k, v in figures.items() if k != "events")
                )
    lines += [
        "",
        "worker RSS: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in report.worker_rss_mib.items()),
    ]
    if report.redis_bytes_per_customer is not None:
        lines.append(f"Redis memory per customer: {report.redis_bytes_per_customer:,.0f} bytes")
        lines += [
            f"  {part}: {per_customer:,.0f} bytes"
            for part, per_customer in report.redis_customer_bytes.items()
        ]
    lines.append(
        "shared learner: its own process (`streamcrm learner`), the worker only scores"
        if report.learner == "process"
        else "shared learner: in the worker (STREAMCRM_LEARNER=in-worker)"
    )
    if report.learning_us is not None:
        lines.append(
            f"{'learning, per event (where the learner runs)':<44}{report.learning_us:>9,.1f} µs"
        )
    if report.soak is not None:
        soak = report.soak
        lines += [
            "",
            f"soak: {soak['minutes']:g} minutes at {soak['offered events/s']:,.0f} events/s,"
            f" {report.soak_event_time} event time"
            f" ({soak['events sent']:,.0f} sent, {soak['events scored']:,.0f} scored)",
            f"  worker RSS after warm-up {soak['RSS after warm-up MiB']:,.0f} MiB, last minute"
            f" {soak['RSS last minute MiB']:,.0f} MiB: growth {soak['RSS growth']:+.1%},"
            f" spread (max - min) / min {soak['RSS spread']:.1%}",
        ]
    lines += ["", f"{'targets (issue 20)':<50}{'target':>12}{'measured':>12}"]
    lines += [target.row() for target in report.targets()]
    return "\n".join(lines)


def write_json(path: Path, report: BenchReport) -> None:
    targets = [{**asdict(target), "met": target.met} for target in report.targets()]
    ratios = report.ratios() if report.ceiling_events_per_s else {}
    path.write_text(json.dumps({**asdict(report), "ratios": ratios, "targets": targets}, indent=2))


__all__ = [
    "BenchReport",
    "format_report",
    "run_bench",
    "write_json",
]
