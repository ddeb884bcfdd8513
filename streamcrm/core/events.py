"""Wire models of the events streamcrm consumes, and their decoding (the records it
produces are in :mod:`streamcrm.core.records`).

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
crm.marketing   ``touch``        a campaign touch was sent (campaign, arm, channel, cost)
crm.marketing   ``offer``        a retention offer was sent in answer to an alert
crm.marketing   ``open``         the customer opened a touch
crm.marketing   ``click``        the customer clicked through a touch
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

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

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


class WireRecord(BaseModel):
    """Base of every wire model: immutable, and no field beyond those declared."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _type_required(schema: dict[str, Any]) -> None:
    """Publish ``type`` as required: it has a default for Python callers, but the decoder
    reads the union by it, so a message without it is refused."""
    schema["required"] = ["type", *schema.get("required", [])]


class _Event(WireRecord):
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
    return _validated(PRIVACY_EVENT_ADAPTER, raw)


MarketingChannel = Literal["email", "sms", "push", "in_app", "web", "mail", "phone"]


class CampaignTouch(_Event):
    """A campaign touch was sent to the customer: ``arm`` is the variant of the campaign's
    A/B test it belongs to, ``cost`` what sending it cost."""

    type: Literal["touch"] = "touch"
    touch_id: Identifier
    campaign_id: Identifier
    arm: Identifier
    channel: MarketingChannel
    cost: Money = 0.0
    currency: CurrencyCode = "USD"


class RetentionOffer(_Event):
    """A retention offer was sent in answer to a streamcrm alert: a campaign touch that names
    the alert it answers (``alert_id``)."""

    type: Literal["offer"] = "offer"
    touch_id: Identifier
    campaign_id: Identifier
    arm: Identifier
    channel: MarketingChannel
    alert_id: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
    """The ``alert_id`` of the alert answered (``"{event_id}:{kind}"``)."""
    cost: Money = 0.0
    currency: CurrencyCode = "USD"


class TouchOpened(_Event):
    """The customer opened a touch."""

    type: Literal["open"] = "open"
    touch_id: Identifier


class TouchClicked(_Event):
    """The customer clicked through a touch."""

    type: Literal["click"] = "click"
    touch_id: Identifier


MarketingEvent = Annotated[
    CampaignTouch | RetentionOffer | TouchOpened | TouchClicked, Field(discriminator="type")
]
MARKETING_EVENT_ADAPTER: TypeAdapter[MarketingEvent] = TypeAdapter(MarketingEvent)


def decode_marketing_event(raw: bytes, not_after: datetime | None = None) -> MarketingEvent:
    """Validate a message of the marketing topic, or raise an ``InvalidEventError``;
    ``not_after`` rejects events dated later than it, as :func:`decode_event` does (a touch
    dated years ahead would make every later touch of its customer late).

    >>> decode_marketing_event(b'{"type": "open", "event_id": "m1", "customer_id": "c1",'
    ...     b' "occurred_at": "2026-03-01T00:00:00Z", "touch_id": "t1"}').touch_id
    't1'
    """
    return _dated_no_later_than(_validated(MARKETING_EVENT_ADAPTER, raw), not_after)


_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseEvent)


def _validated(adapter: TypeAdapter[_T], raw: bytes) -> _T:
    """``raw`` validated by ``adapter``, or the ``InvalidEventError`` that says why not."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise UndecodableEventError(
            f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}", code="too_large"
        )
    try:
        return adapter.validate_json(raw)
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
    event = _validated(EVENT_ADAPTER, raw)
    if topic is not None:
        allowed = TOPIC_EVENT_TYPES.get(topic.rsplit(".", 1)[-1])
        if allowed is not None and event.type not in allowed:
            raise WrongTopicError(f"event type {event.type!r} does not belong on topic {topic!r}")
    return _dated_no_later_than(event, not_after)


def _dated_no_later_than(event: _E, not_after: datetime | None) -> _E:
    """``event``, unless it is dated later than ``not_after`` (None: any time is accepted):
    then raise ``FutureEventError``."""
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
