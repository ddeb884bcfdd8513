"""Secure connections from configuration: which settings fit together, what each client library
is given, and that no secret shows in a repr, a dump or a log-ready URL."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

import streamcrm.services.connections
from streamcrm.addresses import redact_url
from streamcrm.errors import (
    ConfigurationError,
    ConnectionRejectedError,
    ServiceUnreachableError,
    StartupCheckError,
)
from streamcrm.services.connections import (
    STARTUP_RETRY_DELAYS_S,
    TlsSide,
    bootstrap_addresses,
    check_connections,
    check_kafka,
    check_redis,
    describe_connections,
    describe_tls_failure,
    faust_broker_credentials,
    kafka_client_options,
    kafka_ssl_context,
    redis_client_options,
    redis_state_store,
)
from streamcrm.services.processes import worker_environment
from streamcrm.settings import Settings
from streamcrm.store import RedisClusterStateStore, RedisStateStore
from tests.tls import Pki, encrypted_key

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
        describe_connections(settings),
    ]


# --- which settings fit together -----------------------------------------------------------------


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


@pytest.mark.parametrize("service", ["kafka", "redis"])
def test_a_key_password_needs_a_client_certificate(service: str, pki: Pki) -> None:
    tls = (
        {"kafka_security_protocol": "SSL"}
        if service == "kafka"
        else {"redis_url": "rediss://127.0.0.1:6380/0"}
    )
    with pytest.raises(ConfigurationError, match=f"{service}_ssl_password needs"):
        Settings(**tls, **{f"{service}_ssl_password": "k"})  # type: ignore[arg-type]


def test_a_key_password_without_tls_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="kafka_ssl_password set, but"):
        Settings(kafka_ssl_password="k")  # type: ignore[arg-type]


def test_a_client_key_needs_its_certificate(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="kafka_ssl_keyfile needs kafka_ssl_certfile"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_keyfile=pki.client_key)
    with pytest.raises(ConfigurationError, match="redis_ssl_keyfile needs redis_ssl_certfile"):
        Settings(redis_url="rediss://127.0.0.1:6380/0", redis_ssl_keyfile=pki.client_key)


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:6379/0"])
def test_redis_tls_files_need_a_rediss_url(redis_url: str | None, pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="redis_ssl_ca_certs set, but .* not a rediss://"):
        Settings(redis_url=redis_url, redis_ssl_ca_certs=pki.ca_cert)


async def test_redis_cluster_setting_chooses_the_cluster_store_with_the_same_options(
    pki: Pki,
) -> None:
    """One flag: the URL names any node; ACL user, password and TLS files are passed as for a
    single Redis; the store knows the topics' partition count to find customers by id."""
    common = {
        "redis_url": "rediss://scorer:s3cret@127.0.0.1:7000/0",
        "redis_ssl_ca_certs": pki.ca_cert,
        "partitions": 12,
    }
    single = redis_state_store(Settings(**common))  # type: ignore[arg-type]
    clustered = redis_state_store(Settings(**common, redis_cluster=True))  # type: ignore[arg-type]
    try:
        assert type(single) is RedisStateStore and type(clustered) is RedisClusterStateStore
        assert single.partitions == clustered.partitions == 12
        options = clustered._redis.get_connection_kwargs()  # type: ignore[union-attr]
        assert (options["username"], options["password"]) == ("scorer", "s3cret")
        assert options["ssl_ca_certs"] == str(pki.ca_cert)
    finally:
        await single.close()
        await clustered.close()


def test_a_redis_cluster_needs_its_url_and_an_unencrypted_client_key(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="redis_cluster needs redis_url"):
        Settings(redis_cluster=True)
    with pytest.raises(ConfigurationError, match="redis_ssl_password is not supported"):
        Settings(
            redis_url="rediss://127.0.0.1:7000/0",
            redis_cluster=True,
            redis_ssl_certfile=pki.client_cert,
            redis_ssl_keyfile=pki.client_key,
            redis_ssl_password="k",  # type: ignore[arg-type]
        )


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


# --- redaction -----------------------------------------------------------------------------------


