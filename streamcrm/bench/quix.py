"""The Quix Streams pass-through baseline of ``streamcrm bench``: decode → emit, no state.

Run as ``python -m streamcrm.bench.quix BOOTSTRAP PREFIX``. One Quix Streams ``Application``
(its own consumer group, from the earliest offset) reads the three input topics, decodes each
value as JSON and produces it, re-encoded and with its key, to ``<prefix>.passthrough-quix``.
A thread publishes how many messages it has passed so far to ``<prefix>.bench-progress``
every second, as ``{"published_at": wall time, "count": n}`` with key ``b"quix"``: the
reports of :mod:`streamcrm.bench.passthrough`, so the bench follows both baselines the same
way. Its rate is a second framework's ceiling on this machine, beside Faust's.

Two differences to keep in mind when comparing the two baselines: Quix Streams runs one
synchronous poll loop over librdkafka (confluent-kafka), whose fetching and producing run in
its own C threads, where Faust runs an asyncio agent per topic over aiokafka; and Quix's
``"json"`` serialisers use ``orjson`` where the Faust baseline uses the standard ``json``.

:func:`measure_quix` runs it as a subprocess on a preloaded stream, as
:func:`streamcrm.bench.pipeline.measure_passthrough` runs the Faust one, and returns its sustained
events/s. ``quixstreams`` is a ``dev`` extra: it is imported only where it is used, so this
module (and its doctests) load without it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quixstreams import Application
    from quixstreams.kafka import Producer

    from streamcrm.core.events import Event
    from streamcrm.settings import Settings

INPUT_KINDS = ("purchases", "feedback", "support")
PROGRESS_KEY = b"quix"
PROGRESS_INTERVAL_S = 1.0

LOCAL_BROKER_CONSUMER_CONFIG: dict[str, str | int] = {
    # Tansu answers a consumer's JoinGroup after half its session timeout (librdkafka's
    # default 45 s: a 22 s join); these are the Faust baseline's local-broker timeouts.
    "session.timeout.ms": 6_000,
    "heartbeat.interval.ms": 1_000,
    # Quix merges the same-numbered partitions of the three topics in timestamp order: when
    # one of their buffers runs empty it waits for that partition's next fetch, which a
    # broker holds up to this long when the partition has nothing new (librdkafka: 500 ms).
    # 10 ms, as Settings.for_local_broker's consumers (LOCAL_FETCH_MAX_WAIT_MS; not imported:
    # streamcrm.settings would add 1.7 s to this process's start): about 10 % more events/s.
    "fetch.wait.max.ms": 10,
}
"""librdkafka consumer settings for the local broker, Tansu (see ``docs/tansu.md``)."""


class PassedCounter:
    """How many messages the app has passed on, for the progress thread to read.

    Only the poll loop's thread writes it; the progress thread reads an ``int`` under the
    GIL and so sees some recent value, which is all a once-a-second report needs.
    """

    def __init__(self) -> None:
        self.count = 0

    def message_processed(self, topic: str, partition: int, offset: int) -> None:
        """Quix's ``on_message_processed`` callback: one more message decoded and sent on."""
        self.count += 1


def progress_record(count: int, published_at: float) -> bytes:
    """One progress report, as both pass-through baselines publish it.

    >>> progress_record(1200, 1700000000.5)
    b'{"published_at": 1700000000.5, "count": 1200}'
    """
    return json.dumps({"published_at": published_at, "count": count}).encode()


def progress_count(raw: bytes) -> int:
    """Messages passed so far, from one progress report.

    >>> progress_count(progress_record(42, 1700000000.5))
    42
    """
    return int(json.loads(raw)["count"])


