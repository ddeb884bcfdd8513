"""Client options from settings: the one place that knows how each client library is told to
authenticate and encrypt.

::

    Settings ──► kafka_client_options()       kafka-python (admin, producers, consumers)
             ──► faust_broker_credentials()   faust.App(broker_credentials=...) → aiokafka
             ──► redis_client_options()       redis-py (Redis.from_url(url, **options))
             ──► check_connections()          a worker's start-up check, with the same TLS
                                              context and Redis options

Secrets stay :class:`~pydantic.SecretStr` in the settings and are unwrapped only here, in
the dictionaries handed straight to a client constructor: never log those dictionaries. For
logs, :func:`redact_url` hides the password of a URL and :func:`describe_connections` says
where a worker connects and how.

The start-up check turns each way a connection can fail into a refusal
(:class:`~streamcrm.errors.ConnectionRejectedError`: stop now, the message names the setting
to check) or an absence (:class:`~streamcrm.errors.ServiceUnreachableError`: try again until
``startup_wait_s`` runs out), so a misconfigured worker ends instead of retrying forever.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import chain, count, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from streamcrm.addresses import (
    SASL_PROTOCOLS,
    TLS_PROTOCOLS,
)
from streamcrm.errors import (
    ConfigurationError,
    ConnectionRejectedError,
    ServiceUnreachableError,
    StartupCheckError,
)
from streamcrm.services.sasl import sasl_login

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from streamcrm.settings import Settings
    from streamcrm.store import RedisStateStore


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for kafka-python's admin client, producers and consumers.

    PLAINTEXT gives ``{"security_protocol": "PLAINTEXT"}``, kafka-python's default, so the
    options can always be passed. TLS without ``kafka_ssl_cafile`` trusts the system's CAs.

    >>> from streamcrm.settings import Settings
    >>> kafka_client_options(Settings())
    {'security_protocol': 'PLAINTEXT'}
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in SASL_PROTOCOLS:
        assert settings.kafka_sasl_password is not None  # checked by Settings
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol in TLS_PROTOCOLS:
        for option, path in (
            ("ssl_cafile", settings.kafka_ssl_cafile),
            ("ssl_certfile", settings.kafka_ssl_certfile),
            ("ssl_keyfile", settings.kafka_ssl_keyfile),
        ):
            if path is not None:
                options[option] = str(path)
        if settings.kafka_ssl_certfile is not None:
            options["ssl_password"] = _key_password(settings.kafka_ssl_password)
    return options


def _key_password(password: SecretStr | None) -> str:
    """The password to load a client key with: ``""`` when none is configured, because with
    ``None`` OpenSSL asks for an encrypted key's password on the terminal and waits."""
    return password.get_secret_value() if password is not None else ""


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for Faust's aiokafka clients: verifies the broker against
    ``kafka_ssl_cafile`` (or the system's CAs) and its host name, and presents the client
    certificate when one is configured (mutual TLS)."""
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except ssl.SSLError as error:
        raise ConfigurationError(
            f"cannot read the Kafka CA bundle {cafile} ({error}): check STREAMCRM_KAFKA_SSL_CAFILE"
        ) from None
    if settings.kafka_ssl_certfile is not None:
        _load_client_certificate(
            context,
            "Kafka",
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            settings.kafka_ssl_password,
        )
    return context


def _load_client_certificate(
    context: ssl.SSLContext,
    service: str,
    certfile: Path,
    keyfile: Path | None,
    password: SecretStr | None,
) -> None:
    """Load a client certificate and key into ``context``, or say which settings to check."""
    try:
        context.load_cert_chain(
            str(certfile), str(keyfile) if keyfile else None, password=_key_password(password)
        )
    except ssl.SSLError as error:
        prefix = f"STREAMCRM_{service.upper()}_SSL"
        raise ConfigurationError(
            f"cannot load the {service} client certificate {certfile} and its key ({error}): "
            f"check {prefix}_CERTFILE, {prefix}_KEYFILE and {prefix}_PASSWORD (an encrypted "
            "key needs its password, the key must match the certificate)"
        ) from None


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """``broker_credentials`` for :class:`faust.App`: None for PLAINTEXT, else
    :class:`faust.SSLCredentials` (SSL) or :class:`faust.SASLCredentials` (SASL_PLAINTEXT,
    or SASL_SSL with a TLS context)."""
    import faust  # imported here: commands that only produce should not load Faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings) if protocol in TLS_PROTOCOLS else None
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # checked by Settings
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def redis_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis.from_url(settings.redis_url, **options)``:
    the ACL user and password, and for a ``rediss://`` URL the TLS files.

    A password written inside ``redis_url`` has already been moved to ``redis_password`` by
    :class:`~streamcrm.settings.Settings`, so it arrives here the same way.

    >>> from streamcrm.settings import Settings
    >>> redis_client_options(Settings(redis_url="redis://alice:s3cret@127.0.0.1:6379/0"))
    {'password': 's3cret'}
    """
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    for option, path in (
        ("ssl_ca_certs", settings.redis_ssl_ca_certs),
        ("ssl_certfile", settings.redis_ssl_certfile),
        ("ssl_keyfile", settings.redis_ssl_keyfile),
    ):
        if path is not None:
            options[option] = str(path)
    if settings.redis_ssl_certfile is not None and not settings.redis_cluster:
        # redis-py's cluster client takes no key password (the settings refuse one there).
        options["ssl_password"] = _key_password(settings.redis_ssl_password)
    return options


def redis_state_store(settings: Settings) -> RedisStateStore:
    """The workers' Redis store for ``settings`` (``redis_url`` set): on a Redis Cluster when
    ``redis_cluster`` is set, else on one Redis; the same layout and guarantees either way."""
    # Imported here, as redis is below: most commands never touch Redis.
    from streamcrm.store import RedisClusterStateStore, RedisStateStore

    if settings.redis_url is None:
        raise ValueError("redis_state_store needs redis_url; see streamcrm.cli.main")
    kind: type[RedisStateStore] = (
        RedisClusterStateStore if settings.redis_cluster else RedisStateStore
    )
    return kind.from_url(
        settings.redis_url,
        settings.redis_namespace,
        settings.customer_retention,
        privacy_key=settings.privacy_key_bytes,
        client_options=redis_client_options(settings),
        partitions=settings.partitions,
    )


# --- the worker's start-up check ---------------------------------------------------------------

STARTUP_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
"""Pauses between the start-up check's attempts at a Kafka or Redis that does not answer; the
last repeats until ``settings.startup_wait_s`` runs out (with the default 30 s: ten
attempts). A refusal is never retried."""

ATTEMPT_TIMEOUT_S = 5.0
"""The longest one attempt waits to connect, finish TLS and be answered (less when the start-up
wait is nearly over, never less than :data:`MIN_ATTEMPT_TIMEOUT_S`)."""

MIN_ATTEMPT_TIMEOUT_S = 1.0

TLS_ALERT_WAIT_S = 0.5
"""How long the check listens after a TLS handshake with Kafka before it sends its request.

In TLS 1.3 the client's side of the handshake is over before the server has looked at the
client's certificate; a server that refuses it (none sent, or one from a CA it does not trust)
sends an alert right after. A request sent into that moment makes the server reset the
connection, and the alert that says why is lost; listening first lets the check name it. A
broker says nothing before it is asked, so an accepted connection costs this wait once."""

HOST_NAME_MISMATCH = frozenset({62, 64})
"""OpenSSL's ``X509_V_ERR_HOSTNAME_MISMATCH`` and ``X509_V_ERR_IP_ADDRESS_MISMATCH``."""

CLIENT_CERTIFICATE_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)
"""Alerts (ends of OpenSSL reason codes) a server sends when it refuses the client's
certificate, or the lack of one."""