def test_no_secret_shows_in_repr_str_dumps_or_the_start_up_log_line(pki: Pki) -> None:
    secrets = [KAFKA_SECRET, REDIS_SECRET, "kafka-key-secret", "redis-key-secret", "privacy-secret"]
    settings = sasl(
        kafka_bootstrap="broker:9093",
        kafka_ssl_cafile=pki.ca_cert,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
        kafka_ssl_password=secrets[2],
        redis_url="rediss://127.0.0.1:6380/0",
        redis_username="scorer",
        redis_password=REDIS_SECRET,
        redis_ssl_certfile=pki.client_cert,
        redis_ssl_password=secrets[3],
        privacy_key=secrets[4],
    )

    for shown in every_form_of(settings):
        assert [secret for secret in secrets if secret in shown] == []
    assert describe_connections(settings) == (
        f"Kafka broker:9093 over SASL_SSL (SASL SCRAM-SHA-512 as scorer, CA {pki.ca_cert}, client"
        f" certificate {pki.client_cert}, encrypted key); Redis rediss://:***@127.0.0.1:6380/0"
        f" (user scorer, the system's CAs, client certificate {pki.client_cert}, encrypted key)"
    )


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


# --- kafka-python --------------------------------------------------------------------------------


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
        "ssl_password": "",  # not None: OpenSSL would ask for an encrypted key's on a terminal
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


# --- Faust / aiokafka ----------------------------------------------------------------------------


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


# --- redis-py ------------------------------------------------------------------------------------


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
        "ssl_password": "",
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


# --- worker subprocesses -------------------------------------------------------------------------


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


# --- password-protected client keys --------------------------------------------------------------

KEY_PASSWORD = "key-pa55word"


@pytest.fixture(scope="module")
def locked_key(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(
        encrypted_key(pki.client_key, KEY_PASSWORD, tmp_path_factory.mktemp("keys") / "c.key")
    )


def with_client_key(pki: Pki, key: str, password: str | None) -> Settings:
    return Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca_cert,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=key,  # type: ignore[arg-type]
        kafka_ssl_password=password,  # type: ignore[arg-type]
        redis_url="rediss://127.0.0.1:6380/0",
        redis_ssl_certfile=pki.client_cert,
        redis_ssl_keyfile=key,  # type: ignore[arg-type]
        redis_ssl_password=password,  # type: ignore[arg-type]
    )


def test_the_key_password_opens_an_encrypted_key_for_every_client(
    pki: Pki, locked_key: str
) -> None:
    settings = with_client_key(pki, locked_key, KEY_PASSWORD)
    options = kafka_client_options(settings)
    config = {**KafkaSSLTransport.DEFAULT_CONFIG, **options}
    del config["security_protocol"]

    kafka_ssl_context(settings)  # Faust's aiokafka clients
    KafkaSSLTransport._build_ssl_context(config)  # noqa: SLF001

    assert options["ssl_password"] == KEY_PASSWORD
    assert redis_client_options(settings)["ssl_password"] == KEY_PASSWORD


@pytest.mark.parametrize("password", [None, "wrong"])
def test_an_encrypted_key_without_its_password_is_a_configuration_error_not_a_prompt(
    pki: Pki, locked_key: str, password: str | None
) -> None:
    settings = with_client_key(pki, locked_key, password)

    with pytest.raises(ConfigurationError, match="STREAMCRM_KAFKA_SSL_PASSWORD"):
        kafka_ssl_context(settings)
    with pytest.raises(ConfigurationError, match="STREAMCRM_REDIS_SSL_PASSWORD"):
        check_redis(settings)  # refused while loading the key, before connecting


# --- what a TLS failure means --------------------------------------------------------------------


def kafka_side(*, certificate: bool = False, ca: bool = True) -> TlsSide:
    settings = Settings(kafka_security_protocol="SSL")
    side = TlsSide.kafka(settings)
    return TlsSide(
        side.service,
        side.address_setting,
        side.ca_setting,
        ca,
        side.certificate_settings,
        certificate,
    )


