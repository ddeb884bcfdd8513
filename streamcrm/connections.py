"""Client options from settings: the one place that knows how each client library is told to
authenticate and encrypt.

::

    Settings ──► kafka_client_options()       kafka-python (admin, producers, consumers)
             ──► faust_broker_credentials()   faust.App(broker_credentials=...) → aiokafka
             ──► redis_client_options()       redis-py (Redis.from_url(url, **options))

Secrets stay :class:`~pydantic.SecretStr` in the settings and are unwrapped only here, in
the dictionaries handed straight to a client constructor: never log those dictionaries. For
logs, :func:`redact_url` hides the password of a URL.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from streamcrm.settings import Settings

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
REDACTED = "***"


def split_url_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password, and the password (URL-decoded) if it had one.

    >>> split_url_password("rediss://alice:s%40cret@redis.example:6380/0")
    ('rediss://alice@redis.example:6380/0', 's@cret')
    >>> split_url_password("redis://:s3cret@127.0.0.1:6379/0")
    ('redis://127.0.0.1:6379/0', 's3cret')
    >>> split_url_password("redis://127.0.0.1:6379/0")
    ('redis://127.0.0.1:6379/0', None)
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    username = userinfo.partition(":")[0]  # still URL-quoted, as it was written
    netloc = f"{username}@{host}" if username else host
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def url_username(url: str) -> str | None:
    """The (URL-decoded) user name inside ``url``, if any.

    >>> url_username("rediss://alice@redis.example:6380/0")
    'alice'
    >>> url_username("redis://127.0.0.1:6379/0") is None
    True
    """
    username = urlsplit(url).username
    return unquote(username) if username else None


def redact_url(url: str, *, password_configured: bool = False) -> str:
    """``url`` fit for a log line: its password, if any, shown as ``***``.

    ``password_configured`` marks a password given elsewhere (``STREAMCRM_REDIS_PASSWORD``),
    so the log still says that one is used.

    >>> redact_url("redis://alice:s3cret@redis.example:6379/0")
    'redis://alice:***@redis.example:6379/0'
    >>> redact_url("rediss://redis.example:6380/0", password_configured=True)
    'rediss://:***@redis.example:6380/0'
    >>> redact_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    """
    without, password = split_url_password(url)
    if password is None and not password_configured:
        return url
    parts = urlsplit(without)
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}:{REDACTED}@{host}"))


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
    return options


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for Faust's aiokafka clients: verifies the broker against
    ``kafka_ssl_cafile`` (or the system's CAs) and its host name, and presents the client
    certificate when one is configured (mutual TLS)."""
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if settings.kafka_ssl_certfile is not None:
        keyfile = str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None
        context.load_cert_chain(str(settings.kafka_ssl_certfile), keyfile)
    return context


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
    return options