_CORRELATION_ID = 0x5C0DE  # any int32: the answer must echo it
_CLIENT_ID = b"streamcrm-startup-check"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsSide:
    """What a TLS failure message names: the service and the settings to check."""

    service: str
    address_setting: str
    ca_setting: str
    ca_given: bool
    certificate_settings: str
    certificate_given: bool

    @classmethod
    def kafka(cls, settings: Settings) -> TlsSide:
        return cls(
            "Kafka",
            "STREAMCRM_KAFKA_BOOTSTRAP",
            "STREAMCRM_KAFKA_SSL_CAFILE",
            settings.kafka_ssl_cafile is not None,
            "STREAMCRM_KAFKA_SSL_CERTFILE and STREAMCRM_KAFKA_SSL_KEYFILE",
            settings.kafka_ssl_certfile is not None,
        )

    @classmethod
    def redis(cls, settings: Settings) -> TlsSide:
        return cls(
            "Redis",
            "STREAMCRM_REDIS_URL",
            "STREAMCRM_REDIS_SSL_CA_CERTS",
            settings.redis_ssl_ca_certs is not None,
            "STREAMCRM_REDIS_SSL_CERTFILE and STREAMCRM_REDIS_SSL_KEYFILE",
            settings.redis_ssl_certfile is not None,
        )

    def closed_early(self, address: str, when: str) -> ServiceUnreachableError:
        """A server that closed the connection ``when`` (``"right after the TLS handshake"``):
        not proof of a refusal (a load balancer with no server behind it does the same), so
        it is retried, but the likeliest cause is named."""
        if self.certificate_given:
            cause = "when it does not trust the client certificate: check " + (
                self.certificate_settings
            )
        else:
            cause = f"when none is sent: set {self.certificate_settings}"
        return ServiceUnreachableError(
            f"{self.service} unavailable at {address}: it closed the connection {when} (a server"
            f" that requires a client certificate does this {cause})"
        )