def verify_failure(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.reason, error.verify_code, error.verify_message = (
        "CERTIFICATE_VERIFY_FAILED",
        code,
        message,
    )
    return error


def alert(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] ...")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("error", "side", "kind", "says"),
    [
        (
            verify_failure(19, "self-signed certificate in certificate chain"),
            kafka_side(),
            ConnectionRejectedError,
            "check STREAMCRM_KAFKA_SSL_CAFILE: it must hold the CA",
        ),
        (
            verify_failure(20, "unable to get local issuer certificate"),
            kafka_side(ca=False),
            ConnectionRejectedError,
            "STREAMCRM_KAFKA_SSL_CAFILE is unset, so the system's CAs were used",
        ),
        (
            verify_failure(62, "Hostname mismatch, certificate is not valid for 'b.example'."),
            kafka_side(),
            ConnectionRejectedError,
            "its certificate is for another name: connect by a name the certificate holds"
            " (STREAMCRM_KAFKA_BOOTSTRAP)",
        ),
        (
            alert("TLSV13_ALERT_CERTIFICATE_REQUIRED"),
            kafka_side(),
            ConnectionRejectedError,
            "it wants a client certificate: set STREAMCRM_KAFKA_SSL_CERTFILE",
        ),
        (
            alert("TLSV1_ALERT_UNKNOWN_CA"),
            kafka_side(certificate=True),
            ConnectionRejectedError,
            "it does not accept the client certificate: check STREAMCRM_KAFKA_SSL_CERTFILE",
        ),
        (
            alert("TLSV1_ALERT_PROTOCOL_VERSION"),
            kafka_side(),
            ConnectionRejectedError,
            "check the Kafka TLS settings",
        ),
        (
            alert("WRONG_VERSION_NUMBER"),
            kafka_side(),
            ConnectionRejectedError,
            "is that a TLS port? check STREAMCRM_KAFKA_BOOTSTRAP",
        ),
        (
            ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
            kafka_side(),
            ServiceUnreachableError,
            "closed the connection during or right after the TLS handshake",
        ),
    ],
    ids=[
        "another-ca",
        "system-cas",
        "host-name",
        "no-client-certificate",
        "client-certificate-refused",
        "other-alert",
        "not-tls",
        "closed",
    ],
)
def test_a_tls_failure_says_what_to_check_and_whether_retrying_can_help(
    error: ssl.SSLError, side: TlsSide, kind: type[StartupCheckError], says: str
) -> None:
    described = describe_tls_failure(error, "b.example:9093", side)

    assert type(described) is kind
    assert says in str(described)
    assert "b.example:9093" in str(described)


def test_bootstrap_lists_are_split_into_hosts_and_ports() -> None:
    assert bootstrap_addresses(" a:1 ,b, [fe80::1]:3") == [("a", 1), ("b", 9092), ("fe80::1", 3)]
    with pytest.raises(ConfigurationError, match="not host:port"):
        bootstrap_addresses("a:notaport")


# --- the start-up check against small fake brokers -----------------------------------------------


@contextmanager
def fake_broker(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback server that hands each connection to ``answer``; yields its host:port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                with connection:
                    answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def answer_one_request(connection: socket.socket) -> bool:
    """Answer the next request with its correlation id and an empty body that begins with
    "no error"; False when the client closed the connection."""
    head = connection.recv(4)
    if len(head) < 4:
        return False
    request = connection.recv(struct.unpack(">i", head)[0])
    correlation_id = request[4:8]
    body = correlation_id + struct.pack(">hi", 0, 0)  # no error, nothing listed
    connection.sendall(struct.pack(">i", len(body)) + body)
    return True


def answers_requests(connection: socket.socket) -> None:
    while answer_one_request(connection):
        pass


def answers_api_versions_only(connection: socket.socket) -> None:
    """A listener that wants a SASL login: ApiVersions, then a hang-up at any other request."""
    answer_one_request(connection)
    connection.recv(100)


def hangs_up(connection: socket.socket) -> None:
    connection.recv(100)


def answers_with_a_tls_alert(connection: socket.socket) -> None:
    connection.recv(100)
    connection.sendall(bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]))


def answers_http(connection: socket.socket) -> None:
    connection.recv(100)
    connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def plaintext(bootstrap: str) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, redis_url="redis://127.0.0.1:1/0")


