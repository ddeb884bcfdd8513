"""Secure connections from configuration: which settings fit together, what each client library
is given, and that no secret shows in a repr, a dump or a log-ready URL."""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaClient
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.net.sasl import get_sasl_mechanism
from kafka.net.transport import KafkaSSLTransport
from pydantic import SecretStr

from streamcrm.cli import worker_environment
from streamcrm.connections import (
    faust_broker_credentials,
    kafka_client_options,
    redact_url,
    redis_client_options,
)
from streamcrm.errors import ConfigurationError
from streamcrm.settings import Settings
from tests.tls import Pki

KAFKA_SECRET = "kafka-pa55word"
REDIS_SECRET = "redis-pa55word"


def sasl(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512", **more: Any) -> Settings:
    return Settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="scorer",
        kafka_sasl_password=KAFKA_SECRET,
        **more,
    )


def secured_by(protocol: str, pki: Pki) -> Settings:
    """Valid settings for ``protocol``: SASL credentials and a CA file where it needs them."""
    tls: dict[str, Any] = {"kafka_ssl_cafile": pki.ca_cert} if protocol.endswith("SSL") else {}
    if protocol.startswith("SASL"):
        return sasl(protocol, **tls)
    return Settings(kafka_security_protocol=protocol, **tls)


def every_form_of(settings: Settings) -> list[str]:
    """Everything that could end up in a log: repr, str, dumps, the URL for logs."""
    return [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        str(settings.redis_url_for_logs),
    ]


# --- which settings fit together ------------------------------------------------------------


def test_plaintext_is_the_default() -> None:
    settings = Settings()

    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(settings) is None
    assert redis_client_options(settings) == {}


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    "missing", ["kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"]
)
def test_a_sasl_protocol_needs_mechanism_username_and_password(protocol: str, missing: str) -> None:
    given: dict[str, Any] = {
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "scorer",
        "kafka_sasl_password": KAFKA_SECRET,
    }
    del given[missing]

    with pytest.raises(ConfigurationError, match=f"{protocol} needs .*missing: {missing}$"):
        Settings(kafka_security_protocol=protocol, **given)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_credentials_without_a_sasl_protocol_are_refused(protocol: str) -> None:
    with pytest.raises(ConfigurationError, match=f"is {protocol}, which does not authenticate"):
        Settings(
            kafka_security_protocol=protocol,
            kafka_sasl_username="scorer",
            kafka_sasl_password=KAFKA_SECRET,
        )


def test_tls_files_without_a_tls_protocol_are_refused(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="is PLAINTEXT, which does not use TLS"):
        Settings(kafka_ssl_cafile=pki.ca_cert)
    with pytest.raises(ConfigurationError, match="is SASL_PLAINTEXT, which does not use TLS"):
        sasl("SASL_PLAINTEXT", kafka_ssl_cafile=pki.ca_cert)


def test_a_certificate_file_that_does_not_exist_is_refused(pki: Pki) -> None:
    missing = pki.ca_cert.parent / "no-such-ca.crt"

    with pytest.raises(ConfigurationError, match="kafka_ssl_cafile: no such file"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=missing)


def test_a_client_key_needs_its_certificate(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="kafka_ssl_keyfile needs kafka_ssl_certfile"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=pki.client_key)
    with pytest.raises(ConfigurationError, match="redis_ssl_keyfile needs redis_ssl_certfile"):
        Settings(redis_url="rediss://127.0.0.1:6380/0", redis_ssl_keyfile=pki.client_key)


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:6379/0"])
def test_redis_tls_files_need_a_rediss_url(redis_url: str | None, pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="redis_ssl_ca_certs set, but .* not a rediss://"):
        Settings(redis_url=redis_url, redis_ssl_ca_certs=pki.ca_cert)


def test_unknown_protocols_and_mechanisms_are_refused() -> None:
    with pytest.raises(ValueError, match="kafka_security_protocol"):
        Settings(kafka_security_protocol="TLS")
    with pytest.raises(ValueError, match="kafka_sasl_mechanism"):
        sasl(mechanism="GSSAPI")


def test_protocol_and_mechanism_names_may_be_written_in_lower_case() -> None:
    settings = sasl(protocol="sasl_plaintext", mechanism="scram-sha-256")

    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
    )


def test_a_redis_password_given_twice_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="two Redis passwords"):
        Settings(redis_url="redis://:one@127.0.0.1:6379/0", redis_password="two")


