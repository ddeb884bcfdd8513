"""Bad input and erasure against a real worker, broker and redis-server.

Every malformed message reaches the dead-letter topic with its reason, the valid events
around it are all applied exactly once, and an erased customer is gone from Redis and from
the compacted scores topic, with their late events refused.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from streamcrm.cli.main import main
from streamcrm.core.events import PurchaseEvent
from streamcrm.core.records import DeadLetter, ModelMetrics
from streamcrm.core.state import CustomerState
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import Record, ensure_topics
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate
from tests.conftest import isolated_settings, record_fault
from tests.integration.exactness import expected_states, outputs_on_topics
from tests.integration.worker_harness import (
    TopicReader,
    audit_entries,
    dead_letters,
    redis_client,
    redis_state,
    running_worker,
    scores,
    send,
    send_raw,
    stored_customer_key,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def guarded_settings(
    services: EmbeddedServices, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """A worker that also refuses events dated more than a day ahead of its clock."""
    return isolated_settings(services, "fault-inputs", tmp_path_factory).model_copy(
        update={"max_event_time_skew_hours": 24.0}
    )


@pytest.fixture(scope="module")
def worker(guarded_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with running_worker(guarded_settings, tmp_path_factory.mktemp("worker") / "worker.log"):
        yield


def valid_purchase(customer: str = "m-1", **changes: object) -> dict[str, object]:
    return {
        "type": "purchase",
        "event_id": f"{customer}-bad",
        "customer_id": customer,
        "occurred_at": "2026-02-01T10:00:00Z",
        "order_id": "o-1",
        "amount": 10.0,
        "items": 1,
        "channel": "web",
        **changes,
    }


def as_bytes(fields: dict[str, object]) -> bytes:
    return json.dumps(fields).encode()


MALFORMED: dict[str, tuple[str, bytes]] = {
    # key: (expected reason code, payload)
    "not-json": ("not_json", b"{this is not json"),
    "not-utf8": ("not_json", b"\xff\xfe\x00\x01"),
    "not-object": ("not_object", b"[1, 2, 3]"),
    "wrong-type": ("schema:int_type", as_bytes(valid_purchase(items="three"))),
    "missing": ("schema:missing", as_bytes({"type": "purchase", "customer_id": "m-1"})),
    "negative": ("schema:greater_than_equal", as_bytes(valid_purchase(amount=-5.0))),
    "nan": ("schema:finite_number", as_bytes(valid_purchase()).replace(b"10.0", b"NaN")),
    # The schema's types, not coerced: a number written as text or as a boolean, a time as
    # epoch seconds; times outside the years the schema allows refused before any use.
    "amount-text": ("schema:float_type", as_bytes(valid_purchase(amount="10.5"))),
    "amount-bool": ("schema:float_type", as_bytes(valid_purchase(amount=True))),
    "time-number": ("schema:datetime_type", as_bytes(valid_purchase(occurred_at=1784542800))),
    "time-year-1": (
        "schema:datetime_out_of_range",
        as_bytes(valid_purchase(occurred_at="0001-01-01T00:00:00+14:00")),
    ),
    "time-year-9999": (
        "schema:datetime_out_of_range",
        as_bytes(valid_purchase(occurred_at="9999-12-31T23:59:59-14:00")),
    ),
    "version": ("unknown_schema_version", as_bytes(valid_purchase(schema_version=7))),
    "unknown-field": ("schema:extra_forbidden", as_bytes(valid_purchase(coupon="X"))),
    "unknown-type": ("unknown_event_type", as_bytes(valid_purchase(type="teleport"))),
    "future": (
        "future_event_time",
        as_bytes(valid_purchase(occurred_at="2099-01-01T00:00:00Z")),
    ),
    "oversized": ("too_large", as_bytes(valid_purchase(note="x" * 70_000))),
    "deep": (
        "too_deep",
        as_bytes(valid_purchase())[:-1] + b', "x": ' + b"[" * 3_000 + b"]" * 3_000 + b"}",
    ),
    # Valid JSON events, refused after decoding: keyed by their own customer, as required.
    "currency": ("unknown_currency", as_bytes(valid_purchase("currency", currency="XTS"))),
}


def test_malformed_messages_are_dead_lettered_with_reasons_and_every_valid_event_applies(
    guarded_settings: Settings,
    worker: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = guarded_settings
    assert settings.kafka_bootstrap is not None
    topics = settings.topics
    valid = list(simulate(customers=30, days=60, seed=3).events)
    letters = TopicReader(settings.kafka_bootstrap, topics.deadletter)
    metrics = TopicReader(settings.kafka_bootstrap, topics.model_metrics)
    try:
        half = len(valid) // 2
        send(settings, valid[:half])
        for key, (_, payload) in MALFORMED.items():
            send_raw(settings, topics.purchases, key.encode(), payload)
        send(settings, valid[half:])

        letters.wait_for(lambda records: len(records) >= len(MALFORMED))
        expected = expected_states(valid)
        deadline = time.monotonic() + 90
        while _applied(settings, expected) < len(valid) and time.monotonic() < deadline:
            time.sleep(0.5)
        by_key = {letter.key: letter for letter in dead_letters(letters.drain(1.0))}
        assert {key: by_key[key].reason_code for key in MALFORMED} == {
            key: code for key, (code, _) in MALFORMED.items()
        }
        assert by_key["not-utf8"].payload() == MALFORMED["not-utf8"][1]
        assert by_key["oversized"].raw_truncated
        stored = {cid: redis_state(settings, cid)[0] for cid in expected}
        lost = sum(
            max(expected[c].events_applied - (s.events_applied if s else 0), 0)
            for c, s in stored.items()
        )
        doubled = sum(
            max((s.events_applied if s else 0) - expected[c].events_applied, 0)
            for c, s in stored.items()
        )
        assert (lost, doubled) == (0, 0)
        assert all(
            s is not None and s.order_count == expected[c].order_count for c, s in stored.items()
        )
        metrics.wait_for(lambda records: _dead_letter_count(records) >= len(MALFORMED))
        counted = _latest_dead_letters(metrics.records)
        assert counted == dict(Counter(code for code, _ in MALFORMED.values()))
        outputs = outputs_on_topics(settings, valid)
        assert (outputs.lost, outputs.duplicated, outputs.alerts_unexpected) == (0, 0, 0), outputs
        record_fault(
            "malformed messages among valid ones",
            settings,
            events_in=len(valid) + len(MALFORMED),
            reflected=len(valid) - lost,
            lost=lost,
            duplicated=doubled,
            dead_lettered=len(by_key),
            note=f"{len(MALFORMED)} kinds of bad input, each with its reason code; {outputs}",
            outputs=outputs.row,
        )

        monkeypatch.setenv("STREAMCRM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
        monkeypatch.setenv("STREAMCRM_TOPIC_PREFIX", settings.topic_prefix)
        assert main(["deadletter"]) == 0
        summary = capsys.readouterr().out
        assert f"{len(MALFORMED)} dead letters" in summary and "too_deep" in summary
        assert main(["deadletter", "--reason", "not_json", "--republish"]) == 0
        assert "re-published 2 (0 pass validation now)" in capsys.readouterr().out
        letters.wait_for(lambda records: len(records) >= len(MALFORMED) + 2)
    finally:
        letters.close()
        metrics.close()


def test_an_erased_customer_is_deleted_tombstoned_audited_and_their_late_events_refused(
    guarded_settings: Settings, worker: None
) -> None:
    settings = guarded_settings
    assert settings.kafka_bootstrap is not None and settings.redis_url is not None
    topics = settings.topics
    history = [e for e in simulate(customers=3, days=60, seed=9).events]
    customer = history[0].customer_id
    score_reader = TopicReader(settings.kafka_bootstrap, topics.scores)
    try:
        send(settings, history)
        score_reader.wait_for(lambda records: customer in {s.customer_id for s in scores(records)})
        erasure = {
            "type": "erasure",
            "event_id": "erase-1",
            "customer_id": customer,
            "occurred_at": "2026-03-05T00:00:00Z",
        }
        send_raw(settings, topics.privacy, customer.encode(), json.dumps(erasure).encode())
        score_reader.wait_for(
            lambda records: any(r.key == customer.encode() and r.value is None for r in records)
        )
        assert redis_state(settings, customer) == (None, None)

        late = PurchaseEvent(
            event_id="late-after-erasure",
            customer_id=customer,
            order_id="late-order",
            occurred_at=history[-1].occurred_at,
            amount=99.0,
            items=1,
            channel="web",
        )
        send(settings, [late])
        time.sleep(3)
        assert redis_state(settings, customer) == (None, None)
        audit = audit_entries(settings)
        client = redis_client(settings)
        try:
            assert not client.exists(stored_customer_key(settings, customer))
        finally:
            client.close()
        assert [fields[b"action"] for _, fields in audit] == [b"erasure"]
        assert all(customer.encode() not in value for _, f in audit for value in f.values())
        late_scores = [s for s in scores(score_reader.drain(0.5)) if s.event_id == late.event_id]
        assert late_scores == []

        consent = {**erasure, "type": "consent", "event_id": "consent-1"}
        send_raw(settings, topics.privacy, customer.encode(), json.dumps(consent).encode())
        time.sleep(2)
        comeback = late.model_copy(update={"event_id": "after-consent"})
        send(settings, [comeback])
        score_reader.wait_for(
            lambda records: "after-consent" in {s.event_id for s in scores(records)}
        )
        state, _ = redis_state(settings, customer)
        assert state is not None and state.order_count == 1  # a new customer, nothing restored
    finally:
        score_reader.close()


def _applied(settings: Settings, expected: dict[str, CustomerState]) -> int:
    total = 0
    for cid in expected:
        state, _ = redis_state(settings, cid)
        total += state.events_applied if state else 0
    return total


def _reports(records: list) -> list[ModelMetrics]:  # type: ignore[type-arg]
    return [ModelMetrics.model_validate_json(r.value) for r in records if r.value is not None]


def _latest_dead_letters(records: list) -> dict[str, int]:  # type: ignore[type-arg]
    reports = _reports(records)
    return reports[-1].dead_letters if reports else {}


def _dead_letter_count(records: list) -> int:  # type: ignore[type-arg]
    return sum(_latest_dead_letters(records).values())


def test_with_pseudonymised_ids_no_customer_id_reaches_redis_or_the_scores_topic(
    services: EmbeddedServices,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = isolated_settings(services, "pseudonyms", tmp_path_factory).model_copy(
        update={"pseudonymise_customer_ids": True, "privacy_key": SecretStr("test-key")}
    )
    assert settings.kafka_bootstrap is not None and settings.redis_url is not None
    history = list(simulate(customers=4, days=30, seed=4).events)
    real_ids = {e.customer_id for e in history}
    ensure_topics(settings, settings.kafka_bootstrap)
    reader = TopicReader(settings.kafka_bootstrap, settings.topics.scores)
    try:
        with running_worker(settings, tmp_path / "worker.log"):
            send(settings, history)
            reader.wait_for(lambda records: len(records) >= len(history))
    finally:
        reader.close()
    keys = {r.key.decode() for r in reader.records if r.key}
    assert keys and all(key.startswith("p-") for key in keys) and not keys & real_ids
    client = redis.Redis.from_url(settings.redis_url)
    try:
        stored = [key.decode() for key in client.scan_iter(f"{settings.redis_namespace}:*")]
    finally:
        client.close()
    assert stored and not any(cid in key for key in stored for cid in real_ids)

    monkeypatch.setenv("STREAMCRM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("STREAMCRM_REDIS_NAMESPACE", settings.redis_namespace)
    monkeypatch.setenv("STREAMCRM_PSEUDONYMISE_CUSTOMER_IDS", "true")
    monkeypatch.setenv("STREAMCRM_PRIVACY_KEY", "test-key")
    some_customer = sorted(real_ids)[0]
    assert main(["score", some_customer]) == 0  # looked up by the real id
    assert json.loads(capsys.readouterr().out)["state"]["customer_id"].startswith("p-")


def test_valid_events_not_keyed_by_their_customer_are_dead_lettered_with_key_reasons(
    guarded_settings: Settings, worker: None
) -> None:
    # Each could land on another partition than its customer's other events, out of reach
    # of the per-partition guard that applies each event once.
    settings = guarded_settings
    assert settings.kafka_bootstrap is not None
    topics = settings.topics
    refused = {
        "key-none": (None, "missing_key"),
        "key-other": (b"key-good", "key_mismatch"),  # keyed by another customer
        "key-long": (b"k" * 100_000, "key_too_long"),
    }
    letters = TopicReader(settings.kafka_bootstrap, topics.deadletter)
    try:
        for customer, (key, _) in refused.items():
            send_raw(settings, topics.purchases, key, as_bytes(valid_purchase(customer)))
        send_raw(settings, topics.purchases, b"key-good", as_bytes(valid_purchase("key-good")))

        def ours(records: list[Record]) -> dict[str, DeadLetter]:
            found = {}
            for letter in dead_letters(records):
                if letter.reason_code in {code for _, code in refused.values()}:
                    customer = json.loads(letter.payload())["customer_id"]
                    found[customer] = letter
            return found

        letters.wait_for(lambda records: len(ours(records)) == len(refused))
        found = ours(letters.records)
        assert {c: found[c].reason_code for c in refused} == {
            c: code for c, (_, code) in refused.items()
        }
        assert found["key-none"].key is None
        assert found["key-other"].key == "key-good"
        long_key = found["key-long"].key
        assert long_key is not None and len(long_key) == 256  # a bounded copy of the key
        deadline = time.monotonic() + 60
        while redis_state(settings, "key-good")[0] is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert redis_state(settings, "key-good")[0] is not None  # the rightly keyed one applies
        assert all(redis_state(settings, c)[0] is None for c in refused)
    finally:
        letters.close()
