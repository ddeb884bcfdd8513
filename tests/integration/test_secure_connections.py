"""Secure connections on real servers: Redis with an ACL user and over TLS, Kafka over mutual
TLS, and a whole worker with every secret passed to it through its environment.

Each server is started here on free loopback ports and stopped at the end of the module
(``tests/integration/secure_services.py``). Kafka SASL is not exercised end to end: the
embedded Tansu cannot hold a SCRAM user with memory storage (``docs/tansu.md``); the SASL
option mapping is covered in ``tests/unit/test_connections.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from streamcrm.cli import worker_environment
from streamcrm.connections import (
    faust_broker_credentials,
    kafka_client_options,
    redis_client_options,
)
from streamcrm.embedded import EmbeddedServices, RunningService
from streamcrm.errors import StoreUnavailableError
from streamcrm.events import CustomerScore, PurchaseEvent
from streamcrm.kafka_io import make_producer, poll_records, produce_events, read_to_end, read_topic
from streamcrm.settings import Settings
from streamcrm.state import CustomerState, apply
from streamcrm.store import RedisStateStore
from tests.conftest import isolated_settings
from tests.integration.secure_services import (
    TlsTerminatingProxy,
    start_secure_redis,
    tansu_behind_tls,
)
from tests.integration.worker_harness import running_worker
from tests.tls import Pki, make_pki

pytestmark = pytest.mark.integration

USER, PASSWORD = "scorer", "acl-pa55word-7f3a"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A redis-server whose default user is off: only ``USER`` with ``PASSWORD`` gets in."""
    service = start_secure_redis(tmp_path_factory.mktemp("acl-redis"), acl_user=(USER, PASSWORD))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningService]:
    """A redis-server that speaks only TLS (``--port 0``), with the test CA's certificate."""
    service = start_secure_redis(tmp_path_factory.mktemp("tls-redis"), tls=pki)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsTerminatingProxy]:
    with tansu_behind_tls(tmp_path_factory.mktemp("tls-kafka"), pki) as proxy:
        yield proxy


def one_purchase(customer_id: str, days_ago: float = 1.0) -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"{customer_id}-{uuid.uuid4().hex[:8]}",
        customer_id=customer_id,
        order_id=f"{customer_id}-o1",
        amount=42.5,
        items=1,
        channel="web",
        occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
    )


def customer_state(customer_id: str) -> CustomerState:
    state = apply(None, one_purchase(customer_id)).state
    assert state is not None
    return state


def store_for(settings: Settings, namespace: str) -> RedisStateStore:
    assert settings.redis_url is not None
    return RedisStateStore.from_url(
        settings.redis_url, namespace, client_options=redis_client_options(settings)
    )


async def round_trip(settings: Settings, namespace: str) -> tuple[CustomerState, CustomerState]:
    """Save one customer through a store made from ``settings``; return it and what loads."""
    store = store_for(settings, namespace)
    saved = customer_state("c1")
    try:
        await store.save(saved, None)
        loaded = await store.load("c1")
    finally:
        await store.close()
    assert loaded is not None
    return saved, loaded


def mutual_tls(pki: Pki, bootstrap: str) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_cert,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )


# --- Redis AUTH / ACL -------------------------------------------------------------------------


async def test_the_store_saves_and_loads_a_customer_as_an_acl_user(
    acl_redis: RunningService, unique_name: str
) -> None:
    settings = Settings(redis_url=acl_redis.address, redis_username=USER, redis_password=PASSWORD)

    saved, loaded = await round_trip(settings, unique_name)

    assert loaded == saved


async def test_the_user_and_password_may_be_written_in_the_redis_url(
    acl_redis: RunningService, unique_name: str
) -> None:
    url = acl_redis.address.replace("redis://", f"redis://{USER}:{PASSWORD}@")
    settings = Settings(redis_url=url)

    saved, loaded = await round_trip(settings, unique_name)

    assert loaded == saved
    assert PASSWORD not in repr(settings)


async def test_a_wrong_password_is_a_store_error_that_says_what_to_check(
    acl_redis: RunningService, unique_name: str
) -> None:
    settings = Settings(redis_url=acl_redis.address, redis_username=USER, redis_password="wrong")

    with pytest.raises(StoreUnavailableError, match="refused the credentials") as refused:
        await round_trip(settings, unique_name)

    assert "STREAMCRM_REDIS_PASSWORD" in str(refused.value)
    assert "wrong" not in str(refused.value).replace("WRONGPASS", "")


async def test_without_credentials_the_store_is_refused(
    acl_redis: RunningService, unique_name: str
) -> None:
    with pytest.raises(StoreUnavailableError, match="refused the credentials"):
        await round_trip(Settings(redis_url=acl_redis.address), unique_name)


# --- Redis TLS ----------------------------------------------------------------------------------


async def test_the_store_works_over_tls_with_the_configured_ca(
    tls_redis: RunningService, pki: Pki, unique_name: str
) -> None:
    settings = Settings(redis_url=tls_redis.address, redis_ssl_ca_certs=pki.ca_cert)

    saved, loaded = await round_trip(settings, unique_name)

    assert loaded == saved