def describe_tls_failure(error: ssl.SSLError, address: str, side: TlsSide) -> StartupCheckError:
    """What a TLS error means and which setting to check: a :class:`ConnectionRejectedError`
    for a refusal, a :class:`ServiceUnreachableError` for a connection merely closed.

    >>> side = TlsSide("Kafka", "STREAMCRM_KAFKA_BOOTSTRAP", "STREAMCRM_KAFKA_SSL_CAFILE", True,
    ...                "STREAMCRM_KAFKA_SSL_CERTFILE", False)
    >>> alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert ...")
    >>> alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    >>> refusal = describe_tls_failure(alert, "broker:9093", side)
    >>> type(refusal).__name__
    'ConnectionRejectedError'
    >>> print(str(refusal).replace(" (", "\\n("))
    Kafka at broker:9093 refused the TLS connection: tlsv13 alert certificate required
    (it wants a client certificate: set STREAMCRM_KAFKA_SSL_CERTFILE)
    """
    service = side.service
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = f"certificate verify failed: {error.verify_message}"
        if error.verify_code in HOST_NAME_MISMATCH:
            advice = (
                f"its certificate is for another name: connect by a name the certificate holds"
                f" ({side.address_setting}) or have it reissued for this one"
            )
        elif side.ca_given:
            advice = f"check {side.ca_setting}: it must hold the CA that signed the certificate"
        else:
            advice = (
                f"{side.ca_setting} is unset, so the system's CAs were used: set it to the CA"
                " that signed the certificate"
            )
        return ConnectionRejectedError(
            f"{service} TLS handshake with {address} failed: {reason} ({advice})"
        )
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return side.closed_early(address, "during or right after the TLS handshake")
    reason = error.reason or ""
    if "ALERT" in reason:
        said = reason.lower().replace("_", " ")
        if reason.endswith(CLIENT_CERTIFICATE_ALERTS) and not side.certificate_given:
            advice = f"it wants a client certificate: set {side.certificate_settings}"
        elif reason.endswith(CLIENT_CERTIFICATE_ALERTS):
            advice = (
                f"it does not accept the client certificate: check {side.certificate_settings}"
                " (signed by a CA the server trusts, not expired)"
            )
        else:
            advice = f"check the {service} TLS settings and that the server speaks TLS 1.2 or 1.3"
        return ConnectionRejectedError(
            f"{service} at {address} refused the TLS connection: {said} ({advice})"
        )
    return ConnectionRejectedError(
        f"{service} TLS handshake with {address} failed: {error} (is that a TLS port? check"
        f" {side.address_setting})"
    )


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of a bootstrap list; Kafka's port 9092 where none is given.

    >>> bootstrap_addresses("broker-1:9093, [::1]:9094,broker-2")
    [('broker-1', 9093), ('::1', 9094), ('broker-2', 9092)]
    """
    addresses = []
    for entry in filter(None, (part.strip() for part in bootstrap.split(","))):
        try:
            parts = urlsplit(f"//{entry}")
            host, port = parts.hostname, parts.port or 9092
        except ValueError:
            host = None
        if not host:
            raise ConfigurationError(f"STREAMCRM_KAFKA_BOOTSTRAP: not host:port: {entry!r}")
        addresses.append((host, port))
    return addresses


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _request(api_key: int, version: int, body: bytes = b"") -> bytes:
    """A Kafka request with a version-1 header (no tagged fields) and ``body``."""
    header = struct.pack(">hhih", api_key, version, _CORRELATION_ID, len(_CLIENT_ID))
    return struct.pack(">i", len(header) + len(_CLIENT_ID) + len(body)) + header + _CLIENT_ID + body


API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, METADATA = 18, 17, 36, 3
"""Kafka's API keys of the requests the check sends: ApiVersions (version 0: every broker
answers it, before any SASL), SaslHandshake (version 1), SaslAuthenticate (version 0) and
Metadata (version 1, for no topic: what a listener that wants a SASL login refuses)."""


def _receive(sock: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only when the server closed the connection."""
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def _answer_body(sock: socket.socket, header: bytes, address: str, what: str) -> bytes:
    """The rest of an answer whose first 8 bytes (size, correlation id) are ``header``."""
    size = struct.unpack(">i", header[:4])[0]
    body = _receive(sock, size - 4)
    if len(body) < size - 4:
        raise ServiceUnreachableError(
            f"Kafka unavailable at {address}: it closed the connection in the middle of {what}"
        )
    return body


