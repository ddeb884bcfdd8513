"""What the benchmarks share: the input stream as messages, preloading and rate-limited
producing, following a worker's progress, sustained rates and percentiles, process memory,
and settings of their own for each run."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from streamcrm.core.events import Event
from streamcrm.core.records import ModelMetrics
from streamcrm.services.kafka import event_topic, make_producer, poll_records, read_topic
from streamcrm.services.processes import start_learner_process, stop_worker_process
from streamcrm.settings import Settings

Message = tuple[str, bytes, bytes]
"""(topic, key, value) of one input message."""


def sustained_rate(samples: Sequence[tuple[float, int]], total: int) -> float:
    """Events per second between the moments 10 % and 90 % of ``total`` were done, from
    ``(time, events done so far)`` samples, interpolated linearly between samples.

    >>> round(sustained_rate([(0.0, 0), (1.0, 0), (2.0, 500), (3.0, 1000)], 1000), 6)
    500.0
    """
    ordered = sorted(samples)

    def moment(count: float) -> float:
        for (t0, c0), (t1, c1) in zip(ordered, ordered[1:], strict=False):
            if c0 <= count <= c1 and c1 > c0:
                return t0 + (t1 - t0) * (count - c0) / (c1 - c0)
        raise ValueError(f"the samples never reach {count:g} events")

    low, high = 0.1 * total, 0.9 * total
    return (high - low) / (moment(high) - moment(low))


def percentiles(
    values: Sequence[float], shares: Sequence[float] = (0.50, 0.95, 0.99)
) -> dict[str, float]:
    """The ``shares`` percentiles of ``values`` (nearest rank), named ``p50`` and so on.

    >>> percentiles(list(range(1, 101)))
    {'p50': 50, 'p95': 95, 'p99': 99}
    >>> percentiles(list(range(1, 101)), (0.9,))
    {'p90': 90}
    """
    ordered = sorted(values)

    def rank(share: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]

    return {f"p{share * 100:g}": rank(share) for share in shares}


def stream_for(settings: Settings, events: Sequence[Event]) -> list[Message]:
    """The input messages of ``events`` for ``settings``' topics, serialised once."""
    return [
        (event_topic(settings, e), e.customer_id.encode(), e.model_dump_json().encode())
        for e in events
    ]


def preload(bootstrap: str, messages: Sequence[Message]) -> float:
    """Produce every message and flush; returns the seconds it took."""
    producer = make_producer(bootstrap)
    try:
        started = time.perf_counter()
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


def follow_progress(
    bootstrap: str,
    topic: str,
    total: int,
    count: Callable[[bytes], int],
    timeout_s: float,
) -> list[tuple[float, int]]:
    """Read per-second progress reports until ``total`` events are done: (time, done)."""
    consumer = read_topic(bootstrap, topic)
    samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
    deadline = time.monotonic() + timeout_s
    try:
        while samples[-1][1] < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{samples[-1][1]} of {total} events done in {timeout_s:g}s")
            for record in poll_records(consumer, timeout_ms=200):
                if record.value:
                    samples.append((time.monotonic(), count(record.value)))
    finally:
        consumer.close()
    return samples


def scored_count(raw: bytes) -> int:
    """Events a streamcrm worker has handled, from one of its metrics reports."""
    events = ModelMetrics.model_validate_json(raw).events
    return sum(events.get(outcome, 0) for outcome in ("scored", "duplicate", "late", "invalid"))


class GroupProgress:
    """Events handled by a group of workers so far: the sum of each worker's latest count,
    read from their metrics reports (a ``count`` for :func:`follow_progress`)."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}

    def __call__(self, raw: bytes) -> int:
        self.latest[ModelMetrics.model_validate_json(raw).worker] = scored_count(raw)
        return sum(self.latest.values())


def rss_mib(pid: int) -> float:
    """Resident set size of a process, in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def send_at_rate(
    bootstrap: str,
    messages: Iterable[Message],
    rate: float,
    stop: threading.Event | None = None,
    on_send: Callable[[int], None] | None = None,
) -> int:
    """Produce ``messages`` at ``rate`` a second (the n-th is due n / rate after the start)
    until they run out or ``stop`` is set; ``on_send(n)`` just before the n-th goes out.
    Returns how many were sent."""
    stop = stop or threading.Event()
    producer = make_producer(bootstrap)
    started, sent = time.monotonic(), 0
    try:
        for topic, key, value in messages:
            due = started + sent / rate
            while (pause := due - time.monotonic()) > 0:
                if stop.wait(min(pause, 0.5)):
                    return sent
            if on_send is not None:
                on_send(sent)
            producer.send(topic, key=key, value=value)
            sent += 1
        return sent
    finally:
        producer.flush()
        producer.close()


def fresh_settings(base: Settings, label: str) -> Settings:
    """``base`` with topics, consumer group and Redis namespace of its own (a uuid name)."""
    name = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    return base.model_copy(update={"topic_prefix": name, "app_id": name, "redis_namespace": name})


@contextlib.contextmanager
def shared_learner(settings: Settings, log_path: Path) -> Iterator[None]:
    """The ``streamcrm learner`` process of workers set to ``learner=process`` (none for
    ``in-worker``: a worker learns itself), stopped by its pid afterwards."""
    if settings.learner != "process":
        yield
        return
    learner = start_learner_process(settings, log_path)
    try:
        yield
    finally:
        stop_worker_process(learner)


def at_wall_pace(events: Iterable[Event], start: datetime, rate: float) -> Iterator[Event]:
    """``events`` (in event-time order) re-dated as a live feed offering ``rate`` a second
    would date them: the n-th at ``start`` + n / ``rate`` seconds. Order is kept, so each
    customer's events keep theirs.

    >>> from streamcrm.sim.simulator import DEFAULT_START, simulate
    >>> simulated = sorted(simulate(2, 30, seed=1).events, key=lambda e: e.occurred_at)
    >>> dated = list(at_wall_pace(simulated, DEFAULT_START, rate=4.0))
    >>> [(e.occurred_at - DEFAULT_START).total_seconds() for e in dated[:3]]
    [0.0, 0.25, 0.5]
    >>> [e.event_id for e in dated] == [e.event_id for e in simulated]
    True
    """
    for n, event in enumerate(events):
        yield event.model_copy(update={"occurred_at": start + timedelta(seconds=n / rate)})
