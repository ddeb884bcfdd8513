"""After an erasure, no HTTP endpoint of any worker returns the customer's id or data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamcrm.core.events import ErasureRequested
from streamcrm.services.embedded import EmbeddedServices, free_port
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings
from tests.integration.worker_harness import (
    TopicReader,
    eventually,
    get,
    running_worker,
    scores,
    send,
    send_raw,
)

pytestmark = pytest.mark.integration

ENDPOINTS = ("/api/overview", "/api/marketing", "/metrics", "/readyz", "/healthz")


def overview(base: str) -> dict[str, Any] | None:
    status, body, _ = get(f"{base}/api/overview")
    return json.loads(body) if status == 200 else None


def shown_customers(document: dict[str, Any]) -> set[str]:
    """Every customer id an overview names (map points, most at risk, alerts)."""
    named = {p["customer_id"] for p in document["segments"]["points"]}
    named |= {p["customer_id"] for p in document["at_risk"]}
    named |= {a["customer_id"] for a in document["alerts"] if a["customer_id"]}
    return named


def owned_partitions(base: str, topic: str) -> set[int] | None:
    document = overview(base)
    if document is None:
        return None
    owned = {p["partition"] for p in document["partitions"] if p["topic"] == topic}
    return owned or None


def partition_of(customer_id: str, settings: Settings) -> int:
    """The input partition kafka-python's producer sends a customer's events to."""
    partitions = list(range(settings.partitions))
    return int(DefaultPartitioner()(customer_id.encode(), partitions, partitions))


def test_an_erased_customer_is_absent_from_every_endpoint_of_every_worker(
    services: EmbeddedServices, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = isolated_settings(services, "erasure-everywhere", tmp_path_factory)
    assert settings.kafka_bootstrap is not None
    history = list(simulate(customers=30, days=120, seed=29).events)
    first_port, second_port = free_port(), free_port()
    first = settings.model_copy(update={"web_port": first_port, "data_dir": tmp_path / "w1"})
    second = settings.model_copy(update={"web_port": second_port, "data_dir": tmp_path / "w2"})
    first_base, second_base = f"http://127.0.0.1:{first_port}", f"http://127.0.0.1:{second_port}"

    with running_worker(first, tmp_path / "w1.log"):
        reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
        send(settings, history)
        wanted = {event.event_id for event in history}
        reader.wait_for(lambda records: wanted <= {s.event_id for s in scores(records)})
        reader.close()
        # The first worker scored everyone: its overview names every customer.
        everyone = {e.customer_id for e in history}
        eventually(
            lambda: (
                (d := overview(first_base)) is not None and shown_customers(d) >= everyone or None
            ),
            "every customer in the first worker's overview",
        )

        with running_worker(second, tmp_path / "w2.log"):
            # The second worker takes some partitions over; erase a customer of one of them,
            # so the erasure is applied by the worker that did not score them, and the first
            # worker still holds them in memory.
            taken = eventually(
                lambda: owned_partitions(second_base, settings.topics.purchases),
                "partitions assigned to the second worker",
                60,
            )
            customer_id = next(c for c in sorted(everyone) if partition_of(c, settings) in taken)
            document = overview(first_base)
            assert document is not None and customer_id in shown_customers(document)

            erasure = ErasureRequested(
                event_id="erase-everywhere", customer_id=customer_id, occurred_at=datetime.now(UTC)
            )
            send_raw(
                settings,
                settings.topics.privacy,
                customer_id.encode(),
                erasure.model_dump_json().encode(),
            )
            eventually(
                lambda: get(f"{second_base}/customers/{customer_id}")[0] == 404 or None,
                "the erasure applied",
            )

            for base in (first_base, second_base):
                assert get(f"{base}/customers/{customer_id}")[0] == 404
                for path in ENDPOINTS:
                    status, body, _ = get(f"{base}{path}")
                    assert status in (200, 503), (base, path, status)
                    assert customer_id.encode() not in body, (base, path)
                document = overview(base)
                assert document is not None and customer_id not in shown_customers(document)
