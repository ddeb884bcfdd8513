"""Scale-out: three workers in one group, one leaving and one joining mid-stream.

Every customer's state must end exactly as the events say (nothing lost, nothing counted
twice, across two rebalances), and all workers must score with the one shared model version.
The rebalance times are read from the workers' own logs (aiokafka's "Revoking previously
assigned partitions" and Faust's "Setting newly assigned partitions") and shown in the fault
table at the end of the run.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.core.events import Event, FeedbackEvent
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import ensure_topics
from streamcrm.services.processes import start_worker_process, stop_worker_process
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import (
    applied_events,
    comparable,
    expected_states,
    lost_and_doubled,
    outputs_on_topics,
    stored_states,
    wait_until,
)
from tests.integration.worker_harness import TopicReader, scores, send, settled_model_version

pytestmark = pytest.mark.integration

PARTITIONS = 6
STREAM_CHUNKS = 30
STREAM_SECONDS = 12.0
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def log_times(log: Path, marker: str) -> list[datetime]:
    """When each log line containing ``marker`` was written."""
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if marker in line and (found := LOG_TIME.match(line)):
            times.append(datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    return times


def rebalance_seconds(logs: list[Path], after: datetime) -> tuple[float, float]:
    """From the membership change at ``after`` until the last of ``logs``' workers had its new
    partitions, and the longest a worker was without partitions on the way (revoked to
    assigned): the whole change, and the pause in consumption it caused."""
    assigned = [t for log in logs for t in log_times(log, "Setting newly assigned partitions")]
    later = [t for t in assigned if t >= after]
    assert later, f"no worker was assigned partitions after {after}"
    pauses = [0.0]
    for log in logs:
        revoked = [t for t in log_times(log, "Revoking previously assigned") if t >= after]
        got = [t for t in log_times(log, "Setting newly assigned partitions") if t >= after]
        pauses += [
            (min(t for t in got if t >= start) - start).total_seconds()
            for start in revoked
            if any(t >= start for t in got)
        ]
    return (max(later) - after).total_seconds(), max(pauses)


def trickle(settings: Settings, events: list[Event]) -> None:
    """Send ``events`` in event-time order, spread over ``STREAM_SECONDS``."""
    size = -(-len(events) // STREAM_CHUNKS)
    for start_at in range(0, len(events), size):
        send(settings, events[start_at : start_at + size])
        time.sleep(STREAM_SECONDS / STREAM_CHUNKS)


def probes(history: list[Event], tag: str) -> list[FeedbackEvent]:
    """One rating per customer, after everything in ``history``: a score on every partition."""
    after = max(event.occurred_at for event in history) + timedelta(hours=1)
    return [
        FeedbackEvent(
            event_id=f"{tag}-{customer}",
            customer_id=customer,
            occurred_at=after,
            rating=4,
            scale="csat",
            category="service",
        )
        for customer in sorted({event.customer_id for event in history})
    ]


def test_workers_leaving_and_joining_mid_stream_keep_every_customer_exact(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = isolated_settings(services, "scale-out", tmp_path_factory).model_copy(
        update={"partitions": PARTITIONS}
    )
    assert base.kafka_bootstrap is not None
    history = sorted(simulate(customers=240, days=365, seed=53).events, key=lambda e: e.occurred_at)
    first, second = history[: len(history) // 2], history[len(history) // 2 :]
    customers = sorted({event.customer_id for event in history})
    ensure_topics(base, base.kafka_bootstrap)

    def worker(name: str) -> tuple[Settings, Path]:
        return base.model_copy(update={"data_dir": tmp_path / name}), tmp_path / f"{name}.log"

    with ExitStack() as stack:
        started: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str) -> None:
            settings, log = worker(name)
            started[name] = start_worker_process(settings, log)
            stack.callback(stop_worker_process, started[name])

        for name in ("w1", "w2", "w3"):
            start(name)
        wait_until(
            lambda: all(
                log_times(worker(name)[1], "Setting newly assigned partitions")
                for name in ("w1", "w2", "w3")
            ),
            120,
            "all three workers to have partitions",
        )
        # Both halves trickle in for longer than a worker takes to leave or to join, so
        # each rebalance happens while events are still arriving.
        first_sent = threading.Thread(target=trickle, args=(base, first), daemon=True)
        first_sent.start()
        wait_until(
            lambda: applied_events(base, customers) >= len(first) // 3,
            120,
            "a third of the first half to be applied",
        )
        left_at = datetime.now()
        applied_at_leave = applied_events(base, customers)
        assert first_sent.is_alive(), "the first half was all sent before w2 left"
        assert stop_worker_process(started["w2"]) == 0  # SIGTERM: leaves the group cleanly
        first_sent.join()
        wait_until(
            lambda: applied_events(base, customers) >= len(first),
            180,
            "the first half to be applied by the two workers left",
        )
        leave_s = rebalance_seconds([worker("w1")[1], worker("w3")[1]], left_at)

        joined_at = datetime.now()
        start("w2-again")
        # The last tenth waits for the join, so the join happens mid-stream however long
        # the new worker takes to start on a loaded machine.
        held_back = len(second) // 10
        trickle(base, second[:-held_back])
        wait_until(
            lambda: bool(log_times(worker("w2-again")[1], "Setting newly assigned partitions")),
            120,
            "the rejoining worker to get partitions",
        )
        trickle(base, second[-held_back:])
        last_sent_at = datetime.now()
        wait_until(
            lambda: applied_events(base, customers) >= len(history),
            240,
            "every event to be applied",
        )
        rejoined = log_times(worker("w2-again")[1], "Setting newly assigned partitions")
        assert rejoined, "the rejoining worker never got partitions"
        assert rejoined[0] < last_sent_at, "the join came after the stream: not mid-stream"
        join_s = rebalance_seconds(
            [worker(name)[1] for name in ("w1", "w3", "w2-again")], joined_at
        )

        # One model for the whole group: once the shared learner's checkpoint is stable,
        # every worker scores the probes (one per customer, so every partition) with it.
        settled = settled_model_version(base)
        reader = TopicReader(base.kafka_bootstrap, base.topics.scores)
        checks = probes(history, "probe")
        send(base, checks)
        wanted = {probe.event_id for probe in checks}
        reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})
        probe_versions = {s.model_version for s in scores(reader.records) if s.event_id in wanted}
        probe_partitions = {
            r.partition for r in reader.records if r.value and b'"event_id":"probe-' in r.value
        }
        reader.close()

    everything = [*history, *checks]
    stored = stored_states(base, customers)
    expected = expected_states(everything)
    lost, doubled = lost_and_doubled(expected, stored)
    assert (lost, doubled) == (0, 0)
    assert [c for c in customers if comparable(stored[c]) != comparable(expected[c])] == []
    assert probe_partitions == set(range(PARTITIONS))
    assert probe_versions == {settled}
    # A partition's outbox may be drained by its old owner and its new one at a handover:
    # at least once (the ids are deterministic), never lost.
    outputs = outputs_on_topics(base, everything)
    assert (outputs.lost, outputs.alerts_unexpected) == (0, 0), outputs
    record_fault(
        f"3 workers, {PARTITIONS} partitions: one leaves mid-stream, one joins mid-stream",
        base,
        events_in=len(everything),
        reflected=len(everything) - lost,
        lost=lost,
        duplicated=doubled,
        note=f"stop to reassigned {leave_s[0]:.1f} s (pause {leave_s[1]:.1f} s), start to "
        f"assigned {join_s[0]:.1f} s (pause {join_s[1]:.1f} s) with the embedded "
        f"timeouts (4 s rebalance, 6 s session, 1 s heartbeat); w2 left after"
        f" {applied_at_leave} applied; one model version {settled};"
        f" {outputs}",
        outputs=outputs.row,
    )
