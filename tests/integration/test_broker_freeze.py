"""A broker frozen for longer than the group session timeout: the worker resumes consuming.

Faust users report workers that stay alive but stop consuming after a broker outage; this
freezes a broker of the test's own with SIGSTOP (its sockets stay open, nothing answers) past
the session timeout, thaws it, and requires the worker to score new events within 60 s.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.core.events import PurchaseEvent
from streamcrm.services.embedded import EmbeddedServices, RunningService, start_tansu
from streamcrm.services.kafka import ensure_topics
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import outputs_on_topics
from tests.integration.worker_harness import TopicReader, running_worker, scores, send

pytestmark = pytest.mark.integration

RESUME_WITHIN_S = 60.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[RunningService]:
    directory = tmp_path / "tansu"
    directory.mkdir()
    broker = start_tansu(directory)
    yield broker
    if broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)
    broker.stop()


def purchases(first: int, count: int) -> list[PurchaseEvent]:
    return [
        PurchaseEvent(
            event_id=f"freeze-p{n}",
            customer_id=f"freeze-{n % 7}",
            order_id=f"o{n}",
            amount=10.0 + n,
            items=1,
            channel="web",
            occurred_at=datetime(2026, 4, 1, tzinfo=UTC) + timedelta(hours=n),
        )
        for n in range(first, first + count)
    ]


def test_a_worker_resumes_consuming_after_the_broker_was_frozen_past_the_session_timeout(
    services: EmbeddedServices,
    own_broker: RunningService,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    on_own_broker = EmbeddedServices(own_broker.address, services.redis_url, "tansu")
    settings = isolated_settings(on_own_broker, "freeze", tmp_path_factory)
    frozen_for = settings.broker_session_timeout_s + 4.0
    before, after = purchases(0, 40), purchases(40, 40)
    ensure_topics(settings, own_broker.address)
    reader = TopicReader(own_broker.address, settings.topics.scores)
    try:
        with running_worker(settings, tmp_path / "worker.log"):
            send(settings, before)
            reader.wait_for(lambda records: len(records) >= len(before))

            os.kill(own_broker.process.pid, signal.SIGSTOP)
            time.sleep(frozen_for)
            os.kill(own_broker.process.pid, signal.SIGCONT)
            thawed_at = time.monotonic()
            send(settings, after)
            wanted = {event.event_id for event in after}
            reader.wait_for(
                lambda records: wanted <= {s.event_id for s in scores(records)},
                timeout_s=RESUME_WITHIN_S,
            )
            resumed_after = time.monotonic() - thawed_at
        outputs = outputs_on_topics(settings, before + after)
    finally:
        reader.close()
    scored = {s.event_id for s in scores(reader.records)}
    assert {e.event_id for e in before + after} <= scored
    assert (outputs.lost, outputs.duplicated, outputs.alerts_unexpected) == (0, 0, 0), outputs
    record_fault(
        f"broker frozen {frozen_for:g} s (SIGSTOP)",
        settings,
        events_in=len(before) + len(after),
        reflected=len(scored & {e.event_id for e in before + after}),
        note=f"consuming again {resumed_after:.1f} s after the thaw; {outputs}",
        outputs=outputs.row,
    )
