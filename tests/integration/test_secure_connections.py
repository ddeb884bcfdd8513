"""Secure connections on real servers: Redis with an ACL user and over TLS, Kafka over mutual
TLS, a whole worker with every secret passed to it through its environment, and workers that
cannot connect (wrong Redis password, a broker certificate from another CA or for another host
name, no client certificate, no broker at all) and exit with code 2 and one line saying why.

Each server is started here on free loopback ports and stopped at the end of the module
(``tests/integration/secure_services.py``). Kafka SASL is not exercised here: the embedded
Tansu cannot hold a SCRAM user with memory storage (``docs/tansu.md``); SASL/SCRAM end to
end, and TLS on the broker itself, run on Apache Kafka in ``test_kafka_security.py``. A
refused worker run here is configured with a SASL password to check that it shows nowhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka.admin import KafkaAdminClient, NewTopic

from streamcrm.core.state import CustomerState, apply
from streamcrm.errors import StoreUnavailableError
from streamcrm.services.connections import (
    faust_broker_credentials,
    kafka_client_options,
    redis_client_options,
)
from streamcrm.services.embedded import EmbeddedServices, RunningService, free_port
from streamcrm.services.kafka import (
    make_producer,
    produce_events,
    read_to_end,
    read_topic,
)
from streamcrm.services.processes import worker_environment
from streamcrm.settings import Settings
from streamcrm.store import RedisStateStore
from tests.conftest import isolated_settings
from tests.integration.secure_services import (
    TlsTerminatingProxy,
    start_secure_redis,
    tansu_behind_tls,
)
from tests.integration.worker_harness import (
    REFUSED_WITHIN_S,
    Exited,
    one_purchase,
    running_worker,
    wait_for_score,
    worker_until_it_exits,
)
from tests.tls import Pki, encrypted_key, make_pki

pytestmark = pytest.mark.integration

USER, PASSWORD = "scorer", "acl-pa55word-7f3a"
KAFKA_KEY_PASSWORD = "kafka-key-pa55-9c1e"
REDIS_KEY_PASSWORD = "redis-key-pa55-4d7b"
SASL_PASSWORD = "sasl-pa55word-2b8f"
PRIVACY_KEY = "privacy-key-5e0a-71c3"
SECRETS = (PASSWORD, KAFKA_KEY_PASSWORD, REDIS_KEY_PASSWORD, SASL_PASSWORD, PRIVACY_KEY)


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


# --- Redis AUTH / ACL ----------------------------------------------------------------------------


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


# --- Redis TLS -----------------------------------------------------------------------------------


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


# --- Kafka over mutual TLS -----------------------------------------------------------------------


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


# --- a whole worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedKeys:
    """The test client key, encrypted once with each service's key password."""

    kafka: Path
    redis: Path