def test_a_redis_user_given_twice_differently_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="two Redis user names"):
        Settings(redis_url="redis://alice@127.0.0.1:6379/0", redis_username="bob")


def test_secrets_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    monkeypatch.setenv("STREAMCRM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMCRM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STREAMCRM_KAFKA_SASL_USERNAME", "scorer")
    monkeypatch.setenv("STREAMCRM_KAFKA_SASL_PASSWORD", KAFKA_SECRET)
    monkeypatch.setenv("STREAMCRM_KAFKA_SSL_CAFILE", str(pki.ca_cert))
    monkeypatch.setenv("STREAMCRM_REDIS_URL", f"rediss://scorer:{REDIS_SECRET}@127.0.0.1:6380/0")
    monkeypatch.setenv("STREAMCRM_REDIS_SSL_CA_CERTS", str(pki.ca_cert))

    settings = Settings.from_env()

    assert settings.kafka_sasl_password == SecretStr(KAFKA_SECRET)
    assert settings.redis_password == SecretStr(REDIS_SECRET)
    assert settings.redis_url == "rediss://scorer@127.0.0.1:6380/0"


# --- redaction --------------------------------------------------------------------------------


def test_no_password_shows_in_repr_str_or_dumps_of_the_settings(pki: Pki) -> None:
    settings = sasl(
        kafka_ssl_cafile=pki.ca_cert,
        redis_url="rediss://127.0.0.1:6380/0",
        redis_username="scorer",
        redis_password=REDIS_SECRET,
    )

    for shown in every_form_of(settings):
        assert KAFKA_SECRET not in shown
        assert REDIS_SECRET not in shown


def test_a_password_written_in_the_redis_url_is_moved_out_of_it() -> None:
    settings = Settings(redis_url=f"redis://scorer:{REDIS_SECRET}@redis.internal:6379/2")

    assert settings.redis_url == "redis://scorer@redis.internal:6379/2"
    assert settings.redis_password == SecretStr(REDIS_SECRET)
    assert settings.redis_url_for_logs == "redis://scorer:***@redis.internal:6379/2"
    for shown in every_form_of(settings):
        assert REDIS_SECRET not in shown


def test_a_url_encoded_password_is_decoded_once() -> None:
    settings = Settings(redis_url="redis://:p%40ss%3Aword@127.0.0.1:6379/0")

    assert redis_client_options(settings) == {"password": "p@ss:word"}
    assert "p%40ss" not in settings.redis_url_for_logs  # type: ignore[operator]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://:{REDIS_SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (f"rediss://u:{REDIS_SECRET}@h.example:6380/1?x=1", "rediss://u:***@h.example:6380/1?x=1"),
    ],
)
def test_the_redacted_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_redacted_url_says_a_password_is_used_when_it_comes_from_elsewhere() -> None:
    settings = Settings(redis_url="rediss://h.example:6380/0", redis_password=REDIS_SECRET)

    assert settings.redis_url_for_logs == "rediss://:***@h.example:6380/0"


def test_faust_credentials_do_not_show_the_password() -> None:
    credentials = faust_broker_credentials(sasl(protocol="SASL_PLAINTEXT"))

    assert KAFKA_SECRET not in repr(credentials)


# --- kafka-python -------------------------------------------------------------------------------


def test_sasl_plaintext_maps_to_kafka_python_sasl_options() -> None:
    assert kafka_client_options(sasl(protocol="SASL_PLAINTEXT", mechanism="PLAIN")) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "scorer",
        "sasl_plain_password": KAFKA_SECRET,
    }


def test_sasl_ssl_maps_to_sasl_and_tls_options(pki: Pki) -> None:
    assert kafka_client_options(sasl(kafka_ssl_cafile=pki.ca_cert)) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "scorer",
        "sasl_plain_password": KAFKA_SECRET,
        "ssl_cafile": str(pki.ca_cert),
    }


def test_mutual_tls_maps_to_the_three_files(pki: Pki) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_cert,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )

    assert kafka_client_options(settings) == {
        "security_protocol": "SSL",
        "ssl_cafile": str(pki.ca_cert),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    }