def _answer(sock: socket.socket, address: str, what: str) -> bytes:
    """The body of the broker's answer to the request just sent (``what``, for messages)."""
    header = _receive(sock, 8)
    if len(header) < 8:
        raise ServiceUnreachableError(
            f"Kafka unavailable at {address}: it closed the connection before answering {what}"
        )
    return _answer_body(sock, header, address, what)


def _ask_api_versions(
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    side: TlsSide,
    timeout_s: float,
    settings: Settings,
) -> None:
    """Connect to one broker (over TLS with ``context``), have it answer ApiVersions and,
    with a SASL protocol, log in (:func:`_log_in`); without one, check that it answers
    without a login (:func:`_ask_metadata`)."""
    address = _address(host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as error:
        raise ServiceUnreachableError(f"Kafka unavailable at {address}: {error}") from None
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(TLS_ALERT_WAIT_S)
            try:
                early = sock.recv(1)
            except TimeoutError:
                early = None  # silence: the server is waiting for a request, as it should
            if early == b"":
                raise side.closed_early(address, "right after the TLS handshake")
            sock.settimeout(timeout_s)
        sock.sendall(_request(API_VERSIONS, 0))
        header = _receive(sock, 8)
        _check_api_versions_header(header, address, tls=context is not None)
        _answer_body(sock, header, address, "ApiVersions")
        if settings.kafka_security_protocol in SASL_PROTOCOLS:
            _log_in(sock, settings, address)
        else:
            _ask_metadata(sock, settings, address)
    except ssl.SSLError as error:
        raise describe_tls_failure(error, address, side) from None
    except OSError as error:
        raise ServiceUnreachableError(f"Kafka unavailable at {address}: {error}") from None
    finally:
        sock.close()


def _ask_metadata(sock: socket.socket, settings: Settings, address: str) -> None:
    """Ask for the metadata of no topic without a login: a listener that wants a SASL login
    answers ApiVersions (clients ask it before the SASL handshake) but closes the connection
    at any other request, which the clients only report as a broker they cannot bootstrap
    from."""
    sock.sendall(_request(METADATA, 1, struct.pack(">i", 0)))
    header = _receive(sock, 8)
    if len(header) < 8:
        secure = "SASL_SSL" if settings.kafka_security_protocol == "SSL" else "SASL_PLAINTEXT"
        raise ConnectionRejectedError(
            f"Kafka at {address} answered ApiVersions but closed the connection at the first"
            " other request, as a listener that wants a SASL login does: set"
            f" STREAMCRM_KAFKA_SECURITY_PROTOCOL={secure} with STREAMCRM_KAFKA_SASL_MECHANISM,"
            " STREAMCRM_KAFKA_SASL_USERNAME and STREAMCRM_KAFKA_SASL_PASSWORD (or point"
            f" STREAMCRM_KAFKA_BOOTSTRAP at a {settings.kafka_security_protocol} listener)"
        )
    _answer_body(sock, header, address, "Metadata")


def _check_api_versions_header(header: bytes, address: str, tls: bool) -> None:
    if header[:1] in (b"\x15", b"\x16") and header[1:2] == b"\x03":  # a TLS alert, handshake
        raise ConnectionRejectedError(
            f"Kafka at {address} answered in TLS: set STREAMCRM_KAFKA_SECURITY_PROTOCOL to SSL"
            " (or SASL_SSL)"
        )
    if len(header) < 8:
        hint = "" if tls else " (a TLS listener does this to a plain connection)"
        raise ServiceUnreachableError(
            f"Kafka unavailable at {address}: it closed the connection without answering{hint}"
        )
    if struct.unpack(">i", header[4:])[0] != _CORRELATION_ID:
        raise ConnectionRejectedError(
            f"{address} answered, but not as a Kafka broker does: check STREAMCRM_KAFKA_BOOTSTRAP"
        )


ILLEGAL_SASL_STATE = 34
"""The SaslHandshake error of a listener that takes no SASL login (PLAINTEXT, SSL)."""


def _string(text: str) -> bytes:
    return struct.pack(">h", len(text.encode())) + text.encode()


def _read_string(body: bytes, at: int) -> tuple[str | None, int]:
    """The nullable int16-length string at ``at`` in ``body``, and where the next field is."""
    (length,) = struct.unpack_from(">h", body, at)
    if length < 0:
        return None, at + 2
    return body[at + 2 : at + 2 + length].decode(errors="replace"), at + 2 + length


def _log_in(sock: socket.socket, settings: Settings, address: str) -> None:
    """Log in with the configured SASL mechanism, user and password, as the worker's
    clients will (:mod:`streamcrm.services.sasl`): a mechanism the broker does not offer, or
    credentials it refuses, raise :class:`ConnectionRejectedError` naming the settings."""
    mechanism, username = settings.kafka_sasl_mechanism, settings.kafka_sasl_username
    assert mechanism and username and settings.kafka_sasl_password  # checked by Settings
    sock.sendall(_request(SASL_HANDSHAKE, 1, _string(mechanism)))
    body = _answer(sock, address, "the SASL handshake")
    (error_code,) = struct.unpack_from(">h", body)
    if error_code == ILLEGAL_SASL_STATE:
        raise ConnectionRejectedError(
            f"Kafka at {address} takes no SASL login on that listener: check"
            " STREAMCRM_KAFKA_SECURITY_PROTOCOL (PLAINTEXT or SSL there?) and"
            " STREAMCRM_KAFKA_BOOTSTRAP"
        )
    if error_code != 0:
        (count,) = struct.unpack_from(">i", body, 2)
        offered, at = [], 6
        for _ in range(max(count, 0)):
            name, at = _read_string(body, at)
            offered.append(name or "")
        raise ConnectionRejectedError(
            f"Kafka at {address} does not offer SASL mechanism {mechanism} (error"
            f" {error_code}; it offers {', '.join(offered) or 'none'}): check"
            " STREAMCRM_KAFKA_SASL_MECHANISM and STREAMCRM_KAFKA_SECURITY_PROTOCOL"
        )
    login = sasl_login(mechanism, username, settings.kafka_sasl_password.get_secret_value())
    message: bytes | None = login.first()
    while message is not None:
        sock.sendall(_request(SASL_AUTHENTICATE, 0, struct.pack(">i", len(message)) + message))
        body = _answer(sock, address, "the SASL authentication")
        (error_code,) = struct.unpack_from(">h", body)
        said, at = _read_string(body, 2)
        if error_code != 0:
            raise ConnectionRejectedError(
                f"Kafka at {address} refused SASL authentication as {username} with"
                f" {mechanism} ({said or f'error {error_code}'}): check"
                " STREAMCRM_KAFKA_SASL_USERNAME and STREAMCRM_KAFKA_SASL_PASSWORD"
            )
        (length,) = struct.unpack_from(">i", body, at)
        try:
            message = login.answer(body[at + 4 : at + 4 + max(length, 0)])
        except ValueError as error:
            raise ConnectionRejectedError(
                f"Kafka at {address}: SASL {mechanism} login as {username} failed ({error})"
            ) from None


def check_kafka(settings: Settings, timeout_s: float = ATTEMPT_TIMEOUT_S) -> None:
    """One attempt at Kafka: the bootstrap brokers in turn, until one completes the configured
    TLS, answers a Kafka request and, with a SASL protocol, accepts the configured login.

    Raises :class:`ConnectionRejectedError` at the first refusal, and
    :class:`ServiceUnreachableError` when no broker answered.
    """
    assert settings.kafka_bootstrap is not None
    tls = settings.kafka_security_protocol in TLS_PROTOCOLS
    context = kafka_ssl_context(settings) if tls else None
    side = TlsSide.kafka(settings)
    unanswered = []
    for host, port in bootstrap_addresses(settings.kafka_bootstrap):
        try:
            _ask_api_versions(host, port, context, side, timeout_s, settings)
            return
        except ServiceUnreachableError as error:
            unanswered.append(str(error).removeprefix("Kafka unavailable at "))
    raise ServiceUnreachableError(f"Kafka unavailable at {'; '.join(unanswered)}")


def _ssl_error_in(error: BaseException) -> ssl.SSLError | None:
    """The :class:`ssl.SSLError` behind a client library's connection error, if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _refuse_the_v1_layout(client: Any, settings: Settings) -> None:
    """Refuse a namespace still in the v1 key layout: a worker would start from empty state
    while Kafka's committed offsets skip the history that built the old one. (A Redis
    Cluster never held v1 data: its scripts were refused there.)"""
    from streamcrm.store import v1_offsets_key

    old = v1_offsets_key(settings.redis_namespace)
    if not settings.redis_cluster and client.exists(old):
        raise ConfigurationError(
            f"Redis holds namespace {settings.redis_namespace!r} in streamcrm's v1 key layout "
            f"({old} exists), which this version does not read: rebuild the state by replay "
            "into a new namespace (docs/operations.md, 'Moving to the v2 key layout')"
        )


def check_redis(settings: Settings, timeout_s: float = ATTEMPT_TIMEOUT_S) -> None:
    """One attempt at Redis: connect as the worker does (AUTH, TLS) and ``PING``.

    Raises :class:`ConnectionRejectedError` for credentials or a certificate refused, and
    :class:`ServiceUnreachableError` when Redis did not answer.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    assert settings.redis_url is not None
    shown = settings.redis_url_for_logs
    if settings.redis_ssl_certfile is not None:  # a clear error before redis-py's
        _load_client_certificate(
            ssl.create_default_context(),
            "Redis",
            settings.redis_ssl_certfile,
            settings.redis_ssl_keyfile,
            settings.redis_ssl_password,
        )
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # the start-up check does its own retrying
        **redis_client_options(settings),
    )
    try:
        client.ping()
        _refuse_the_v1_layout(client, settings)
    except redis.exceptions.AuthenticationError as error:
        raise ConnectionRejectedError(
            f"Redis at {shown} refused the credentials ({error}): check "
            "STREAMCRM_REDIS_USERNAME and STREAMCRM_REDIS_PASSWORD (or the user and password in "
            "STREAMCRM_REDIS_URL)"
        ) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        tls_error = _ssl_error_in(error)
        if tls_error is not None:
            raise describe_tls_failure(tls_error, str(shown), TlsSide.redis(settings)) from None
        raise ServiceUnreachableError(f"Redis unavailable at {shown}: {error}") from None
    except redis.exceptions.ResponseError as error:  # NOPERM and the like
        raise ConnectionRejectedError(
            f"Redis at {shown} refused PING ({error}): check the permissions of the user"
            " STREAMCRM_REDIS_USERNAME names"
        ) from None
    finally:
        client.close()


