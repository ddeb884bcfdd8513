"""Every error streamcrm raises on purpose, rooted in one class.

::

    StreamcrmError
    ├── InvalidEventError (also ValueError)   a message that cannot become an event
    │   ├── UndecodableEventError             not JSON / not UTF-8 / too large or too deep
    │   ├── EventValidationError              JSON, but breaks the event schema
    │   ├── WrongTopicError                   a valid event on a topic that does not carry its type
    │   ├── FutureEventError                  event time too far ahead of the wall clock
    │   ├── MessageKeyError                   no key, an over-long key, or not the customer's
    │   └── LateEventError                    older than its topic's newest event beyond lateness
    ├── ConfigurationError                    settings that cannot work together
    ├── ServiceError                          an embedded broker or redis-server failed to start
    ├── StoreUnavailableError                 the state store cannot be reached right now
    ├── StateBehindError                      Redis lost writes: rewind the partition and re-apply
    └── StartupCheckError                     a worker's start-up check of Kafka and Redis failed
        ├── ConnectionRejectedError           TLS or credentials refused: waiting will not help
        └── ServiceUnreachableError           no answer before STREAMCRM_STARTUP_WAIT_S ran out

The scoring core raises; the adapters (Faust agents, CLI) catch ``InvalidEventError``,
dead-letter the message with ``reason`` and carry on. ``StoreUnavailableError`` is the
opposite case: the message is fine, the store is not, so the pipeline waits and retries.
A ``StartupCheckError`` stops a worker before it starts consuming: the command line prints its
message as one line and exits with code 2.
"""

from __future__ import annotations


class StreamcrmError(Exception):
    """Root of every error raised on purpose by streamcrm."""


class InvalidEventError(StreamcrmError, ValueError):
    """A message that cannot become an event.

    ``reason`` is readable by a person; ``code`` is a short, stable slug for counting dead
    letters by cause (``too_large``, ``not_json``, ``schema:missing``, ...).
    """

    default_code = "invalid"

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code or self.default_code


class UndecodableEventError(InvalidEventError):
    """The bytes are not a JSON object (bad UTF-8, bad JSON, too large, too deeply nested)."""

    default_code = "not_json"


class EventValidationError(InvalidEventError):
    """The JSON breaks the event schema (missing field, out-of-range value, unknown type)."""

    default_code = "schema"


class WrongTopicError(InvalidEventError):
    """A valid event that arrived on a topic which does not carry its type."""

    default_code = "wrong_topic"


class FutureEventError(InvalidEventError):
    """An event whose event time lies further ahead of the wall clock than the allowed skew:
    applied, it would move the watermark into the future and close churn windows early."""

    default_code = "future_event_time"


class MessageKeyError(InvalidEventError):
    """A valid event whose message key is missing, too long, or not its ``customer_id``: the
    topics are partitioned by key, so it could land beside another customer's events, out of
    reach of the per-partition guard that applies each event once. Codes: ``missing_key``,
    ``key_too_long``, ``key_mismatch``."""

    default_code = "key_mismatch"


class LateEventError(InvalidEventError):
    """An event older than the newest of its topic (for its customer) by more than the
    allowed lateness: counted in the customer's state, not applied, and dead-lettered."""

    default_code = "late_event"


class ConfigurationError(StreamcrmError):
    """Settings that cannot work together."""


class ServiceError(StreamcrmError):
    """An embedded service (broker, redis-server) could not be started or reached."""


class StoreUnavailableError(StreamcrmError):
    """The state store cannot be reached; the operation is retried, never dead-lettered."""


class StateBehindError(StreamcrmError):
    """The store's offset mark for an input partition is behind what was applied (Redis
    restarted without its last writes, or behind Kafka's committed offset): the consumer must
    seek the partition to ``resume_at`` and apply the messages from there again."""

    def __init__(self, topic: str, partition: int, resume_at: int, reason: str) -> None:
        super().__init__(f"{topic}[{partition}]: {reason}; rewinding to offset {resume_at}")
        self.topic = topic
        self.partition = partition
        self.resume_at = resume_at


class StartupCheckError(StreamcrmError):
    """A worker's start-up check could not connect to Kafka or Redis
    (:func:`streamcrm.services.connections.check_connections`); the message says what to check."""


class ConnectionRejectedError(StartupCheckError):
    """A connection refused for good: a certificate that does not verify (wrong CA, another
    host name), a client certificate missing or not trusted, a wrong password. Retrying with
    the same settings cannot succeed, so the check stops at the first one."""


class ServiceUnreachableError(StartupCheckError):
    """Kafka or Redis did not answer (connection refused, timed out, closed): retried until
    ``STREAMCRM_STARTUP_WAIT_S`` ran out."""