def test_a_broker_that_answers_passes_the_check() -> None:
    with fake_broker(answers_requests) as bootstrap:
        check_kafka(plaintext(bootstrap))


def test_the_first_broker_of_the_list_that_answers_is_enough() -> None:
    with fake_broker(answers_requests) as bootstrap:
        check_kafka(plaintext(f"127.0.0.1:{closed_port()},{bootstrap}"))


def test_a_plain_client_at_a_listener_that_wants_a_sasl_login_is_told_to_log_in() -> None:
    with (
        fake_broker(answers_api_versions_only) as bootstrap,
        pytest.raises(ConnectionRejectedError, match="a listener that wants a SASL login does"),
    ):
        check_kafka(plaintext(bootstrap))


def test_a_broker_that_hangs_up_is_unreachable_not_refused() -> None:
    with (
        fake_broker(hangs_up) as bootstrap,
        pytest.raises(ServiceUnreachableError, match="closed the connection without answering"),
    ):
        check_kafka(plaintext(bootstrap))


def test_a_plain_connection_to_a_tls_listener_is_refused_naming_the_protocol_setting() -> None:
    with (
        fake_broker(answers_with_a_tls_alert) as bootstrap,
        pytest.raises(ConnectionRejectedError, match="STREAMCRM_KAFKA_SECURITY_PROTOCOL to SSL"),
    ):
        check_kafka(plaintext(bootstrap))


def test_something_other_than_kafka_is_refused() -> None:
    with (
        fake_broker(answers_http) as bootstrap,
        pytest.raises(ConnectionRejectedError, match="not as a Kafka broker does"),
    ):
        check_kafka(plaintext(bootstrap))


def test_a_tls_broker_that_closes_after_the_handshake_suggests_the_client_certificate(
    pki: Pki,
) -> None:
    # What a TLS terminator whose TLS drops the alert does to a client without a certificate.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(pki.server_cert), str(pki.server_key))

    def handshakes_then_hangs_up(connection: socket.socket) -> None:
        server.wrap_socket(connection, server_side=True).close()

    with fake_broker(handshakes_then_hangs_up) as bootstrap:
        settings = Settings(
            kafka_bootstrap=bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca_cert
        )
        with pytest.raises(ServiceUnreachableError) as unreachable:
            check_kafka(settings)

    assert "closed the connection right after the TLS handshake" in str(unreachable.value)
    assert "set STREAMCRM_KAFKA_SSL_CERTFILE" in str(unreachable.value)


def answers(connection: socket.socket, body: bytes) -> None:
    """Read one request; answer it with ``body`` after its correlation id."""
    size = struct.unpack(">i", connection.recv(4))[0]
    request = connection.recv(size)
    answer = request[4:8] + body
    connection.sendall(struct.pack(">i", len(answer)) + answer)


def kafka_string(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def refuses_the_scram_login(connection: socket.socket) -> None:
    answers(connection, struct.pack(">hi", 0, 0))  # ApiVersions
    answers(connection, struct.pack(">hi", 0, 1) + kafka_string("SCRAM-SHA-512"))  # handshake
    said = "Authentication failed during authentication due to invalid credentials"
    answers(connection, struct.pack(">h", 58) + kafka_string(said) + struct.pack(">i", 0))


def offers_another_mechanism(connection: socket.socket) -> None:
    answers(connection, struct.pack(">hi", 0, 0))
    answers(connection, struct.pack(">hi", 33, 1) + kafka_string("SCRAM-SHA-512"))


def sasl_settings(bootstrap: str, mechanism: str = "SCRAM-SHA-512") -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="scorer",
        kafka_sasl_password=KAFKA_SECRET,
    )


def test_a_refused_sasl_login_is_a_refusal_naming_the_user_and_the_settings() -> None:
    with (
        fake_broker(refuses_the_scram_login) as bootstrap,
        pytest.raises(ConnectionRejectedError) as refused,
    ):
        check_kafka(sasl_settings(bootstrap))

    assert str(refused.value) == (
        f"Kafka at {bootstrap} refused SASL authentication as scorer with SCRAM-SHA-512"
        " (Authentication failed during authentication due to invalid credentials): check"
        " STREAMCRM_KAFKA_SASL_USERNAME and STREAMCRM_KAFKA_SASL_PASSWORD"
    )
    assert KAFKA_SECRET not in str(refused.value)


