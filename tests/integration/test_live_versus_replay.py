"""Live versus replay on real services: the same history gives byte-identical scores.

"Live": producers send each topic's events in time order but the topics run far apart (every
purchase is scored before the first support event arrives, and every support event before the
first rating), as when one application lags far behind another.
"Replay": ``streamcrm replay`` publishes the same history from a shuffled CSV file. Each goes
to its own topics, worker and Redis namespace. Every customer's final score must be
byte-identical in every field the shared models do not make (``MODEL_FIELDS``), but for the
two that name what made it (``event_id``, ``trigger``): quiet customers are re-scored as
event time passes, so the final score is often a re-score, as of the same moment either way.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamcrm.cli.replay import write_history
from streamcrm.core.events import Event
from streamcrm.core.records import MODEL_FIELDS
from streamcrm.core.state import topic_kind
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.processes import worker_environment
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings
from tests.integration.worker_harness import (
    TopicReader,
    redis_state,
    running_worker,
    scores,
    send,
)

pytestmark = pytest.mark.integration

HISTORY = list(simulate(customers=20, days=200, seed=31).events)
LIVE_TOPIC_ORDER = ("purchases", "support", "feedback")


def final_scores_without_model_fields(settings: Settings) -> dict[str, str]:
    result = {}
    for customer_id in {event.customer_id for event in HISTORY}:
        _, raw = redis_state(settings, customer_id)
        assert raw is not None, customer_id
        record = json.loads(raw)
        # event_id and trigger name what made the record (an event, or the passage of time),
        # which the order of arrival decides; everything else must agree.
        for field in (*MODEL_FIELDS, "event_id", "trigger"):
            record.pop(field)
        result[customer_id] = json.dumps(record, sort_keys=True)
    return result


def settled_final_scores(
    settings: Settings, quiet_s: float = 5.0, timeout_s: float = 120.0
) -> dict[str, str]:
    """The final scores once the worker's sweeps have made every re-score the watermark
    owes: two reads ``quiet_s`` apart (more than two sweep ticks) that agree."""
    deadline = time.monotonic() + timeout_s
    before = final_scores_without_model_fields(settings)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = final_scores_without_model_fields(settings)
        if now == before:
            return now
        before = now
    raise AssertionError(f"the re-scores did not settle within {timeout_s} s")


def wait_until_scored(reader: TopicReader, events: list[Event]) -> None:
    wanted = {event.event_id for event in events}
    reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})


def test_live_and_replayed_histories_give_byte_identical_scores_apart_from_model_fields(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    live = isolated_settings(services, "live", tmp_path_factory)
    replayed = isolated_settings(services, "replayed", tmp_path_factory)
    assert live.kafka_bootstrap is not None and replayed.kafka_bootstrap is not None

    with running_worker(live, tmp_path / "live.log"):
        reader = TopicReader(live.kafka_bootstrap, live.topics.scores)
        for kind in LIVE_TOPIC_ORDER:  # each topic scored in full before the next arrives
            topic_events = [event for event in HISTORY if topic_kind(event) == kind]
            send(live, topic_events)
            wait_until_scored(reader, topic_events)
        reader.close()
        live_scores = settled_final_scores(live)

    history_file = tmp_path / "history.csv"
    write_history(history_file, random.Random(31).sample(HISTORY, len(HISTORY)))
    with running_worker(replayed, tmp_path / "replayed.log"):
        subprocess.run(
            [sys.executable, "-m", "streamcrm", "replay", str(history_file)],
            env=worker_environment(replayed),
            capture_output=True,
            timeout=120,
            check=True,
        )
        reader = TopicReader(replayed.kafka_bootstrap, replayed.topics.scores)
        wait_until_scored(reader, HISTORY)
        reader.close()
        replayed_scores = settled_final_scores(replayed)

    assert live_scores == replayed_scores
