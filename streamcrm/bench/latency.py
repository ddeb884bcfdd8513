"""Latency of a running worker: an event produced → its score consumed, at a fixed offered rate.

Both streams continue the customers of the stream the worker has just consumed
(:func:`later_events`: the same customers, simulated one period later), and both are offered
at the same rate; they differ in how fast event time moves:

- **steady state** (issue 20's target): once the worker has finished the preloaded stream and
  its sweeps have gone quiet (:func:`wait_until_quiet`), the later stream's events in time
  order, each re-dated to the preloaded stream's newest event time plus the moment it is sent
  (:func:`at_wall_clock_pace`). Event time moves as fast as the wall clock, as in a live
  stream, so a customer owes a re-score only when one falls due in those seconds.
- **catch-up**: the later stream's events with their own dates. Twenty seconds of sending move
  event time by about a day, after a fortnight without events: every customer's first event
  owes re-scores first, and the sweeps re-score every quiet customer meanwhile. That is a
  worker catching up after an outage, not a live stream.

Each measurement gives, in milliseconds, p50 / p90 / p95 / p99 / max of produced → consumed,
and ``worker p50`` / ``worker p99``: produced → the score record's timestamp (when the worker
handed it to its producer), so the reader's share is the difference.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from streamcrm.bench.harness import at_wall_pace, percentiles, send_at_rate, stream_for
from streamcrm.core.events import Event
from streamcrm.core.records import ModelMetrics
from streamcrm.services.kafka import poll_records, read_topic
from streamcrm.settings import Settings
from streamcrm.sim.simulator import DEFAULT_START, simulate

LATENCY_SHARES = (0.50, 0.90, 0.95, 0.99)
"""The percentiles reported of each latency measurement (and the maximum)."""


def later_events(events: Sequence[Event]) -> list[Event]:
    """A second stream for the same customers, a period after the first."""
    span = max(e.occurred_at for e in events) - min(e.occurred_at for e in events)
    customers = len({e.customer_id for e in events})
    days = max(1, span.days + 1)
    later = simulate(customers=customers, days=days, seed=99, start=DEFAULT_START + span)
    return list(later.events)


def at_wall_clock_pace(
    events: Sequence[Event], start: datetime, rate: float, id_prefix: str = "steady-"
) -> list[Event]:
    """``events`` in time order, the n-th re-dated to ``start`` plus n / ``rate`` seconds (the
    moment it is due when sent at ``rate`` a second) and its id prefixed with ``id_prefix``.

    Event time then moves as fast as the wall clock while they are sent. Re-dating follows
    the time order, so each customer's events keep their order.
    """
    in_order = sorted(events, key=lambda e: e.occurred_at)  # stable: ties keep their order
    renamed = (e.model_copy(update={"event_id": f"{id_prefix}{e.event_id}"}) for e in in_order)
    return list(at_wall_pace(renamed, start, rate))


def measure_steady_latency(
    settings: Settings, events: Sequence[Event], rate: float, seconds: float
) -> dict[str, float]:
    """Issue 20's latency: ``rate`` events/s for ``seconds`` that continue ``events`` (the
    stream the running worker has consumed) at wall-clock pace (see the module)."""
    newest = max(e.occurred_at for e in events)
    wanted = later_events(events)[: int(rate * seconds)]
    return measure_latency(settings, at_wall_clock_pace(wanted, newest, rate), rate)


def measure_catch_up_latency(
    settings: Settings, events: Sequence[Event], rate: float, seconds: float
) -> dict[str, float]:
    """``rate`` events/s for ``seconds`` of the later stream with its own dates: event time
    jumps ahead (see the module)."""
    wanted = later_events(events)[: int(rate * seconds)]
    return measure_latency(
        settings, [e.model_copy(update={"event_id": f"lat-{e.event_id}"}) for e in wanted], rate
    )


def measure_latency(
    settings: Settings, events: Sequence[Event], rate: float, grace_s: float = 60.0
) -> dict[str, float]:
    """Send ``events`` at ``rate`` a second to a running worker and read their scores: event
    produced → score consumed, and → score sent by the worker, in milliseconds (the module's
    figures). Waits ``grace_s`` after the last send at most."""
    assert settings.kafka_bootstrap is not None
    messages = stream_for(settings, events)
    ids = [e.event_id for e in events]
    sent_at: dict[str, float] = {}
    # The reader waits for data as the worker does: Tansu holds a fetch for its whole wait
    # even when data arrives (docs/tansu.md), so kafka-python's 500 ms would be the reader's
    # own cost, not the worker's; Apache Kafka answers as data arrives (None: the default).
    consumer = read_topic(
        settings.kafka_bootstrap,
        settings.topics.scores,
        from_beginning=False,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    consumed: list[float] = []
    at_worker: list[float] = []

    def note_sent(n: int) -> None:
        sent_at[ids[n]] = time.time()

    sender = threading.Thread(
        target=send_at_rate,
        args=(settings.kafka_bootstrap, messages, rate),
        kwargs={"on_send": note_sent},
        daemon=True,
    )
    sender.start()
    deadline = time.monotonic() + len(messages) / rate + grace_s
    try:
        while len(consumed) < len(messages) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                received = time.time()
                for record in batch:
                    if record.value is None:
                        continue
                    sent = sent_at.get(json.loads(record.value)["event_id"])
                    if sent is not None:
                        consumed.append((received - sent) * 1000)
                        at_worker.append(record.timestamp - sent * 1000)
    finally:
        sender.join(timeout=5)
        consumer.close()
    if not consumed:
        raise RuntimeError(
            f"no score of the {len(messages):,} latency events arrived within {grace_s:g} s of"
            " the last send: the worker is further behind than that"
        )
    worker = percentiles(at_worker, (0.50, 0.99))
    return {
        **percentiles(consumed, LATENCY_SHARES),
        "max": max(consumed),
        "events": float(len(consumed)),
        "worker p50": worker["p50"],
        "worker p99": worker["p99"],
    }


def handled_count(raw: bytes) -> int:
    """Everything a worker reports it has done (every outcome, re-scores included), from one
    of its metrics reports."""
    return sum(ModelMetrics.model_validate_json(raw).events.values())


def wait_until_quiet(settings: Settings, quiet_s: float, timeout_s: float = 300.0) -> float:
    """Follow the worker's metrics reports until its counts (:func:`handled_count`) have not
    moved for ``quiet_s`` seconds: it has finished its stream and its sweeps re-score no one
    more. Returns the seconds waited; raises TimeoutError after ``timeout_s``."""
    assert settings.kafka_bootstrap is not None
    consumer = read_topic(
        settings.kafka_bootstrap, settings.topics.model_metrics, from_beginning=False
    )
    started = time.monotonic()
    last: int | None = None
    moved_at = started
    try:
        while last is None or time.monotonic() - moved_at < quiet_s:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the worker was still busy after {timeout_s:g}s")
            for record in poll_records(consumer, timeout_ms=200):
                if record.value is None:
                    continue
                count = handled_count(record.value)
                if count != last:
                    last, moved_at = count, time.monotonic()
    finally:
        consumer.close()
    return time.monotonic() - started


__all__ = [
    "at_wall_clock_pace",
    "later_events",
    "measure_catch_up_latency",
    "measure_latency",
    "measure_steady_latency",
    "wait_until_quiet",
]
