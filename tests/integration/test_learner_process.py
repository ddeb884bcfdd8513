"""``streamcrm learner`` on Apache Kafka and Redis: killed with SIGKILL mid-stream and
restarted, it learns every model update exactly once; and scoring workers set to
``STREAMCRM_LEARNER=process`` learn nothing themselves, the learner learns what they publish.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streamcrm.learner.resume import position_field
from streamcrm.models import ModelBundle, ModelUpdateBatch
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import ensure_topics, make_producer, topic_ids
from streamcrm.services.processes import start_learner_process, stop_worker_process
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from streamcrm.store import model_key
from streamcrm.worker.learning import MODEL_CHECKPOINT, model_updates_in
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import wait_until
from tests.integration.worker_harness import TopicReader, redis_client, running_worker, send
from tests.unit.test_learner import updates

pytestmark = pytest.mark.integration

MESSAGES, UPDATES_PER_MESSAGE = 400, 500
"""200,000 updates: several seconds of learning, so the kill lands between checkpoints."""


@contextmanager
def running_learner(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``streamcrm learner`` as a subprocess; its log is printed if the test fails."""
    process = start_learner_process(settings, log_path)
    try:
        yield process
    except BaseException:
        print(f"--- learner log {log_path} (tail) ---")
        print(log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        stop_worker_process(process)


def stored_checkpoint(settings: Settings) -> tuple[ModelBundle | None, dict[str, int]]:
    """The checkpoint in Redis and where its learner reads next (read in one transaction)."""
    client = redis_client(settings)
    key = model_key(settings.redis_namespace, MODEL_CHECKPOINT)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.hgetall(f"{key}:next-offsets")
            blob, offsets = pipe.execute()
    finally:
        client.close()
    bundle = ModelBundle.from_bytes(blob) if blob is not None else None
    return bundle, {field.decode(): int(value) for field, value in offsets.items()}


def learned(settings: Settings) -> int:
    bundle, _ = stored_checkpoint(settings)
    return bundle.updates_learned if bundle is not None else 0


def publish_updates(settings: Settings, messages: int, per_message: int) -> int:
    """Send ``messages`` update batches to the model-updates topic, as workers do."""
    assert settings.kafka_bootstrap is not None
    producer = make_producer(settings.kafka_bootstrap)
    try:
        for message in range(messages):
            batch = ModelUpdateBatch(updates=updates(per_message, message * per_message))
            producer.send(
                settings.topics.model_updates, key=b"models", value=batch.model_dump_json().encode()
            )
        producer.flush()
    finally:
        producer.close()
    return messages * per_message


def test_a_learner_killed_mid_stream_and_restarted_learns_every_update_exactly_once(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "learner-kill", tmp_path_factory)
    settings = settings.model_copy(
        update={"learner": "process", "model_checkpoint_interval_s": 0.3}
    )
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings, settings.kafka_bootstrap)
    sent = publish_updates(settings, MESSAGES, UPDATES_PER_MESSAGE)
    topic = settings.topics.model_updates
    here = position_field(topic, topic_ids(settings.kafka_bootstrap, [topic])[topic])

    with running_learner(settings, tmp_path / "first.log") as first:
        wait_until(lambda: learned(settings) >= sent // 4, 120, "a quarter learned")
        first.kill()  # SIGKILL: no final checkpoint, no commit
        first.wait()
    at_kill, offsets_at_kill = stored_checkpoint(settings)
    assert at_kill is not None and at_kill.updates_learned < sent, "the kill came too late"
    # The checkpoint's offset and its models describe one moment.
    assert at_kill.updates_learned == offsets_at_kill[here] * UPDATES_PER_MESSAGE

    with running_learner(settings, tmp_path / "second.log"):
        wait_until(lambda: stored_checkpoint(settings)[1].get(here) == MESSAGES, 120, "all learned")
    final, offsets = stored_checkpoint(settings)

    assert final is not None and offsets == {here: MESSAGES}
    assert final.updates_learned == sent  # neither fewer nor more
    labelled = sent // 2  # updates() makes labelled and scored ones in turn
    assert (final.churn.n_learned, final.segments.n_learned) == (labelled, sent - labelled)
    record_fault(
        "learner kill -9 mid-stream, restart",
        settings,
        events_in=sent,
        reflected=final.updates_learned,
        lost=max(0, sent - final.updates_learned),
        duplicated=max(0, final.updates_learned - sent),
        note=f"model updates; killed with {at_kill.updates_learned} checkpointed (offset"
        f" {offsets_at_kill[here]} of {MESSAGES}); resumed from the checkpoint's offset",
    )


def test_workers_set_to_the_learner_process_learn_nothing_and_the_learner_learns_it_all(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "learner-split", tmp_path_factory)
    settings = settings.model_copy(update={"learner": "process"})
    assert settings.kafka_bootstrap is not None
    history = list(simulate(customers=60, days=200, seed=5).events)
    ensure_topics(settings, settings.kafka_bootstrap)
    published = TopicReader(settings.kafka_bootstrap, settings.topics.model_updates)

    with running_worker(settings, tmp_path / "worker.log"):
        send(settings, history)
        published.wait_for(lambda records: len(records) >= 3)
        # Checkpoint ticks (every 1 s here) pass: an in-worker learner would have saved.
        published.drain(3.0)
        assert stored_checkpoint(settings) == (None, {})
    # Stopped cleanly: the worker flushed what it still had to publish, and saved no model.
    messages = published.drain(2.0)
    published.close()
    assert stored_checkpoint(settings) == (None, {})
    sent = [update for record in messages for update in model_updates_in(record.value or b"")]
    here = position_field(
        settings.topics.model_updates,
        topic_ids(settings.kafka_bootstrap, [settings.topics.model_updates])[
            settings.topics.model_updates
        ],
    )

    with running_learner(settings, tmp_path / "learner.log"):
        wait_until(
            lambda: stored_checkpoint(settings)[1].get(here) == len(messages),
            60,
            "the learner to checkpoint every published message",
        )
    final, _ = stored_checkpoint(settings)

    assert final is not None and len(sent) > 0
    labelled = sum(update.kind == "labelled" for update in sent)
    scored = sum(update.kind == "scored" for update in sent)
    assert (final.churn.n_learned, final.segments.n_learned) == (labelled, scored)
