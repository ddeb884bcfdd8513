"""SASL/SCRAM and TLS on Apache Kafka itself, the broker production runs: what the embedded
Tansu could not show (``docs/tansu.md``: no SASL user, no TLS of its own).

One broker for the module (:func:`~tests.integration.secure_services.start_secure_kafka`):
a SASL_PLAINTEXT listener taking SCRAM-SHA-512 logins, an SSL listener that requires client
certificates from the test CA, and a PLAINTEXT one for the test's own admin work. The SCRAM
user is created through the Admin API. A worker logs in and scores events end to end on each
secure listener; a wrong password, a plain client at the SASL listener, a broker certificate
from another CA and a missing client certificate each end ``streamcrm worker`` at once with
exit code 2 and one line naming the cause and the settings to check.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamcrm.core.state import CustomerState
from streamcrm.services.connections import kafka_client_options
from streamcrm.services.embedded import EmbeddedServices
from streamcrm.services.kafka import make_producer, produce_events, read_topic
from streamcrm.settings import Settings
from streamcrm.store import RedisStateStore
from tests.conftest import isolated_settings
from tests.integration.secure_services import SecureKafka, start_secure_kafka
from tests.integration.worker_harness import (
    REFUSED_WITHIN_S,
    Exited,
    one_purchase,
    running_worker,
    wait_for_score,
    worker_until_it_exits,
)
from tests.tls import Pki, make_pki

pytestmark = pytest.mark.integration

USER, PASSWORD = "scorer", "scram-pa55word-31d9"
WRONG_PASSWORD = "not-the-scram-pa55word"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureKafka]:
    kafka = start_secure_kafka(tmp_path_factory.mktemp("secure-kafka"), pki)
    try:
        kafka.add_scram_user(USER, PASSWORD)
        yield kafka
    finally:
        kafka.service.stop()


def on_listener(
    services: EmbeddedServices,
    bootstrap: str,
    name: str,
    tmp_path_factory: pytest.TempPathFactory,
    **security: object,
) -> Settings:
    """A test's own settings, pointed at ``bootstrap`` with the ``security`` settings (and
    the session's plain redis-server)."""
    own = EmbeddedServices(bootstrap, services.redis_url, "kafka")
    local = isolated_settings(own, name, tmp_path_factory)
    return Settings(**{**local.model_dump(), **security})


def sasl(password: str) -> dict[str, object]:
    return {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": USER,
        "kafka_sasl_password": password,
    }


def mutual_tls(pki: Pki, with_client_certificate: bool = True) -> dict[str, object]:
    settings: dict[str, object] = {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca_cert,
    }
    if with_client_certificate:
        settings |= {"kafka_ssl_certfile": pki.client_cert, "kafka_ssl_keyfile": pki.client_key}
    return settings


def scores_one_purchase(settings: Settings, log_path: Path) -> str:
    """Run a worker with ``settings``, send it one purchase over the same secure connection,
    wait for the score; return the worker's log."""
    assert settings.kafka_bootstrap is not None
    options = kafka_client_options(settings)
    customer = f"c-{uuid.uuid4().hex[:6]}"
    with running_worker(settings, log_path):
        producer = make_producer(settings.kafka_bootstrap, options)
        try:
            produce_events(producer, settings, [one_purchase(customer, days_ago=3)])
            producer.flush()
        finally:
            producer.close()
        reader = read_topic(
            settings.kafka_bootstrap, settings.topics.scores, client_options=options
        )
        try:
            scored = wait_for_score(reader, customer, timeout_s=90)
        finally:
            reader.close()
    assert scored.customer_id == customer
    stored = asyncio.run(load_state(settings, customer))
    assert stored is not None and stored.events_applied == 1
    return log_path.read_text(errors="replace")


async def load_state(settings: Settings, customer_id: str) -> CustomerState | None:
    assert settings.redis_url is not None
    store = RedisStateStore.from_url(settings.redis_url, settings.redis_namespace)
    try:
        return await store.load(customer_id)
    finally:
        await store.close()


def assert_refused(exited: Exited, *expected: str) -> None:
    """Exit code 2 in time, a last line on stderr saying ``expected``, no traceback, no
    password."""
    print(f"{exited.seconds:.1f} s: {exited.last_error_line}")
    assert exited.returncode == 2, exited.output[-3000:]
    assert exited.seconds < REFUSED_WITHIN_S, exited.seconds
    assert exited.last_error_line.startswith("streamcrm: "), exited.output[-3000:]
    for words in expected:
        assert words in exited.last_error_line, exited.last_error_line
    assert "Traceback" not in exited.output
    assert PASSWORD not in exited.output and WRONG_PASSWORD not in exited.output