def describe_connections(settings: Settings) -> str:
    """Where a worker connects and how, without a secret: for the start-up log line.

    >>> from streamcrm.settings import Settings
    >>> print(describe_connections(Settings(
    ...     kafka_bootstrap="broker:9093", redis_url="redis://scorer:pw@redis:6379/0")))
    Kafka broker:9093 over PLAINTEXT; Redis redis://scorer:***@redis:6379/0
    """
    kafka = f"Kafka {settings.kafka_bootstrap} over {settings.kafka_security_protocol}"
    kafka_details = []
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        kafka_details.append(
            f"SASL {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username}"
        )
    if settings.kafka_security_protocol in TLS_PROTOCOLS:
        kafka_details += _tls_details(
            settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_password
        )
    redis_details = []
    if settings.redis_username is not None:
        redis_details.append(f"user {settings.redis_username}")
    if (settings.redis_url or "").startswith("rediss://"):
        redis_details += _tls_details(
            settings.redis_ssl_ca_certs, settings.redis_ssl_certfile, settings.redis_ssl_password
        )
    redis = f"Redis {settings.redis_url_for_logs}"
    return "; ".join(
        f"{what} ({', '.join(details)})" if details else what
        for what, details in ((kafka, kafka_details), (redis, redis_details))
    )


