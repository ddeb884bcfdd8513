"""Service addresses and security protocols: pure helpers shared by the settings and the
connections, for URLs that may carry a password and the Kafka protocols that use TLS or SASL.

May import: nothing of streamcrm (it sits beside :mod:`streamcrm.errors` at the bottom).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

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