# --- SASL/SCRAM-SHA-512 --------------------------------------------------------------------------


def test_a_worker_logs_in_with_scram_sha_512_and_scores_events_end_to_end(
    secure_kafka: SecureKafka,
    services: EmbeddedServices,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = on_listener(
        services, secure_kafka.sasl.address, "kafka-sasl", tmp_path_factory, **sasl(PASSWORD)
    )

    log = scores_one_purchase(settings, tmp_path / "worker.log")

    assert "over SASL_PLAINTEXT (SASL SCRAM-SHA-512 as scorer)" in log
    assert PASSWORD not in log


def test_a_wrong_scram_password_ends_the_worker_naming_sasl_authentication(
    secure_kafka: SecureKafka, services: EmbeddedServices, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = on_listener(
        services, secure_kafka.sasl.address, "kafka-sasl-wrong", tmp_path_factory,
        **sasl(WRONG_PASSWORD),
    )  # fmt: skip

    exited = worker_until_it_exits(settings)

    assert_refused(
        exited,
        f"Kafka at {secure_kafka.sasl.address} refused SASL authentication as scorer with"
        " SCRAM-SHA-512 (Authentication failed",
        "invalid credentials",
        "check STREAMCRM_KAFKA_SASL_USERNAME and STREAMCRM_KAFKA_SASL_PASSWORD",
    )


def test_status_with_a_wrong_scram_password_says_so_at_once(
    secure_kafka: SecureKafka, services: EmbeddedServices, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = on_listener(
        services, secure_kafka.sasl.address, "kafka-sasl-status", tmp_path_factory,
        **sasl(WRONG_PASSWORD),
    )  # fmt: skip

    exited = worker_until_it_exits(settings, command="status")

    assert_refused(exited, "refused SASL authentication as scorer", "STREAMCRM_KAFKA_SASL_PASSWORD")


@pytest.mark.parametrize("command", ["worker", "topics"])
def test_a_plain_client_at_a_sasl_listener_is_told_to_log_in(
    command: str,
    secure_kafka: SecureKafka,
    services: EmbeddedServices,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The listener answers ApiVersions, then closes the connection at the first other
    request: the clients would only say they cannot bootstrap, after their timeouts."""
    settings = on_listener(
        services, secure_kafka.sasl.address, f"kafka-sasl-plain-{command}", tmp_path_factory
    )
    assert settings.kafka_security_protocol == "PLAINTEXT"

    exited = worker_until_it_exits(settings, command=command)

    assert_refused(
        exited,
        f"Kafka at {secure_kafka.sasl.address} answered ApiVersions but closed the connection",
        "a listener that wants a SASL login",
        "STREAMCRM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT",
    )


# --- TLS on the broker ---------------------------------------------------------------------------


def test_a_worker_with_the_broker_ca_and_a_client_certificate_scores_over_tls(
    secure_kafka: SecureKafka,
    services: EmbeddedServices,
    pki: Pki,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = on_listener(
        services, secure_kafka.tls.address, "kafka-tls", tmp_path_factory, **mutual_tls(pki)
    )

    log = scores_one_purchase(settings, tmp_path / "worker.log")

    assert f"over SSL (CA {pki.ca_cert}, client certificate {pki.client_cert})" in log


def test_a_broker_certificate_from_another_ca_ends_the_worker(
    secure_kafka: SecureKafka,
    services: EmbeddedServices,
    pki: Pki,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    stranger = make_pki(tmp_path / "stranger", "stranger")
    security = mutual_tls(pki) | {"kafka_ssl_cafile": stranger.ca_cert}
    settings = on_listener(
        services, secure_kafka.tls.address, "kafka-tls-ca", tmp_path_factory, **security
    )

    exited = worker_until_it_exits(settings)

    assert_refused(
        exited,
        f"Kafka TLS handshake with {secure_kafka.tls.address} failed: certificate verify failed",
        "check STREAMCRM_KAFKA_SSL_CAFILE",
    )


def test_a_worker_without_the_client_certificate_the_broker_requires_is_refused(
    secure_kafka: SecureKafka,
    services: EmbeddedServices,
    pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = on_listener(
        services, secure_kafka.tls.address, "kafka-tls-no-cert", tmp_path_factory,
        **mutual_tls(pki, with_client_certificate=False),
    )  # fmt: skip

    exited = worker_until_it_exits(settings)

    assert_refused(
        exited,
        f"Kafka at {secure_kafka.tls.address} refused the TLS connection",
        "set STREAMCRM_KAFKA_SSL_CERTFILE",
    )
