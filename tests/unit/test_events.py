"""Behaviour of the wire models and of ``decode_event``, the one validating edge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamcrm.core.events import (
    MAX_MESSAGE_BYTES,
    CancellationEvent,
    FeedbackEvent,
    PurchaseEvent,
    RefundEvent,
    SupportEvent,
    decode_event,
    decode_marketing_event,
    decode_privacy_event,
)
from streamcrm.errors import (
    EventValidationError,
    InvalidEventError,
    StreamcrmError,
    UndecodableEventError,
    WrongTopicError,
)

COMMON: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "occurred_at": "2026-01-05T10:00:00Z",
}
PAYLOADS: dict[str, dict[str, Any]] = {
    "purchase": {
        "type": "purchase",
        "order_id": "o-1",
        "amount": 80.5,
        "items": 2,
        "channel": "web",
        "cost": 40.0,
    },
    "refund": {"type": "refund", "order_id": "o-1", "amount": 20.0, "reason": "broken"},
    "feedback": {"type": "feedback", "rating": 4, "scale": "csat", "category": "service"},
    "support": {
        "type": "support",
        "ticket_id": "t-1",
        "action": "opened",
        "channel": "chat",
        "category": "complaint",
    },
    "cancellation": {"type": "cancellation", "reason": "moved away"},
}
TOPICS = {
    "purchase": "crm.purchases",
    "refund": "crm.purchases",
    "feedback": "crm.feedback",
    "support": "crm.support",
    "cancellation": "crm.support",
}


def payload(kind: str, **overrides: Any) -> dict[str, Any]:
    """A valid event of ``kind`` as a JSON-ready dict, with ``overrides`` applied."""
    return {**COMMON, **PAYLOADS[kind], **overrides}


def encode(fields: Any) -> bytes:
    return json.dumps(fields).encode()


def feedback(rating: int, scale: str) -> bytes:
    return encode(payload("feedback", rating=rating, scale=scale))


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("purchase", PurchaseEvent),
        ("refund", RefundEvent),
        ("feedback", FeedbackEvent),
        ("support", SupportEvent),
        ("cancellation", CancellationEvent),
    ],
)
def test_valid_event_of_each_type_decodes_on_its_topic(kind: str, model: type) -> None:
    event = decode_event(encode(payload(kind)), topic=TOPICS[kind])

    assert isinstance(event, model)
    assert event.type == kind
    assert event.event_id == "e-1"
    assert event.customer_id == "c-1"
    assert event.occurred_at.utcoffset() is not None
    assert event.schema_version == 1


def test_decoding_without_a_topic_accepts_every_type() -> None:
    for kind in PAYLOADS:
        assert decode_event(encode(payload(kind))).type == kind


def test_offset_timestamps_keep_their_instant() -> None:
    event = decode_event(encode(payload("purchase", occurred_at="2026-01-05T12:00:00+02:00")))

    assert event.occurred_at == decode_event(encode(payload("purchase"))).occurred_at


def test_purchase_fields_are_decoded() -> None:
    event = decode_event(encode(payload("purchase")), topic="crm.purchases")

    assert isinstance(event, PurchaseEvent)
    assert (event.order_id, event.amount, event.items, event.channel, event.cost) == (
        "o-1",
        80.5,
        2,
        "web",
        40.0,
    )
    assert event.currency == "USD"


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"type": "purchase", "x": ' + b"[" * 300 + b"]" * 300 + b"}", "recursion limit"),
    ],
    ids=["truncated", "empty", "bad-utf8", "too-deep"],
)
def test_bytes_that_are_not_json_are_undecodable(raw: bytes, reason_part: str) -> None:
    with pytest.raises(UndecodableEventError) as caught:
        decode_event(raw, topic="crm.purchases")

    assert reason_part in caught.value.reason


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"purchase"', b"42", b"null"])
def test_json_that_is_not_an_object_is_undecodable(raw: bytes) -> None:
    with pytest.raises(UndecodableEventError):
        decode_event(raw)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"purchase"', b"42", b"null"])
def test_json_that_is_not_an_object_is_an_invalid_event_saying_so(raw: bytes) -> None:
    with pytest.raises(InvalidEventError) as caught:
        decode_event(raw)

    assert "object" in caught.value.reason


def test_unknown_type_names_the_expected_ones() -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("purchase", type="wishlist")))

    assert "wishlist" in caught.value.reason
    assert "purchase" in caught.value.reason


def test_missing_type_is_rejected() -> None:
    fields = payload("purchase")
    del fields["type"]

    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(fields))

    assert "type" in caught.value.reason


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("purchase", "order_id"),
        ("purchase", "amount"),
        ("purchase", "event_id"),
        ("refund", "amount"),
        ("feedback", "rating"),
        ("feedback", "scale"),
        ("support", "ticket_id"),
        ("support", "action"),
        ("cancellation", "customer_id"),
        ("cancellation", "occurred_at"),
    ],
)
def test_missing_field_is_named_in_the_reason(kind: str, field: str) -> None:
    fields = payload(kind)
    del fields[field]

    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(fields))

    assert f"{kind}.{field}: Field required" in caught.value.reason


@pytest.mark.parametrize(
    ("kind", "field", "value", "code"),
    [
        ("purchase", "amount", "10.5", "schema:float_type"),
        ("purchase", "amount", True, "schema:float_type"),
        ("refund", "amount", "20", "schema:float_type"),
        ("purchase", "cost", False, "schema:float_type"),
        ("purchase", "items", "2", "schema:int_type"),
        ("purchase", "items", True, "schema:int_type"),
        ("purchase", "items", 2.5, "schema:int_type"),
        ("feedback", "rating", "4", "schema:int_type"),
        ("purchase", "occurred_at", 1784542800, "schema:datetime_type"),
        ("purchase", "occurred_at", 1784542800.5, "schema:datetime_type"),
        ("purchase", "occurred_at", "1784542800", "schema:datetime_parsing"),
        ("purchase", "schema_version", True, "unknown_schema_version"),
        ("purchase", "schema_version", "1", "unknown_schema_version"),
    ],
    ids=lambda value: repr(value),
)
def test_nothing_is_coerced_a_value_of_the_wrong_json_type_is_refused(
    kind: str, field: str, value: object, code: str
) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload(kind, **{field: value})), topic=TOPICS[kind])

    assert caught.value.code == code
    assert f"{kind}.{field}" in caught.value.reason


@pytest.mark.parametrize(
    ("kind", "field", "value", "expected"),
    [
        ("purchase", "items", 3.0, 3),
        ("feedback", "rating", 4.0, 4),
        ("purchase", "schema_version", 1.0, 1),
        ("purchase", "amount", 80, 80.0),
    ],
)
def test_a_number_is_read_by_its_value_as_json_schema_does(
    kind: str, field: str, value: float, expected: float
) -> None:
    # JSON Schema's "integer" is any number without a fractional part: 3.0 is the integer 3.
    event = decode_event(encode(payload(kind, **{field: value})), topic=TOPICS[kind])

    assert getattr(event, field) == expected
    assert type(getattr(event, field)) is type(expected)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: datetime cannot hold it
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "1899-12-31T23:59:59Z",
        "3000-01-01T00:00:00Z",
    ],
)
def test_an_event_time_outside_1900_to_2999_is_a_schema_error_at_decode(
    occurred_at: str,
) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("purchase", occurred_at=occurred_at)), topic="crm.purchases")

    assert caught.value.code == "schema:datetime_out_of_range"
    assert "years 1900 to 2999" in caught.value.reason


@pytest.mark.parametrize(
    ("occurred_at", "utc"),
    [
        ("1900-01-01T00:00:00+14:00", datetime(1899, 12, 31, 10, tzinfo=UTC)),
        ("2999-12-31T23:59:59-12:00", datetime(3000, 1, 1, 11, 59, 59, tzinfo=UTC)),
        ("2026-01-05t10:00:00z", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T10:00:00-00:00", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T10:00:00.123456789Z", datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_every_rfc_3339_spelling_within_the_years_is_accepted(
    occurred_at: str, utc: datetime
) -> None:
    event = decode_event(encode(payload("purchase", occurred_at=occurred_at)))

    assert event.occurred_at == utc


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-01-05 10:00:00Z",  # a space for the T
        "2026-01-05T10:00Z",  # no seconds
        "2026-01-05T10:00:00+0200",  # an offset without its colon
        "2026-01-05T10:00:00,5Z",  # a decimal comma
        "2026-01-05T10:00:00Z\n",  # a trailing newline
        "2026-12-31T23:59:60Z",  # a leap second
        "2026-01-05",
    ],
)
def test_a_time_that_is_not_rfc_3339_is_refused(occurred_at: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("feedback", occurred_at=occurred_at)))

    assert caught.value.code.startswith("schema:datetime")
    assert "feedback.occurred_at" in caught.value.reason


def test_privacy_events_follow_the_same_contract() -> None:
    erasure = {"type": "erasure", "event_id": "r1", "customer_id": "c1"}
    for occurred_at in (1784542800, "0001-01-01T00:00:00+14:00"):
        with pytest.raises(EventValidationError):
            decode_privacy_event(encode(erasure | {"occurred_at": occurred_at}))
    with pytest.raises(EventValidationError):
        decode_privacy_event(
            encode(erasure | {"occurred_at": "2026-01-05T10:00:00Z", "schema_version": True})
        )


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("purchase", occurred_at="2026-01-05T10:00:00")))

    assert "occurred_at" in caught.value.reason
    assert "timezone" in caught.value.reason


@pytest.mark.parametrize("kind", ["purchase", "refund"])
def test_negative_amount_is_rejected(kind: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload(kind, amount=-0.01)))

    assert f"{kind}.amount" in caught.value.reason
    assert "greater than or equal to 0" in caught.value.reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_amount_is_rejected(literal: str) -> None:
    raw = encode(payload("purchase", amount=12345.0)).replace(b"12345.0", literal.encode())

    with pytest.raises(EventValidationError) as caught:
        decode_event(raw)

    assert "amount" in caught.value.reason


def test_zero_amount_is_accepted() -> None:
    event = decode_event(encode(payload("refund", amount=0)))

    assert isinstance(event, RefundEvent)
    assert event.amount == 0.0


@pytest.mark.parametrize(("scale", "rating"), [("csat", 0), ("csat", 6), ("nps", -1), ("nps", 11)])
def test_rating_outside_its_scale_is_rejected(scale: str, rating: int) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(feedback(rating, scale))

    assert f"rating {rating} is outside the {scale} scale" in caught.value.reason


@pytest.mark.parametrize(("scale", "rating"), [("csat", 1), ("csat", 5), ("nps", 0), ("nps", 10)])
def test_rating_on_the_edge_of_its_scale_is_accepted(scale: str, rating: int) -> None:
    event = decode_event(feedback(rating, scale), topic="crm.feedback")

    assert isinstance(event, FeedbackEvent)
    assert event.rating == rating


def test_fractional_rating_is_rejected() -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("feedback", rating=4.5)))

    assert "rating" in caught.value.reason


def test_boolean_rating_is_rejected() -> None:
    with pytest.raises(EventValidationError):
        decode_event(encode(payload("feedback", rating=True)))


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_unknown_field_is_rejected(kind: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload(kind, colour="red")))

    assert f"{kind}.colour: Extra inputs are not permitted" in caught.value.reason


def test_unknown_schema_version_is_rejected() -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("purchase", schema_version=2)))

    assert "schema_version" in caught.value.reason


@pytest.mark.parametrize("customer_id", ["", "has space", "x" * 129, "semi;colon"])
def test_malformed_identifier_is_rejected(customer_id: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        decode_event(encode(payload("purchase", customer_id=customer_id)))

    assert "customer_id" in caught.value.reason


def test_oversize_message_is_rejected_before_parsing() -> None:
    raw = encode(payload("purchase")).ljust(MAX_MESSAGE_BYTES + 1)

    with pytest.raises(UndecodableEventError) as caught:
        decode_event(raw)

    assert caught.value.reason == (
        f"message of {MAX_MESSAGE_BYTES + 1} bytes exceeds {MAX_MESSAGE_BYTES}"
    )


def test_message_of_exactly_the_limit_is_accepted() -> None:
    raw = encode(payload("purchase")).ljust(MAX_MESSAGE_BYTES)

    assert decode_event(raw).type == "purchase"


@pytest.mark.parametrize(
    ("kind", "topic"),
    [
        ("feedback", "crm.purchases"),
        ("purchase", "crm.feedback"),
        ("refund", "crm.support"),
        ("support", "crm.purchases"),
        ("cancellation", "crm.feedback"),
    ],
)
def test_event_on_the_wrong_topic_is_rejected(kind: str, topic: str) -> None:
    with pytest.raises(WrongTopicError) as caught:
        decode_event(encode(payload(kind)), topic=topic)

    assert caught.value.reason == f"event type {kind!r} does not belong on topic {topic!r}"


def test_topic_prefix_does_not_matter_only_its_kind() -> None:
    event = decode_event(encode(payload("feedback")), topic="t123.staging.feedback")

    assert event.type == "feedback"


def test_invalid_event_error_is_a_value_error_and_a_streamcrm_error() -> None:
    assert issubclass(InvalidEventError, ValueError)
    assert issubclass(InvalidEventError, StreamcrmError)
    for subclass in (UndecodableEventError, EventValidationError, WrongTopicError):
        assert issubclass(subclass, InvalidEventError)

    with pytest.raises(ValueError):
        decode_event(b"not json")


def test_reason_is_the_error_message() -> None:
    error = EventValidationError("amount: must be finite")

    assert error.reason == "amount: must be finite"
    assert str(error) == "amount: must be finite"


@pytest.mark.parametrize(
    ("scale", "rating", "expected"),
    [
        ("csat", 1, 0.0),
        ("csat", 2, 0.25),
        ("csat", 3, 0.5),
        ("csat", 5, 1.0),
        ("nps", 0, 0.0),
        ("nps", 5, 0.5),
        ("nps", 7, 0.7),
        ("nps", 10, 1.0),
    ],
)
def test_normalised_rating_maps_the_scale_onto_zero_to_one(
    scale: str, rating: int, expected: float
) -> None:
    event = decode_event(feedback(rating, scale))

    assert isinstance(event, FeedbackEvent)
    assert event.normalised_rating == pytest.approx(expected)


def test_events_are_immutable() -> None:
    event = decode_event(encode(payload("purchase")))
    assert isinstance(event, PurchaseEvent)

    with pytest.raises(ValueError):
        event.amount = 1.0  # type: ignore[misc]


def test_event_times_are_normalised_to_utc() -> None:
    event = decode_event(
        b'{"type": "cancellation", "event_id": "e1", "customer_id": "c1",'
        b' "occurred_at": "2026-03-01T10:00:00+02:00"}'
    )

    assert event.occurred_at == datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert '"occurred_at":"2026-03-01T08:00:00Z"' in event.model_dump_json()


def test_an_event_dated_beyond_the_allowed_clock_skew_is_rejected_as_future() -> None:
    from streamcrm.errors import FutureEventError

    raw = (
        b'{"type": "cancellation", "event_id": "e1", "customer_id": "c1",'
        b' "occurred_at": "2099-01-01T00:00:00Z"}'
    )
    with pytest.raises(FutureEventError) as caught:
        decode_event(raw, "crm.support", not_after=datetime(2026, 11, 30, tzinfo=UTC))
    assert caught.value.code == "future_event_time"
    assert decode_event(raw, "crm.support", not_after=None).customer_id == "c1"


def test_a_marketing_event_dated_beyond_the_allowed_clock_skew_is_rejected_as_future() -> None:
    from streamcrm.errors import FutureEventError

    raw = (
        b'{"type": "open", "event_id": "m1", "customer_id": "c1",'
        b' "occurred_at": "2099-01-01T00:00:00Z", "touch_id": "t1"}'
    )
    with pytest.raises(FutureEventError) as caught:
        decode_marketing_event(raw, not_after=datetime(2026, 11, 30, tzinfo=UTC))
    assert caught.value.code == "future_event_time"
    assert decode_marketing_event(raw, not_after=None).customer_id == "c1"
