"""How old records are when a plain consumer reads them from the broker, under a steady load.

The soak's stream (``streamcrm.bench.soak.continuing_stream``: 20,000 customers, event time at
wall-clock pace) is produced at ``--rate`` events/s onto fresh input topics, while one
aiokafka consumer (no group, fetches waiting ``--fetch-wait-ms`` at most, as the worker's do
on Tansu) reads all of them. Every 10 s it prints the records consumed per second and their
mean age on arrival (consumer clock minus the record's timestamp, set when the producer
handed it over). No worker, learner or Redis runs: what it shows is the broker's own produce →
fetch path.

    .venv/bin/python benchmarks/broker_fetch_age.py [--minutes 3] [--rate 450]

The embedded broker is Tansu unless ``STREAMCRM_EMBEDDED_BROKER=kafka`` (or
``STREAMCRM_KAFKA_BOOTSTRAP`` names one).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

from aiokafka import AIOKafkaConsumer

from streamcrm.bench.harness import fresh_settings, send_at_rate
from streamcrm.bench.soak import continuing_stream
from streamcrm.services.embedded import embedded_settings
from streamcrm.services.kafka import ensure_topics
from streamcrm.settings import Settings

REPORT_EVERY_S = 10.0
CUSTOMERS, SEED = 20_000, 7


async def consume_and_report(
    settings: Settings, minutes: float, fetch_wait_ms: int, started_producing: threading.Thread
) -> None:
    """Read the input topics for ``minutes``; print consumed/s and mean age every 10 s."""
    assert settings.kafka_bootstrap is not None
    consumer = AIOKafkaConsumer(
        *settings.topics.inputs,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        fetch_max_wait_ms=fetch_wait_ms,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    started_producing.start()
    started = time.time()
    period, count, age_s = 0, 0, 0.0
    try:
        while time.time() - started < minutes * 60:
            fetched = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in fetched.values():
                count += len(records)
                age_s += sum(now - record.timestamp / 1000 for record in records)
            if now - started >= (period + 1) * REPORT_EVERY_S:
                print(
                    f"{period * REPORT_EVERY_S:5.0f} s  consumed/s {count / REPORT_EVERY_S:6.0f}"
                    f"  mean age on arrival {1000 * age_s / max(count, 1):7.0f} ms",
                    flush=True,
                )
                period, count, age_s = period + 1, 0, 0.0
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=450.0, help="events/s produced")
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    args = parser.parse_args()
    with embedded_settings(Settings(), lambda _: None) as base:
        settings = fresh_settings(base, "fetch-age")
        bootstrap = settings.kafka_bootstrap
        assert bootstrap is not None
        ensure_topics(settings, bootstrap)
        stop = threading.Event()
        stream = continuing_stream(settings, CUSTOMERS, SEED, args.rate)
        producer = threading.Thread(
            target=send_at_rate, args=(bootstrap, stream, args.rate, stop), daemon=True
        )
        try:
            asyncio.run(consume_and_report(settings, args.minutes, args.fetch_wait_ms, producer))
        finally:
            stop.set()
            producer.join(timeout=10)


if __name__ == "__main__":
    main()