@pytest.fixture(scope="module")
def encrypted_keys(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> EncryptedKeys:
    directory = tmp_path_factory.mktemp("encrypted-keys")
    return EncryptedKeys(
        kafka=encrypted_key(pki.client_key, KAFKA_KEY_PASSWORD, directory / "kafka.key"),
        redis=encrypted_key(pki.client_key, REDIS_KEY_PASSWORD, directory / "redis.key"),
    )


def kafka_mutual_tls(pki: Pki, keys: EncryptedKeys) -> dict[str, object]:
    """Settings for Kafka over mutual TLS with the password-protected client key."""
    return {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca_cert,
        "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": keys.kafka,
        "kafka_ssl_password": KAFKA_KEY_PASSWORD,
    }


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
    encrypted_keys: EncryptedKeys,
    unique_name: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    services = EmbeddedServices(f"127.0.0.1:{tls_kafka.listen_port}", locked_down_redis.address)
    local = isolated_settings(services, unique_name, tmp_path_factory)
    settings = Settings(
        **{
            **local.model_dump(),
            **kafka_mutual_tls(pki, encrypted_keys),
            "redis_username": USER,
            "redis_password": PASSWORD,
            "redis_ssl_ca_certs": pki.ca_cert,
            "redis_ssl_certfile": pki.client_cert,
            "redis_ssl_keyfile": encrypted_keys.redis,
            "redis_ssl_password": REDIS_KEY_PASSWORD,
            "privacy_key": PRIVACY_KEY,
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
    log = log_path.read_text(errors="replace")
    assert "start-up check: Kafka" in log
    assert [secret for secret in SECRETS if secret in log] == []


async def load_state(settings: Settings, namespace: str, customer_id: str) -> CustomerState | None:
    store = store_for(settings, namespace)
    try:
        return await store.load(customer_id)
    finally:
        await store.close()


# --- a worker that cannot connect ----------------------------------------------------------------


def assert_refused(exited: Exited, *expected: str, within_s: float = REFUSED_WITHIN_S) -> None:
    """Exit code 2 in time, a last line on stderr saying ``expected``, no traceback, no secret."""
    assert exited.returncode == 2, exited.output[-3000:]
    assert exited.seconds < within_s
    assert exited.last_error_line.startswith("streamcrm: "), exited.output[-3000:]
    for words in expected:
        assert words in exited.last_error_line
    assert "Traceback" not in exited.output
    assert [secret for secret in SECRETS if secret in exited.output] == []


@pytest.fixture
def refusal_settings(
    acl_redis: RunningService, tmp_path: Path, unique_name: str
) -> dict[str, object]:
    """Everything a worker needs but Kafka's security: Redis as the ACL user, the privacy key."""
    return {
        "app_id": unique_name,
        "topic_prefix": unique_name,
        "redis_namespace": unique_name,
        "data_dir": tmp_path / "faust-data",
        "redis_url": acl_redis.address,
        "redis_username": USER,
        "redis_password": PASSWORD,
        "privacy_key": PRIVACY_KEY,
    }


def test_a_worker_with_a_wrong_redis_password_exits_2_at_once_saying_what_to_check(
    tls_kafka: TlsTerminatingProxy,
    pki: Pki,
    encrypted_keys: EncryptedKeys,
    refusal_settings: dict[str, object],
) -> None:
    wrong = f"not-{PASSWORD}"
    settings = Settings(
        **{
            **refusal_settings,
            **kafka_mutual_tls(pki, encrypted_keys),
            "kafka_bootstrap": f"127.0.0.1:{tls_kafka.listen_port}",
            "redis_password": wrong,
        }
    )

    exited = worker_until_it_exits(settings)

    assert_refused(exited, "Redis at ", "refused the credentials", "STREAMCRM_REDIS_PASSWORD")
    assert wrong not in exited.output


def test_a_broker_certificate_from_another_ca_ends_the_worker_naming_the_ca_setting(
    tls_kafka: TlsTerminatingProxy,
    pki: Pki,
    encrypted_keys: EncryptedKeys,
    refusal_settings: dict[str, object],
    tmp_path: Path,
) -> None:
    stranger = make_pki(tmp_path / "stranger", "stranger")
    bootstrap = f"127.0.0.1:{tls_kafka.listen_port}"
    settings = Settings(
        **{
            **refusal_settings,
            **kafka_mutual_tls(pki, encrypted_keys),
            # Every Kafka secret there is: SASL over TLS with a password-protected client key.
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "scorer",
            "kafka_sasl_password": SASL_PASSWORD,
            "kafka_bootstrap": bootstrap,
            "kafka_ssl_cafile": stranger.ca_cert,
        }
    )

    exited = worker_until_it_exits(settings)

    assert_refused(
        exited,
        f"Kafka TLS handshake with {bootstrap} failed: certificate verify failed",
        "check STREAMCRM_KAFKA_SSL_CAFILE",
    )


def test_a_worker_without_the_client_certificate_the_broker_requires_exits_2_saying_so(
    tls_kafka: TlsTerminatingProxy, pki: Pki, refusal_settings: dict[str, object]
) -> None:
    bootstrap = f"127.0.0.1:{tls_kafka.listen_port}"
    settings = Settings(
        **refusal_settings,
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_cert,
    )

    exited = worker_until_it_exits(settings)

    assert_refused(
        exited,
        f"Kafka at {bootstrap} refused the TLS connection: tlsv13 alert certificate required",
        "set STREAMCRM_KAFKA_SSL_CERTFILE",
    )


def test_a_broker_certificate_for_another_host_name_ends_the_worker(
    tls_kafka: TlsTerminatingProxy, refusal_settings: dict[str, object], tmp_path: Path
) -> None:
    # A proxy to the same broker whose certificate, from a CA the worker trusts, names
    # another host than the 127.0.0.1 the worker connects to.
    elsewhere = make_pki(tmp_path / "elsewhere", "elsewhere", ("DNS:broker.elsewhere.example",))
    proxy = TlsTerminatingProxy(free_port(), tls_kafka.target_port, elsewhere)
    proxy.start()
    try:
        bootstrap = f"127.0.0.1:{proxy.listen_port}"
        settings = Settings(
            **refusal_settings,
            kafka_bootstrap=bootstrap,
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=elsewhere.ca_cert,
            kafka_ssl_certfile=elsewhere.client_cert,
            kafka_ssl_keyfile=elsewhere.client_key,
        )

        exited = worker_until_it_exits(settings)
    finally:
        proxy.stop()

    assert_refused(
        exited,
        f"Kafka TLS handshake with {bootstrap} failed: certificate verify failed",
        "mismatch",
        "STREAMCRM_KAFKA_BOOTSTRAP",
    )


def test_a_worker_that_finds_no_broker_gives_up_after_the_start_up_wait(
    refusal_settings: dict[str, object],
) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings(**refusal_settings, kafka_bootstrap=bootstrap, startup_wait_s=3.0)

    exited = worker_until_it_exits(settings)

    assert_refused(
        exited,
        f"Kafka unavailable at {bootstrap}: ",
        "gave up after",
        "STREAMCRM_STARTUP_WAIT_S=3",
        within_s=3.0 + REFUSED_WITHIN_S,
    )
    assert exited.output.count("trying again in") >= 2
