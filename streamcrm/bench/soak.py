"""``streamcrm bench --soak-minutes M``: one worker under a steady load for M minutes, its
resident memory sampled every few seconds.

The questions are whether a worker keeps up with a steady load below its maximum rate, and
whether its memory stays flat in a long run or grows with time, events or customers (a leak,
an unbounded cache). The load is a continuing simulated stream: the same customers period
after period (each period a fresh simulation dated after the last), offered at a fixed rate.
Warm-up (start-up, the first checkpoints, the model's samples filling) is left out of the
memory comparison.

Event time, by default, moves as a live feed's does: at the wall clock's pace (the n-th event
is dated n / rate seconds after the first; each customer's events keep their order). With
``simulated`` event time each period keeps its 14 simulated days, so at 450 events/s event
time runs about 9,000 times faster than the wall clock, and every quiet customer falls due for
re-scores again and again: that is a catch-up (a worker back after a long outage, a replay),
not a steady load, and is reported as such.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from streamcrm.bench.harness import (
    Message,
    at_wall_pace,
    rss_mib,
    scored_count,
    send_at_rate,
    shared_learner,
    stream_for,
)
from streamcrm.core.events import Event
from streamcrm.services.kafka import ensure_topics, read_to_end
from streamcrm.services.processes import start_worker_process, stop_worker_process
from streamcrm.settings import Settings
from streamcrm.sim.simulator import DEFAULT_START, simulate

EventTime = Literal["wall", "simulated"]
"""How the soak's event time moves: at the wall clock's pace, or as simulated (a catch-up)."""

SAMPLE_EVERY_S = 5.0
WARMUP_S = 60.0
PERIOD_DAYS = 14


@dataclass(frozen=True)
class SoakFigures:
    """What a soak run measured."""

    minutes: float
    offered_per_s: float
    events_sent: int
    events_scored: int
    rss_after_warmup_mib: float
    """Median RSS over the first minute after warm-up."""
    rss_last_minute_mib: float
    """Median RSS over the last minute."""
    rss_min_mib: float
    rss_max_mib: float
    """Over the whole run after warm-up."""
    event_time: EventTime = "wall"

    @property
    def growth(self) -> float:
        """Last minute against the first minute after warm-up: 0.05 is 5 % more."""
        return self.rss_last_minute_mib / self.rss_after_warmup_mib - 1

    @property
    def spread(self) -> float:
        """(max − min) / min after warm-up: the target is ±10 % (0.10 either way)."""
        return (self.rss_max_mib - self.rss_min_mib) / self.rss_min_mib


def soak_figures(
    samples: Sequence[tuple[float, float]],
    minutes: float,
    offered_per_s: float,
    events_sent: int,
    events_scored: int,
    warmup_s: float = WARMUP_S,
    event_time: EventTime = "wall",
) -> SoakFigures:
    """Summarise RSS ``samples`` (seconds since start, MiB) taken over a soak run.

    >>> samples = [(t, 100.0 + (20.0 if t < 60 else 0.0) + t / 600) for t in range(0, 601, 5)]
    >>> figures = soak_figures(samples, 10, 100.0, 60_000, 60_000)
    >>> round(figures.growth, 3), round(figures.spread, 3)
    (0.008, 0.009)
    """
    settled = [(t, rss) for t, rss in samples if t >= warmup_s]
    if len(settled) < 2:
        raise ValueError("the soak ended before its warm-up did: run it for longer")
    end = settled[-1][0]
    first = [rss for t, rss in settled if t < warmup_s + 60]
    last = [rss for t, rss in settled if t > end - 60]
    values = [rss for _, rss in settled]
    return SoakFigures(
        minutes=minutes,
        offered_per_s=offered_per_s,
        events_sent=events_sent,
        events_scored=events_scored,
        rss_after_warmup_mib=statistics.median(first),
        rss_last_minute_mib=statistics.median(last),
        rss_min_mib=min(values),
        rss_max_mib=max(values),
        event_time=event_time,
    )


def continuing_stream(
    settings: Settings, customers: int, seed: int, rate: float | None = None
) -> Iterator[Message]:
    """The same customers' events, period after period, without end (in event-time order).
    With ``rate``, dated at the wall clock's pace for that rate (:func:`at_wall_pace`)."""

    def events() -> Iterator[Event]:
        period = 0
        while True:
            start = DEFAULT_START + timedelta(days=PERIOD_DAYS * period)
            simulated = simulate(
                customers=customers, days=PERIOD_DAYS, seed=seed + period, start=start
            )
            for event in sorted(simulated.events, key=lambda e: e.occurred_at):
                yield event.model_copy(update={"event_id": f"p{period}-{event.event_id}"})
            period += 1

    dated = events() if rate is None else at_wall_pace(events(), DEFAULT_START, rate)
    for event in dated:
        yield from stream_for(settings, [event])


def measure_soak(
    settings: Settings,
    minutes: float,
    rate: float,
    customers: int,
    seed: int,
    log_dir: Path,
    event_time: EventTime = "wall",
) -> SoakFigures:
    """Run one worker (``settings`` with fresh topics) under ``rate`` events/s for
    ``minutes``, event time moving as ``event_time`` says; sample its RSS every
    ``SAMPLE_EVERY_S``."""
    assert settings.kafka_bootstrap is not None
    bootstrap = settings.kafka_bootstrap
    ensure_topics(settings, bootstrap)
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        stream = continuing_stream(
            settings, customers, seed, rate if event_time == "wall" else None
        )
        sent[0] = send_at_rate(bootstrap, stream, rate, stop)

    learner = contextlib.ExitStack()
    learner.enter_context(shared_learner(settings, log_dir / "bench-soak-learner.log"))
    worker = start_worker_process(settings, log_dir / "bench-soak-worker.log")
    sender = threading.Thread(target=produce, name="soak-producer", daemon=True)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        sender.start()
        while (elapsed := time.monotonic() - started) < minutes * 60:
            if worker.poll() is not None:
                raise RuntimeError(f"the soak worker exited with {worker.returncode}")
            samples.append((elapsed, rss_mib(worker.pid)))
            time.sleep(SAMPLE_EVERY_S)
        stop.set()
        sender.join(timeout=30)
        time.sleep(2 * settings.metrics_interval_s)  # the worker's last report
        reports = read_to_end(bootstrap, settings.topics.model_metrics)
        scored = max((scored_count(r.value) for r in reports if r.value), default=0)
    finally:
        stop.set()
        stop_worker_process(worker)
        learner.close()
    return soak_figures(samples, minutes, rate, sent[0], scored, event_time=event_time)