def _tls_details(
    ca: Path | None, certificate: Path | None, password: SecretStr | None
) -> list[str]:
    details = [f"CA {ca}" if ca else "the system's CAs"]
    if certificate is not None:
        details.append(f"client certificate {certificate}")
    if password is not None:
        details.append("encrypted key")
    return details


def check_connections(
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """A worker's start-up check: Kafka, then Redis, connected to as the worker will be.

    A refusal (a certificate that does not verify or names another host, a client certificate
    missing or not trusted, a Kafka SASL login or a Redis password refused) raises
    :class:`ConnectionRejectedError` at once. A service that does not answer is tried again
    after each of
    :data:`STARTUP_RETRY_DELAYS_S` until ``settings.startup_wait_s`` has passed, then
    :class:`ServiceUnreachableError` is raised. Either way the message names what to check.
    """
    log.info("start-up check: %s", describe_connections(settings))
    wait = _StartupWait(clock(), settings.startup_wait_s, sleep, clock)
    if settings.kafka_bootstrap is not None:
        wait.retry_until_answered(partial(check_kafka, settings))
    if settings.redis_url is not None:
        wait.retry_until_answered(partial(check_redis, settings))


@dataclass(frozen=True)
class _StartupWait:
    """The one start-up wait that Kafka's and then Redis's attempts share."""

    started: float
    wait_s: float
    sleep: Callable[[float], None]
    clock: Callable[[], float]

    def retry_until_answered(self, attempt: Callable[[float], None]) -> None:
        """Call ``attempt(timeout_s)`` until it returns; retry only ServiceUnreachableError."""
        deadline = self.started + self.wait_s
        delays = chain(STARTUP_RETRY_DELAYS_S, repeat(STARTUP_RETRY_DELAYS_S[-1]))
        for attempts in count(1):
            remaining = deadline - self.clock()
            try:
                attempt(min(ATTEMPT_TIMEOUT_S, max(remaining, MIN_ATTEMPT_TIMEOUT_S)))
                return
            except ServiceUnreachableError as error:
                delay = next(delays)
                if self.clock() + delay >= deadline:
                    elapsed = self.clock() - self.started
                    raise ServiceUnreachableError(
                        f"{error}; gave up after {attempts} attempt{'s' * (attempts > 1)} in"
                        f" {elapsed:.0f} s (STREAMCRM_STARTUP_WAIT_S={self.wait_s:g})"
                    ) from None
                log.warning("%s; trying again in %g s", error, delay)
                self.sleep(delay)