async def test_a_redis_certificate_from_another_ca_is_refused(
    tls_redis: RunningService, tmp_path: Path, unique_name: str
) -> None:
    stranger = make_pki(tmp_path, "stranger")
    settings = Settings(redis_url=tls_redis.address, redis_ssl_ca_certs=stranger.ca_cert)

    with pytest.raises(StoreUnavailableError, match="certificate verify failed"):
        await round_trip(settings, unique_name)


async def test_a_plain_connection_to_a_tls_only_redis_fails_as_unavailable(
    tls_redis: RunningService, unique_name: str
) -> None:
    plain = Settings(redis_url=tls_redis.address.replace("rediss://", "redis://"))

    with pytest.raises(StoreUnavailableError):
        await round_trip(plain, unique_name)


# --- Kafka over mutual TLS ----------------------------------------------------------------------


def test_kafka_python_produces_and_consumes_over_mutual_tls(
    tls_kafka: TlsTerminatingProxy, pki: Pki, unique_name: str
) -> None:
    bootstrap = f"127.0.0.1:{tls_kafka.listen_port}"
    options = kafka_client_options(mutual_tls(pki, bootstrap))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **options)
    try:
        admin.create_topics([NewTopic(unique_name, 1, 1)])
    finally:
        admin.close()

    producer = make_producer(bootstrap, options)
    try:
        producer.send(unique_name, key=b"c1", value=b"over TLS").get(timeout=30)
    finally:
        producer.close()
    records = read_to_end(bootstrap, unique_name, client_options=options)

    assert [(r.key, r.value) for r in records] == [(b"c1", b"over TLS")]
    assert tls_kafka.connections > 0


async def test_aiokafka_with_faust_credentials_produces_and_consumes_over_mutual_tls(
    tls_kafka: TlsTerminatingProxy, pki: Pki, unique_name: str
) -> None:
    bootstrap = f"127.0.0.1:{tls_kafka.listen_port}"
    settings = mutual_tls(pki, bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_options(settings))
    try:
        admin.create_topics([NewTopic(unique_name, 1, 1)])
    finally:
        admin.close()
    # What Faust's aiokafka driver makes of App(broker_credentials=...).
    auth = credentials_to_aiokafka_auth(faust_broker_credentials(settings))

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **auth)
    await producer.start()
    try:
        await producer.send_and_wait(unique_name, key=b"c1", value=b"aiokafka over TLS")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **auth)
    await consumer.start()
    try:
        partition = TopicPartition(unique_name, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        batch = await consumer.getmany(partition, timeout_ms=10_000)
    finally:
        await consumer.stop()

    assert [m.value for m in batch.get(partition, [])] == [b"aiokafka over TLS"]


# --- a whole worker -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked_down_redis(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[RunningService]:
    """TLS only, client certificates required, default user off: as locked down as it gets."""
    service = start_secure_redis(
        tmp_path_factory.mktemp("locked-redis"),
        acl_user=(USER, PASSWORD),
        tls=pki,
        client_certificates=True,
    )
    yield service
    service.stop()


def test_a_worker_scores_over_kafka_tls_into_redis_tls_with_acl_and_logs_no_secret(
    tls_kafka: TlsTerminatingProxy,
    locked_down_redis: RunningService,
    pki: Pki,
    unique_name: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    services = EmbeddedServices(f"127.0.0.1:{tls_kafka.listen_port}", locked_down_redis.address)
    local = isolated_settings(services, unique_name, tmp_path_factory)
    settings = Settings(
        **{
            **local.model_dump(),
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": pki.ca_cert,
            "kafka_ssl_certfile": pki.client_cert,
            "kafka_ssl_keyfile": pki.client_key,
            "redis_username": USER,
            "redis_password": PASSWORD,
            "redis_ssl_ca_certs": pki.ca_cert,
            "redis_ssl_certfile": pki.client_cert,
            "redis_ssl_keyfile": pki.client_key,
        }
    )
    assert worker_environment(settings)["STREAMCRM_REDIS_PASSWORD"] == PASSWORD
    assert settings.kafka_bootstrap is not None
    options = kafka_client_options(settings)
    log_path = tmp_path_factory.mktemp("secure-worker") / "worker.log"

    with running_worker(settings, log_path):
        producer = make_producer(settings.kafka_bootstrap, options)
        try:
            produce_events(producer, settings, [one_purchase("c1", days_ago=3)])
            producer.flush()
        finally:
            producer.close()
        reader = read_topic(
            settings.kafka_bootstrap, settings.topics.scores, client_options=options
        )
        try:
            scored = wait_for_score(reader, "c1", timeout_s=90)
        finally:
            reader.close()

    stored = asyncio.run(load_state(settings, unique_name, "c1"))
    assert stored is not None and stored.events_applied == 1
    assert scored.customer_id == "c1"
    assert PASSWORD not in log_path.read_text(errors="replace")


async def load_state(settings: Settings, namespace: str, customer_id: str) -> CustomerState | None:
    store = store_for(settings, namespace)
    try:
        return await store.load(customer_id)
    finally:
        await store.close()


def wait_for_score(reader: KafkaConsumer, customer_id: str, timeout_s: float) -> CustomerScore:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in poll_records(reader, timeout_ms=500):
            if record.value is not None:
                score = CustomerScore.model_validate_json(record.value)
                if score.customer_id == customer_id:
                    return score
    raise AssertionError(f"no score for {customer_id} within {timeout_s:g} s")
