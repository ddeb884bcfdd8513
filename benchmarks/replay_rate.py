"""How fast ``streamcrm replay`` reads and publishes, against raw kafka-python as a baseline.

Run ``python benchmarks/replay_rate.py [--events 100000]``. It starts an embedded Tansu broker
(and redis-server, unused), simulates a history of about N events, writes it to a temporary
JSON-lines file and measures, in one run:

(a) read + validate: ``read_history`` on the file (parse, ``decode_event`` each line, sort);
(b) publish: ``replay_history`` of those events through a ``make_producer`` producer, flushed;
(c) baseline: the same producer configuration sending the same messages (same topics, keys
    and value bytes), serialised beforehand, in a bare ``send`` loop, flushed.

(d) end to end: with one ``streamcrm worker`` running against the broker and redis-server,
    the time from the first publish to the last score read back from the scores topic.

(b) / (c) is the share of the raw producer's rate that replay keeps; (d) / (c) shows how far
scoring is below the rate events can be fed in. (b) and (c) each write to topics of their own,
so neither finds the other's data on the broker; each is run ``--repeat`` times, alternating,
and the best run is kept. (d) runs once (``--no-end-to-end`` skips it).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from streamcrm.bench.harness import preload, stream_for
from streamcrm.cli.replay import read_history, replay_history, write_history
from streamcrm.core.events import Event
from streamcrm.services.embedded import embedded_services
from streamcrm.services.kafka import ensure_topics, make_producer, poll_records, read_topic
from streamcrm.services.processes import start_worker_process, stop_worker_process
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate

DAYS = 365
PILOT_CUSTOMERS = 200


def simulate_about(events: int, seed: int) -> tuple[tuple[Event, ...], int]:
    """A simulated year with about ``events`` events; also the number of customers used."""
    pilot = len(simulate(customers=PILOT_CUSTOMERS, days=DAYS, seed=seed).events)
    customers = max(1, math.ceil(events * PILOT_CUSTOMERS / pilot))
    return simulate(customers=customers, days=DAYS, seed=seed).events, customers


def fresh_settings(base: Settings, label: str) -> Settings:
    """Settings with topics no other measurement has written to."""
    return base.model_copy(update={"topic_prefix": f"bench-{label}-{uuid.uuid4().hex[:8]}"})


def measure_replay(base: Settings, bootstrap: str, events: Sequence[Event]) -> float:
    settings = fresh_settings(base, "replay")
    ensure_topics(settings, bootstrap)
    producer = make_producer(bootstrap)
    try:
        summary = replay_history(events, settings, producer)
    finally:
        producer.close()
    if summary.failed:
        raise RuntimeError(f"{summary.failed} sends failed: {summary.first_failure}")
    return summary.elapsed_s


def measure_raw(base: Settings, bootstrap: str, events: Sequence[Event]) -> float:
    settings = fresh_settings(base, "raw")
    ensure_topics(settings, bootstrap)
    return preload(bootstrap, stream_for(settings, events))


def measure_end_to_end(base: Settings, bootstrap: str, events: Sequence[Event], log: Path) -> float:
    """Seconds from the first publish to the last score, through one real worker."""
    settings = fresh_settings(base, "e2e").model_copy(
        update={"app_id": f"bench-{uuid.uuid4().hex[:8]}", "data_dir": log.parent}
    )
    ensure_topics(settings, bootstrap)
    worker = start_worker_process(settings, log)
    scores = read_topic(bootstrap, settings.topics.scores)
    letters = read_topic(bootstrap, settings.topics.deadletter)
    try:
        warm_up = events[:1]  # wait for the group join, so (d) measures scoring only
        producer = make_producer(bootstrap)
        replay_history(warm_up, settings, producer)
        while not any(True for _ in poll_records(scores, timeout_ms=500)):
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited; see {log}")
        started = time.perf_counter()
        replay_history(events[1:], settings, producer)
        producer.close()
        done = 0
        while done < len(events) - 1:
            done += sum(1 for _ in poll_records(scores, timeout_ms=500))
            done += sum(1 for _ in poll_records(letters, timeout_ms=0))
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited; see {log}")
        return time.perf_counter() - started
    finally:
        scores.close()
        letters.close()
        stop_worker_process(worker)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="about how many events")
    parser.add_argument("--repeat", type=int, default=2, help="runs of (b) and (c); best kept")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip (d)")
    args = parser.parse_args(argv)

    events, customers = simulate_about(args.events, args.seed)
    n = len(events)
    print(f"history: {n:,} events ({customers:,} customers over {DAYS} days)", flush=True)
    with (
        embedded_services() as services,
        tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp,
    ):
        base = Settings().for_local_broker(services.kafka_bootstrap, services.redis_url)
        path = Path(tmp) / "history.jsonl"
        write_history(path, events)
        size_mb = path.stat().st_size / 1e6

        started = time.perf_counter()
        read = read_history(path)
        read_s = time.perf_counter() - started
        assert len(read.events) == n and not read.rejections

        replay_s, raw_s = math.inf, math.inf
        for _ in range(args.repeat):
            replay_s = min(replay_s, measure_replay(base, services.kafka_bootstrap, read.events))
            raw_s = min(raw_s, measure_raw(base, services.kafka_bootstrap, read.events))
        end_to_end_s = (
            None
            if args.no_end_to_end
            else measure_end_to_end(
                base, services.kafka_bootstrap, read.events, Path(tmp) / "worker.log"
            )
        )

    rows = [
        ("(a) read + validate (read_history)", read_s),
        ("(b) publish (replay_history)", replay_s),
        ("(c) raw kafka-python send + flush", raw_s),
    ]
    print(f"file: {size_mb:.1f} MB of JSON lines; broker: embedded Tansu; best of {args.repeat}")
    print(f"{'stage':<38}{'seconds':>10}{'events/s':>12}")
    for label, seconds in rows:
        print(f"{label:<38}{seconds:>10.2f}{n / seconds:>12,.0f}")
    if end_to_end_s is not None:
        label = "(d) end to end: publish -> last score"
        print(f"{label:<38}{end_to_end_s:>10.2f}{(n - 1) / end_to_end_s:>12,.0f}")
    print(f"{'(b) / (c)':<38}{'':>10}{raw_s / replay_s:>12.2f}")
    if end_to_end_s is not None:
        print(f"{'(d) / (c)':<38}{'':>10}{raw_s / end_to_end_s:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