def create_quix_app(
    bootstrap: str, prefix: str, counter: PassedCounter, state_dir: str
) -> Application:
    """The baseline app: every input topic's values decoded and sent on, counted in
    ``counter``. It keeps no state, but Quix wants a ``state_dir`` all the same."""
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"{prefix}-passthrough-quix",
        auto_offset_reset="earliest",
        consumer_extra_config=dict(LOCAL_BROKER_CONSUMER_CONFIG),
        state_dir=state_dir,
        use_changelog_topics=False,  # no state, so no changelog topics to create
        on_message_processed=counter.message_processed,
        loglevel="WARNING",
    )
    output = app.topic(
        f"{prefix}.passthrough-quix", key_serializer="bytes", value_serializer="json"
    )
    for kind in INPUT_KINDS:
        source = app.topic(f"{prefix}.{kind}", key_deserializer="bytes", value_deserializer="json")
        app.dataframe(source).to_topic(output)
    return app


def publish_progress(
    producer: Producer, topic: str, counter: PassedCounter, stopped: threading.Event
) -> None:
    """Publish ``counter`` to ``topic`` every second until ``stopped`` is set."""
    while not stopped.wait(PROGRESS_INTERVAL_S):
        producer.produce(
            topic=topic, key=PROGRESS_KEY, value=progress_record(counter.count, time.time())
        )
        producer.poll(0)  # serve delivery reports


def main(argv: list[str]) -> int:
    bootstrap, prefix = argv
    counter = PassedCounter()
    stopped = threading.Event()
    with TemporaryDirectory(prefix="passthrough-quix-") as state_dir:
        app = create_quix_app(bootstrap, prefix, counter, state_dir)
        with app.get_producer() as producer:
            reporter = threading.Thread(
                target=publish_progress,
                args=(producer, f"{prefix}.bench-progress", counter, stopped),
                name="report-progress",
                daemon=True,
            )
            reporter.start()
            try:
                app.run()  # until SIGTERM or SIGINT
            finally:
                stopped.set()
                reporter.join()
    return 0


def measure_quix(base: Settings, events: Sequence[Event], log_dir: Path) -> float:
    """The Quix Streams pass-through baseline on the same stream: its sustained events/s.

    As :func:`streamcrm.bench.pipeline.measure_passthrough`, but the rate is returned, not
    written to a report. The reports come once a second, and Quix
    passes some 25,000 events a second here: on a stream much shorter than 60,000 events the
    10 %–90 % span falls between two reports and the rate says only "about the whole stream
    in a second".
    """
    # Imported here, not at the top: the baseline process loads this module too, and needs
    # none of the bench's own imports (river, redis, faust: about 2.5 s of start-up).
    from streamcrm.bench.harness import (
        follow_progress,
        fresh_settings,
        preload,
        stream_for,
        sustained_rate,
    )
    from streamcrm.services.kafka import ensure_topics
    from streamcrm.services.processes import start_process, stop_worker_process

    if importlib.util.find_spec("quixstreams") is None:
        raise ModuleNotFoundError("the Quix Streams baseline needs quixstreams (the dev extra)")
    assert base.kafka_bootstrap is not None
    settings = fresh_settings(base, "quix")
    ensure_topics(settings, base.kafka_bootstrap)
    messages = stream_for(settings, events)
    preload(base.kafka_bootstrap, messages)
    log_path = log_dir / "bench-quix.log"
    process = start_process(
        [sys.executable, "-m", "streamcrm.bench.quix", base.kafka_bootstrap, settings.topic_prefix],
        log_path,
    )
    try:
        samples = follow_progress(
            base.kafka_bootstrap,
            f"{settings.topic_prefix}.bench-progress",
            len(messages),
            progress_count,
            timeout_s=max(600.0, len(messages) / 50),
        )
    except TimeoutError as error:
        # A baseline that died (broker refused, a crash) only shows as no progress: say what
        # its log says.
        tail = log_path.read_text(errors="replace")[-2000:]
        raise TimeoutError(f"{error}; {log_path} ends with:\n{tail}") from error
    finally:
        stop_worker_process(process)
    return sustained_rate(samples, len(messages))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