def test_a_sasl_mechanism_the_broker_does_not_offer_is_refused_naming_those_it_does() -> None:
    with (
        fake_broker(offers_another_mechanism) as bootstrap,
        pytest.raises(ConnectionRejectedError, match=r"it offers SCRAM-SHA-512\): check STREAMCRM"),
    ):
        check_kafka(sasl_settings(bootstrap, "SCRAM-SHA-256"))


def test_a_redis_that_does_not_listen_is_unreachable() -> None:
    settings = Settings(redis_url=f"redis://:{REDIS_SECRET}@127.0.0.1:{closed_port()}/0")

    with pytest.raises(ServiceUnreachableError, match="Redis unavailable at redis://:\\*\\*\\*@"):
        check_redis(settings, timeout_s=1.0)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- how long the start-up check waits -----------------------------------------------------------


class FakeTime:
    """A clock that moves only when slept on (and by ``attempt_s`` per attempt)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def attempts_that(
    outcomes: list[Exception | None], time_: FakeTime, calls: list[str], name: str
) -> Callable[..., None]:
    def attempt(settings: Settings, timeout_s: float) -> None:
        calls.append(name)
        time_.now += 0.1
        outcome = outcomes.pop(0) if outcomes else outcomes_default(name)
        if outcome is not None:
            raise outcome

    return attempt


def outcomes_default(name: str) -> Exception:
    return ServiceUnreachableError(f"{name} unavailable at somewhere: refused")


def run_check(
    monkeypatch: pytest.MonkeyPatch,
    kafka: list[Exception | None],
    redis: list[Exception | None],
    wait_s: float = 30.0,
) -> tuple[FakeTime, list[str]]:
    time_, calls = FakeTime(), []
    monkeypatch.setattr(
        streamcrm.services.connections, "check_kafka", attempts_that(kafka, time_, calls, "Kafka")
    )
    monkeypatch.setattr(
        streamcrm.services.connections, "check_redis", attempts_that(redis, time_, calls, "Redis")
    )
    settings = Settings(
        kafka_bootstrap="b:9092", redis_url="redis://r:6379/0", startup_wait_s=wait_s
    )
    check_connections(settings, sleep=time_.sleep, clock=lambda: time_.now)
    return time_, calls


def test_a_refusal_ends_the_check_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = ConnectionRejectedError("Kafka TLS handshake with b:9092 failed: ...")

    with pytest.raises(ConnectionRejectedError) as raised:
        run_check(monkeypatch, kafka=[refused], redis=[None])

    assert raised.value is refused


def test_an_unreachable_service_is_retried_until_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = outcomes_default("Kafka")

    time_, calls = run_check(monkeypatch, kafka=[down, down, None], redis=[None])

    assert calls == ["Kafka", "Kafka", "Kafka", "Redis"]
    assert time_.sleeps == list(STARTUP_RETRY_DELAYS_S[:2])


def test_an_unreachable_service_is_given_up_on_within_the_start_up_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ServiceUnreachableError) as raised:
        run_check(monkeypatch, kafka=[None], redis=[], wait_s=10.0)

    message = str(raised.value)
    assert message.startswith("Redis unavailable at somewhere: refused; gave up after ")
    assert message.endswith("(STREAMCRM_STARTUP_WAIT_S=10)")


def test_the_start_up_wait_bounds_the_time_slept(monkeypatch: pytest.MonkeyPatch) -> None:
    for wait_s in (1.0, 10.0, 30.0, 120.0):
        time_ = FakeTime()
        monkeypatch.setattr(
            streamcrm.services.connections, "check_kafka", attempts_that([], time_, [], "Kafka")
        )
        settings = Settings(kafka_bootstrap="b:9092", startup_wait_s=wait_s)

        with pytest.raises(ServiceUnreachableError):
            check_connections(settings, sleep=time_.sleep, clock=lambda t=time_: t.now)

        assert time_.now < wait_s
        assert len(time_.sleeps) >= min(3, int(wait_s))  # tried again, not given up at once