@pytest.mark.parametrize("client", [KafkaProducer, KafkaConsumer, KafkaAdminClient])
@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_kafka_python_clients_know_every_option(client: type, protocol: str, pki: Pki) -> None:
    # Constructing a client would connect; its DEFAULT_CONFIG is what it accepts
    # ("Unrecognized configs" otherwise).
    options = kafka_client_options(secured_by(protocol, pki))

    assert set(options) <= set(client.DEFAULT_CONFIG)  # type: ignore[attr-defined]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_python_accepts_each_sasl_mechanism_with_the_options(mechanism: str) -> None:
    options = kafka_client_options(sasl(protocol="SASL_PLAINTEXT", mechanism=mechanism))

    authenticator = get_sasl_mechanism(mechanism)(**options)

    assert authenticator is not None


def test_kafka_python_builds_a_verifying_tls_context_from_the_options(pki: Pki) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_cert,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )
    config = {**KafkaSSLTransport.DEFAULT_CONFIG, **kafka_client_options(settings)}
    del config["security_protocol"]

    context = KafkaSSLTransport._build_ssl_context(config)  # noqa: SLF001

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


# --- Faust / aiokafka ------------------------------------------------------------------------


def test_ssl_maps_to_faust_ssl_credentials_with_a_verifying_context(pki: Pki) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_cert,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )

    credentials = faust_broker_credentials(settings)

    assert isinstance(credentials, SSLCredentials)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.context.check_hostname


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_maps_to_faust_sasl_credentials(protocol: str, mechanism: str, pki: Pki) -> None:
    tls = {"kafka_ssl_cafile": pki.ca_cert} if protocol == "SASL_SSL" else {}

    credentials = faust_broker_credentials(sasl(protocol, mechanism, **tls))

    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == protocol
    assert credentials.mechanism.value == mechanism
    assert (credentials.username, credentials.password) == ("scorer", KAFKA_SECRET)
    assert (credentials.ssl_context is not None) == (protocol == "SASL_SSL")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
async def test_aiokafka_accepts_what_faust_makes_of_the_credentials(
    protocol: str, pki: Pki
) -> None:
    options = credentials_to_aiokafka_auth(faust_broker_credentials(secured_by(protocol, pki)))

    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9", **options)  # validates, no I/O

    assert client._security_protocol == protocol  # noqa: SLF001


# --- redis-py -----------------------------------------------------------------------------------


def test_redis_acl_user_and_tls_files_map_to_redis_py_options(pki: Pki) -> None:
    settings = Settings(
        redis_url="rediss://127.0.0.1:6380/0",
        redis_username="scorer",
        redis_password=REDIS_SECRET,
        redis_ssl_ca_certs=pki.ca_cert,
        redis_ssl_certfile=pki.client_cert,
        redis_ssl_keyfile=pki.client_key,
    )

    assert redis_client_options(settings) == {
        "username": "scorer",
        "password": REDIS_SECRET,
        "ssl_ca_certs": str(pki.ca_cert),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    }


async def test_redis_py_makes_a_tls_connection_object_from_the_options(pki: Pki) -> None:
    settings = Settings(
        redis_url=f"rediss://scorer:{REDIS_SECRET}@127.0.0.1:6380/0",
        redis_ssl_ca_certs=pki.ca_cert,
    )
    client = aioredis.Redis.from_url(settings.redis_url or "", **redis_client_options(settings))
    pool = client.connection_pool

    connection = pool.connection_class(**pool.connection_kwargs)  # not connected yet

    assert isinstance(connection, aioredis.SSLConnection)
    assert (connection.username, connection.password) == ("scorer", REDIS_SECRET)
    await client.aclose()


# --- worker subprocesses ----------------------------------------------------------------------


def test_a_worker_subprocess_gets_the_secrets_themselves(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    settings = sasl(
        kafka_ssl_cafile=pki.ca_cert,
        redis_url=f"rediss://:{REDIS_SECRET}@127.0.0.1:6380/0",
        redis_ssl_ca_certs=pki.ca_cert,
    )

    env = worker_environment(settings)
    for name, value in env.items():
        if name.startswith("STREAMCRM_"):
            monkeypatch.setenv(name, value)
    child = Settings.from_env()

    assert env["STREAMCRM_KAFKA_SASL_PASSWORD"] == KAFKA_SECRET
    assert env["STREAMCRM_REDIS_PASSWORD"] == REDIS_SECRET
    assert kafka_client_options(child) == kafka_client_options(settings)
    assert redis_client_options(child) == redis_client_options(settings)
    assert child.redis_url == settings.redis_url
