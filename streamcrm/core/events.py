"""Wire models of the events streamcrm consumes and the records it produces.

Every input event carries ``event_id`` (unique; used for idempotency), ``customer_id``
(the Kafka key), ``occurred_at`` (event time: an RFC 3339 string with an offset) and
``schema_version``.
The ``type`` field discriminates the union:

==============  ===============  =====================================================
topic           ``type``         meaning
==============  ===============  =====================================================
crm.purchases   ``purchase``     an order was placed
crm.purchases   ``refund``       (part of) an order was refunded; value goes down
crm.feedback    ``feedback``     a rating on a declared scale (CSAT 1-5, NPS 0-10)
crm.support     ``support``      a ticket was opened / answered / resolved / escalated
crm.support     ``cancellation`` the customer closed the account (explicit churn)
crm.privacy     ``erasure``      the customer asked to be forgotten (GDPR / CCPA)
crm.privacy     ``consent``      the customer consented again after an erasure
==============  ===============  =====================================================

Messages are validated once, at the edge, by :func:`decode_event`.

>>> event = decode_event(
...     b'{"type": "feedback", "event_id": "e1", "customer_id": "c1",'
...     b' "occurred_at": "2026-01-05T10:00:00Z", "rating": 5, "scale": "csat",'
...     b' "category": "service"}',
...     topic="crm.feedback",
... )
>>> event.normalised_rating
1.0
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

from streamcrm.errors import (
    EventValidationError,
    FutureEventError,
    MessageKeyError,
    UndecodableEventError,
    WrongTopicError,
)

SCHEMA_VERSION: Final = 1
MAX_MESSAGE_BYTES = 64 * 1024

EARLIEST_EVENT_YEAR: Final = 1900
LATEST_EVENT_YEAR: Final = 2999
"""Event times are dated (in their own offset) within these years: a closed range that any
offset keeps representable in UTC, and that a plain pattern in the JSON Schema can state."""

_TIME_OF_DAY = (
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt]"
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
)
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
EVENT_TIME_PATTERN: Final = rf"^(?:19|2[0-9])[0-9]{{2}}{_TIME_OF_DAY}{_OFFSET}$"
"""What the published schemas allow for ``occurred_at`` besides ``"format": "date-time"``: an
RFC 3339 date-time (``T`` separator, seconds, ``Z`` or a ``±HH:MM`` offset) dated in the years
1900-2999. ASCII digits and the anchors only (no ``\\d``, no look-around), so every JSON Schema
validator reads it alike."""

# The decoder checks the shape with any year and an optional offset, so that a naive time and
# a year outside the range each get their own reason (timezone_aware, datetime_out_of_range).
_RFC3339_SHAPE = re.compile(rf"[0-9]{{4}}{_TIME_OF_DAY}{_OFFSET}?")


def _rfc3339_text(value: object) -> object:
    """Let a datetime (built in Python) or an RFC 3339 string through; refuse anything else,
    such as a number of seconds, which pydantic would otherwise read as a Unix time."""
    if isinstance(value, str):
        if _RFC3339_SHAPE.fullmatch(value) is None:
            raise PydanticKnownError(
                "datetime_parsing",
                {"error": "not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fraction] then Z or ±HH:MM)"},
            )
        return value
    if isinstance(value, datetime):
        return value
    raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")


def _within_event_years(moment: datetime) -> datetime:
    """Refuse a time dated outside the accepted years; return it normalised to UTC."""
    if not EARLIEST_EVENT_YEAR <= moment.year <= LATEST_EVENT_YEAR:
        raise PydanticCustomError(
            "datetime_out_of_range",
            "Input should be dated in the years {earliest} to {latest}, not {year}",
            {"earliest": EARLIEST_EVENT_YEAR, "latest": LATEST_EVENT_YEAR, "year": moment.year},
        )
    return moment.astimezone(UTC)


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(_within_event_years),
    Field(json_schema_extra={"pattern": EVENT_TIME_PATTERN}),
]
"""A timezone-aware instant, normalised to UTC so that equal instants compare and print alike.
On the wire: a string matching ``EVENT_TIME_PATTERN`` (never a number)."""


def _json_integer(value: object) -> object:
    """Read an integral float as the integer it is: JSON Schema's ``integer`` is any number
    with no fractional part, so ``3.0`` is ``3``; ``3.5``, ``"3"`` and ``true`` stay refused.

    >>> _json_integer(3.0), _json_integer(3.5), _json_integer(True)
    (3, 3.5, True)
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _not_a_boolean(value: object) -> object:
    """Refuse ``true``/``false`` where a number is expected (``True == 1`` in Python)."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_a_number", "Input should be a number, not a boolean")
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
Money = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False, strict=True)]
"""A JSON number (an integer or not), never a string or a boolean."""
Count = Annotated[int, BeforeValidator(_json_integer), Field(strict=True)]
"""A JSON integer (``3`` or ``3.0``), never a fraction, a string or a boolean."""
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Channel = Literal["web", "mobile", "store", "phone", "email", "chat"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _type_required(schema: dict[str, Any]) -> None:
    """Publish ``type`` as required: it has a default for Python callers, but the decoder
    reads the union by it, so a message without it is refused."""
    schema["required"] = ["type", *schema.get("required", [])]


class _Event(_Record):
    model_config = ConfigDict(json_schema_extra=_type_required)

    event_id: Identifier
    customer_id: Identifier
    occurred_at: UtcDatetime
    schema_version: Annotated[Literal[1], BeforeValidator(_not_a_boolean)] = SCHEMA_VERSION


BaseEvent = _Event
"""The fields every input event carries (``event_id``, ``customer_id``, ``occurred_at``,
``schema_version``), for code that handles any event."""


class PurchaseEvent(_Event):
    """An order was placed: ``amount`` is the order total, ``cost`` its cost when known."""

    type: Literal["purchase"] = "purchase"
    order_id: Identifier
    amount: Money
    currency: CurrencyCode = "USD"
    items: Count = Field(ge=1, le=10_000)
    channel: Channel
    cost: Money | None = None
    acquisition_cost: Money | None = Field(
        default=None,
        description="what acquiring this customer cost (marketing), when this order knows it",
    )


class RefundEvent(_Event):
    """(Part of) an order was refunded or cancelled: ``amount`` comes off monetary value."""

    type: Literal["refund"] = "refund"
    order_id: Identifier
    amount: Money
    currency: CurrencyCode = "USD"
    reason: str | None = Field(default=None, max_length=500)


RATING_SCALES: Mapping[str, tuple[int, int]] = {"csat": (1, 5), "nps": (0, 10)}


def _feedback_schema(schema: dict[str, Any]) -> None:
    """Publish each scale's rating bounds (the decoder checks them in ``_rating_on_its_scale``)."""
    _type_required(schema)
    schema["allOf"] = [
        {
            "if": {"properties": {"scale": {"const": scale}}, "required": ["scale"]},
            "then": {"properties": {"rating": {"minimum": low, "maximum": high}}},
        }
        for scale, (low, high) in RATING_SCALES.items()
    ]


class FeedbackEvent(_Event):
    """A rating on a declared scale: CSAT 1-5 or NPS 0-10."""

    model_config = ConfigDict(json_schema_extra=_feedback_schema)

    type: Literal["feedback"] = "feedback"
    rating: Count
    scale: Literal["csat", "nps"]
    category: Literal["product", "service", "brand"]
    comment: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _rating_on_its_scale(self) -> FeedbackEvent:
        low, high = RATING_SCALES[self.scale]
        if not low <= self.rating <= high:
            raise ValueError(f"rating {self.rating} is outside the {self.scale} scale {low}-{high}")
        return self

    @property
    def normalised_rating(self) -> float:
        """The rating mapped onto [0, 1]: ``(rating - low) / (high - low)``."""
        low, high = RATING_SCALES[self.scale]
        return (self.rating - low) / (high - low)


class SupportEvent(_Event):
    """A step in a support ticket's life."""

    type: Literal["support"] = "support"
    ticket_id: Identifier
    action: Literal["opened", "first_response", "resolved", "escalated"]
    channel: Channel
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    category: Literal["inquiry", "complaint", "feedback"]


class CancellationEvent(_Event):
    """The customer closed the account or cancelled the contract: an explicit churn label."""

    type: Literal["cancellation"] = "cancellation"
    reason: str | None = Field(default=None, max_length=500)


Event = Annotated[
    PurchaseEvent | RefundEvent | FeedbackEvent | SupportEvent | CancellationEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

TOPIC_EVENT_TYPES: Mapping[str, frozenset[str]] = {
    "purchases": frozenset({"purchase", "refund"}),
    "feedback": frozenset({"feedback"}),
    "support": frozenset({"support", "cancellation"}),
}


class ErasureRequested(_Event):
    """The customer asked to be forgotten (GDPR art. 17, CCPA): delete everything kept about
    them and refuse their later events until consent is recorded again."""

    type: Literal["erasure"] = "erasure"
    regulation: Literal["gdpr", "ccpa", "other"] = "gdpr"


class ConsentRecorded(_Event):
    """The customer (re-)consented to processing: lifts the block an erasure left."""

    type: Literal["consent"] = "consent"


PrivacyEvent = Annotated[ErasureRequested | ConsentRecorded, Field(discriminator="type")]
PRIVACY_EVENT_ADAPTER: TypeAdapter[PrivacyEvent] = TypeAdapter(PrivacyEvent)


def decode_privacy_event(raw: bytes) -> PrivacyEvent:
    """Validate a message of the privacy topic, or raise an ``InvalidEventError``.

    >>> decode_privacy_event(b'{"type": "erasure", "event_id": "r1", "customer_id": "c1",'
    ...     b' "occurred_at": "2026-03-01T00:00:00Z"}').regulation
    'gdpr'
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise UndecodableEventError(
            f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}", code="too_large"
        )
    try:
        return PRIVACY_EVENT_ADAPTER.validate_json(raw)
    except ValidationError as error:
        raise _as_invalid_event(error) from None


MAX_KEY_BYTES = 256
"""The longest message key accepted (customer ids are at most 128 ASCII characters)."""


def check_message_key(event: BaseEvent, key: bytes | None, *also: str) -> None:
    """Raise ``MessageKeyError`` unless the message ``key`` is the event's ``customer_id``
    (UTF-8) or one of ``also`` (e.g. the id's pseudonym).

    >>> purchase = PurchaseEvent(event_id="e", customer_id="c1", order_id="o", amount=1.0,
    ...     items=1, channel="web", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> check_message_key(purchase, b"c1")
    >>> check_message_key(purchase, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamcrm.errors.MessageKeyError: message has no key: ...
    >>> check_message_key(purchase, b"c2")
    Traceback (most recent call last):
    ...
    streamcrm.errors.MessageKeyError: message key 'c2' is not the event's customer_id 'c1'
    """
    if not key:
        raise MessageKeyError(
            "message has no key: input messages must be keyed by the event's customer_id",
            code="missing_key",
        )
    if len(key) > MAX_KEY_BYTES:
        raise MessageKeyError(
            f"message key of {len(key):,} bytes exceeds {MAX_KEY_BYTES}", code="key_too_long"
        )
    expected = {event.customer_id, *also}
    if key.decode("utf-8", "replace") not in expected:
        shown = key[:64].decode("utf-8", "backslashreplace")
        raise MessageKeyError(
            f"message key {shown!r} is not the event's customer_id {event.customer_id!r}",
            code="key_mismatch",
        )


def decode_event(
    raw: bytes,
    topic: str | None = None,
    not_after: datetime | None = None,
) -> Event:
    """Validate raw message bytes into an event, or raise an ``InvalidEventError``.

    ``topic`` (a full name such as ``crm.purchases``) restricts the accepted types to those the
    topic carries; its last dot-separated part names the kind. ``not_after`` (the wall clock
    plus the allowed skew, from the adapter: the core reads no clock) rejects events dated
    later than it.

    Input bounds (the policy ``docs/events.md`` documents): at most ``MAX_MESSAGE_BYTES``;
    nesting deeper than the JSON parser's recursion limit (200) is undecodable; identifiers
    ≤ 128 characters of ``[A-Za-z0-9_.:@-]``, free text ≤ 2,000; amounts finite JSON numbers
    in [0, 10⁹]; items 1-10,000; ratings integers on their scale; event times RFC 3339
    strings with an offset, dated 1900-2999; unknown fields and schema versions other than 1
    are rejected, never silently dropped. Nothing is coerced: a string or a boolean is never
    a number, a number never a time. Beyond the message bounds (size, nesting, JSON itself),
    the topic and ``not_after``, what is accepted is exactly what the topic's JSON Schema in
    ``schemas/`` accepts (``tests/unit/test_schema_contract.py`` holds them to it).

    >>> decode_event(b"{", topic="crm.feedback")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamcrm.errors.UndecodableEventError: not valid JSON: EOF while parsing an object...
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise UndecodableEventError(
            f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}", code="too_large"
        )
    try:
        event = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as error:
        raise _as_invalid_event(error) from None
    if topic is not None:
        allowed = TOPIC_EVENT_TYPES.get(topic.rsplit(".", 1)[-1])
        if allowed is not None and event.type not in allowed:
            raise WrongTopicError(f"event type {event.type!r} does not belong on topic {topic!r}")
    if not_after is not None and event.occurred_at > not_after:
        raise FutureEventError(
            f"occurred_at {event.occurred_at.isoformat()} is later than the latest accepted"
            f" event time {not_after.astimezone(UTC).isoformat()} (wall clock + allowed skew)"
        )
    return event


_NOT_AN_OBJECT = frozenset({"dict_type", "model_type", "model_attributes_type"})


def _as_invalid_event(error: ValidationError) -> EventValidationError | UndecodableEventError:
    first = error.errors(include_url=False)[0]
    if first["type"] in {"json_invalid", "json_type"}:
        message = first["msg"].removeprefix("Invalid JSON: ")
        return UndecodableEventError(
            f"not valid JSON: {message}",
            code="too_deep" if "recursion limit" in message else "not_json",
        )
    if not first["loc"] and first["type"] in _NOT_AN_OBJECT:
        return UndecodableEventError(
            "not a JSON object: an event must be a JSON object", code="not_object"
        )
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '<root>'}: {e['msg']}"
        for e in error.errors(include_url=False)[:5]
    )
    return EventValidationError(problems, code=_schema_code(first))


def _schema_code(first: Mapping[str, object]) -> str:
    """A stable slug for the first schema error: ``unknown_schema_version`` or
    ``schema:<pydantic error type>`` (``schema:missing``, ``schema:finite_number``, ...)."""
    location = first.get("loc") or ()
    if isinstance(location, tuple) and location and location[-1] == "schema_version":
        return "unknown_schema_version"
    if first.get("type") == "union_tag_invalid":
        return "unknown_event_type"
    return f"schema:{first.get('type')}"


class ChurnDriver(_Record):
    """One feature's contribution to a churn score, in log-odds (weight × scaled value)."""

    feature: str
    log_odds: float


SCORE_SCHEMA_VERSION: Final = 2
"""Version of the ``crm.scores`` record. Version 2 added ``trigger``, ``lapsed`` and
``usual_gap_days``; a version-1 record still reads (as an event-triggered score)."""

ScoreTrigger = Literal["event", "time"]
"""What made a score: an event of the customer, or the passage of event time (a re-score)."""


def rescore_id(customer_id: str, as_of: datetime) -> str:
    """The ``event_id`` of a customer's re-score as of ``as_of``: deterministic, so a replay
    or a re-run sweep names the same re-score (and its alerts) the same way.

    >>> rescore_id("c1", datetime(2026, 3, 1, 12, tzinfo=UTC))
    'asof:c1:2026-03-01T12:00:00Z'
    """
    return f"asof:{customer_id}:{as_of.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


class CustomerScore(_Record):
    """What streamcrm says about one customer, keyed by ``customer_id``.

    A score is made at each of the customer's events (``trigger`` "event": ``as_of`` is the
    event time of the newest event applied) and again as event time passes while the
    customer is quiet (``trigger`` "time": ``as_of`` is the moment of the re-score, and
    recency and every time-based figure are measured then; see ``docs/scores.md``). Scores
    never read the wall clock. Every model-made field comes with ``model_version``. Fields in
    ``MODEL_FIELDS`` depend on the shared models and population; ``event_id`` names the event
    that triggered the record (for a re-score, :func:`rescore_id`). All other fields are a
    function of the customer's events alone, whatever order they were consumed in, so
    replaying a history reproduces them exactly.
    """

    customer_id: str
    as_of: datetime
    event_id: str
    churn_probability: float
    cancelled: bool = Field(description="the customer explicitly cancelled (churn is then 1)")
    segment_id: int | None
    segment_name: str
    satisfaction_mean: float | None
    satisfaction_recent: float | None
    csat_mean: float | None
    nps: float | None
    currency: str = Field(description="the reporting currency of every money field")
    customer_value: float
    clv_simple: float
    clv_to_acquisition_cost: float | None
    clv_discounted: float
    loyalty: float
    health: float
    recency_days: float | None
    frequency: int
    monetary: float
    rfm_recency: int = Field(ge=1, le=5, description="1-5 against the population, 5 = most recent")
    rfm_frequency: int = Field(ge=1, le=5, description="1-5 against the population, 5 = most")
    rfm_monetary: int = Field(ge=1, le=5, description="1-5 against the population, 5 = most")
    population_satisfaction_mean: float | None
    open_tickets: int
    tickets_by_category: dict[str, int] = Field(description="tickets opened, by category")
    escalations: int
    sla_breaches: int
    mean_first_response_hours: float | None
    mean_resolution_hours: float | None
    churn_drivers: list[ChurnDriver] = Field(
        default_factory=list,
        description="the features that moved the churn log-odds most (positive: raise the risk)",
    )
    segment_distance: float | None = Field(
        default=None, description="distance to the segment's centre in scaled units"
    )
    probability_alive: float | None = Field(
        default=None, description="BG/NBD P(still a customer); null before a purchase or a fit"
    )
    expected_purchases: float | None = Field(
        default=None,
        description="BG/NBD expected purchase days within the churn window (0 once cancelled)",
    )
    clv_expected: float | None = Field(
        default=None,
        description="expected spend over the CLV horizon: BG/NBD purchases × Gamma-Gamma spend",
    )
    trigger: ScoreTrigger = Field(
        default="event",
        description="what made the score: an event, or the passage of event time (a re-score)",
    )
    lapsed: bool = Field(
        default=False,
        description="quiet past the re-score horizon: the last re-score until the next event",
    )
    usual_gap_days: float | None = Field(
        default=None,
        description="the customer's mean days between purchase days (null before a repeat)",
    )
    model_version: str
    schema_version: Literal[1, 2] = SCORE_SCHEMA_VERSION


MODEL_FIELDS: frozenset[str] = frozenset(
    {
        "churn_probability",
        "segment_id",
        "segment_name",
        "clv_simple",
        "clv_to_acquisition_cost",
        "clv_discounted",
        "health",
        "rfm_recency",
        "rfm_frequency",
        "rfm_monetary",
        "population_satisfaction_mean",
        "churn_drivers",
        "segment_distance",
        "probability_alive",
        "expected_purchases",
        "clv_expected",
        "model_version",
    }
)
"""Score fields made by (or from) the shared models and population statistics."""


AlertKind = Literal[
    "churn_risk",
    "value_at_risk",
    "satisfaction_drop",
    "sla_breach",
    "segment_change",
    "model_drift",
    "privacy_request_failed",
]
"""What an alert is about; ``docs/alerts.md`` gives each rule, its thresholds and hysteresis."""

AlertSeverity = Literal["info", "warning", "critical"]


class Alert(_Record):
    """One alert on ``crm.alerts``, keyed by ``customer_id`` (``model`` for model-wide alerts).

    ``alert_id`` is deterministic (the triggering event's id and the kind), so a consumer can
    drop a redelivered alert. ``raised_at`` is event time for customer alerts (the score's
    ``as_of``) and wall-clock time for model alerts.
    """

    alert_id: str
    kind: AlertKind
    severity: AlertSeverity
    customer_id: str | None = Field(description="null for a model-wide alert (model_drift)")
    raised_at: datetime
    event_id: str | None = Field(description="the event whose score raised the alert")
    message: str = Field(description="one line a person can act on")
    scores: dict[str, float | int | str | None] = Field(
        description="the score values that triggered the alert, and the thresholds crossed"
    )
    churn_drivers: list[ChurnDriver] = Field(
        default_factory=list, description="the features behind the churn score, strongest first"
    )
    model_version: str
    schema_version: Literal[1] = SCHEMA_VERSION


class DeadLetter(_Record):
    """A message that could not be processed, with where it came from and why.

    ``raw`` holds the payload exactly (UTF-8 text, or base64 when the bytes are not UTF-8) up
    to ``MAX_DEADLETTER_RAW_BYTES``; a longer payload is cut and ``raw_truncated`` set, and
    only an uncut payload can be re-published (``streamcrm deadletter --republish``).
    """

    source_topic: str
    partition: int
    offset: int
    key: str | None
    error_type: str
    reason_code: str = Field(
        default="invalid", description="short stable cause, for counting: too_large, schema:..."
    )
    reason: str
    raw: str = Field(description="the raw payload (see raw_encoding), at most 16 KiB of it")
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_truncated: bool = False
    raw_size: int
    schema_version: Literal[1] = SCHEMA_VERSION

    @classmethod
    def of(
        cls,
        raw: bytes,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        error_type: str,
        reason_code: str,
        reason: str,
    ) -> DeadLetter:
        """A dead letter for ``raw``, stored exactly (UTF-8 text, else base64), size-bounded.

        >>> letter = DeadLetter.of(b"\\xff{", source_topic="crm.purchases", partition=0,
        ...     offset=7, key=b"c1", error_type="UndecodableEventError", reason_code="not_json",
        ...     reason="not valid JSON")
        >>> letter.raw_encoding, letter.payload()
        ('base64', b'\\xff{')
        """
        kept = raw[:MAX_DEADLETTER_RAW_BYTES]
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        return cls(
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            # At most MAX_KEY_BYTES of the key: a 100 KB key is not copied into every letter.
            key=key[:MAX_KEY_BYTES].decode("utf-8", "replace") if key is not None else None,
            error_type=error_type,
            reason_code=reason_code,
            reason=reason,
            raw=text,
            raw_encoding=encoding,  # type: ignore[arg-type]
            raw_truncated=len(raw) > len(kept),
            raw_size=len(raw),
        )

    def payload(self) -> bytes:
        """The stored payload bytes (all of them unless ``raw_truncated``)."""
        if self.raw_encoding == "base64":
            return base64.b64decode(self.raw)
        return self.raw.encode("utf-8")


MAX_DEADLETTER_RAW_BYTES = 16 * 1024


class PartitionMetrics(_Record):
    """One consumed partition's figures in a worker's :class:`TopicMetrics`.

    ``lag`` is ``end_offset - committed``: messages in the partition this worker's group has
    not committed yet. Offsets are null until known (no fetch or commit yet).
    """

    topic: str
    partition: int
    events_in: int = Field(description="messages consumed from it since the worker started")
    end_offset: int | None = Field(description="the partition's end (next offset to write)")
    committed: int | None = Field(description="the group's committed offset (next to read)")
    lag: int | None = Field(description="end_offset - committed, never below 0")


class TopicMetrics(_Record):
    """A worker's traffic figures, sent inside its :class:`ModelMetrics` report.

    The same figures as the worker's Prometheus ``/metrics`` (see docs/metrics.md), so they
    can be read with Kafka alone (``streamcrm status``).
    """

    events_per_s: float = Field(description="input messages consumed per second, recently")
    rate_window_s: float = Field(description="the sliding window the rate is taken over")
    partitions: list[PartitionMetrics] = Field(
        description="every input partition this worker owns, by topic and partition"
    )
    records_out: dict[str, int] = Field(description="records produced since start, by output topic")
    latency_count: int = Field(
        description="scores whose end-to-end latency (input timestamp to score sent) was measured"
    )
    latency_p50_s: float | None = Field(description="median end-to-end latency, in seconds")
    latency_p95_s: float | None
    latency_p99_s: float | None


class ModelMetrics(_Record):
    """A worker's periodic report on ``crm.model-metrics``, keyed by worker.

    Churn quality is measured progressively (each labelled example is predicted before it is
    learned), so every figure is on data the model had not seen. Figures are null until the
    first label arrives. Counts are since the worker started.
    """

    worker: str
    published_at: datetime = Field(description="wall-clock time of this report")
    event_time: datetime | None = Field(description="newest event time this worker has seen")
    model_version: str
    labelled_examples: int
    churned_examples: int
    roc_auc: float | None
    log_loss: float | None
    brier: float | None
    rolling_roc_auc: float | None = Field(
        default=None, description="ROC AUC over the newest 2,000 labelled examples"
    )
    recent_brier: float | None = Field(
        default=None, description="mean squared error over ADWIN's current window"
    )
    drifts_detected: int = Field(
        default=0, description="changes in the churn model's error rate ADWIN has flagged"
    )
    model_drift: bool = Field(
        default=False, description="true when drift was flagged since the previous report"
    )
    customers_scored: int
    segment_shares: dict[str, float] = Field(
        description="share of each segment among the scores made since the last report"
    )
    events: dict[str, int] = Field(
        description="messages since start by outcome: scored, duplicate, late, invalid"
    )
    dead_letters: dict[str, int] = Field(
        default_factory=dict,
        description="messages dead-lettered since start, by reason code (too_large, schema:...)",
    )
    topics: TopicMetrics | None = Field(
        default=None, description="traffic: rates, lag per partition, records out, latency"
    )
    schema_version: Literal[1] = SCHEMA_VERSION
