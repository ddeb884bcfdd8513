"""One contract: the decoder accepts exactly what the published JSON Schemas in ``schemas/`` accept.

For each input topic (purchases, feedback, support, privacy, marketing), events are
generated valid and then broken: wrong types (strings and booleans for numbers, numbers for
times, ``3.0`` for integers, nulls, lists), missing and unknown fields, values out of range,
unknown enum values, malformed or out-of-range times. A JSON Schema validator (Draft
2020-12, ``date-time`` format checked) reading the checked-in schema and
:func:`~streamcrm.core.events.decode_event` must give the same verdict on every one; nothing
generated is filtered away.

Two readings make the schema side faithful to the standards rather than to Python's tools:

- the message is JSON as RFC 8259 defines it, so ``NaN`` and ``Infinity`` (which Python's
  ``json`` reads) are not JSON, and no schema accepts them;
- a ``pattern`` is an ECMA-262 regular expression, where ``$`` matches only at the very end;
  Python's ``re``, which ``jsonschema`` uses, also matches it before a final newline.

What a JSON Schema cannot state is tested on its own below: the size of a message, and JSON
that is not I-JSON (RFC 7493: a lone surrogate). The topic a message arrived on, its key, and
event times ahead of the wall clock are checked by the worker, not by the schema.
"""

from __future__ import annotations

import calendar
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from streamcrm.cli.schemas import DIALECT, schema_path
from streamcrm.core.events import (
    MAX_MESSAGE_BYTES,
    decode_event,
    decode_marketing_event,
    decode_privacy_event,
)
from streamcrm.errors import InvalidEventError, UndecodableEventError

REPO = Path(__file__).resolve().parents[2]
TOPICS = ("purchases", "feedback", "support", "privacy", "marketing")
TYPES = {
    "purchases": ("purchase", "refund"),
    "feedback": ("feedback",),
    "support": ("support", "cancellation"),
    "privacy": ("erasure", "consent"),
    "marketing": ("touch", "offer", "open", "click"),
}
CONTRACT = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI is stable
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- the schema side -------------------------------------------------------------------------


@functools.cache
def _schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_path(REPO / "schemas", kind).read_text())
    return loaded


@functools.cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as ECMA-262 reads it. Our patterns end in ``$`` and use it nowhere else, nor
    ``\\d`` (ASCII in ECMA-262, any Unicode digit in Python): refuse any other, rather than
    translate it wrongly."""
    if not pattern.endswith("$") or "$" in pattern[:-1] or "\\d" in pattern:
        raise AssertionError(f"the contract test cannot read {pattern!r} the ECMA-262 way")
    return re.compile(pattern[:-1] + r"\Z")


def _ecma_pattern(
    validator: Validator, pattern: str, instance: object, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(str(instance)):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


ContractValidator = extend(Draft202012Validator, {"pattern": _ecma_pattern})


@functools.cache
def _validator(kind: str) -> Validator:
    return ContractValidator(_schema(kind), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _refuse_constant(literal: str) -> object:
    raise ValueError(f"{literal} is not JSON")


def schema_verdict(kind: str, raw: bytes) -> str | None:
    """``None`` if the topic's published schema accepts ``raw``, else why not."""
    try:
        instance = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as error:
        return f"not JSON: {error}"
    first = next(iter(_validator(kind).iter_errors(instance)), None)
    return None if first is None else f"{list(first.absolute_path)}: {first.message}"


def decoder_verdict(kind: str, raw: bytes) -> str | None:
    """``None`` if the decoder accepts ``raw`` on the topic, else its reason code and reason."""
    try:
        if kind == "privacy":
            decode_privacy_event(raw)
        elif kind == "marketing":
            decode_marketing_event(raw)
        else:
            decode_event(raw, topic=f"crm.{kind}")
    except InvalidEventError as error:
        return f"{error.code}: {error.reason}"
    return None


def assert_same_verdict(kind: str, fields: object) -> None:
    raw = json.dumps(fields).encode()
    by_schema, by_decoder = schema_verdict(kind, raw), decoder_verdict(kind, raw)
    event("accepted" if by_decoder is None else "refused")
    assert (by_schema is None) == (by_decoder is None), (
        f"crm.{kind} disagrees on {raw!r}\n"
        f"  schema:  {by_schema or 'accepts'}\n  decoder: {by_decoder or 'accepts'}"
    )


# -- valid events ----------------------------------------------------------------------------

ID_CHARACTERS = "ABCXYZabcxyz0189_.:@-"
identifiers = st.text(ID_CHARACTERS, min_size=1, max_size=128)
money = st.one_of(
    st.floats(0, 1e9),
    st.integers(0, 10**9),
    st.sampled_from([0, 0.0, -0.0, 1e9, 1_000_000_000]),
)
optional_money = st.one_of(st.none(), money)
channels = st.sampled_from(["web", "mobile", "store", "phone", "email", "chat"])
currencies = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
free_text = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["x" * 500, "é" * 500]))


def integral(values: st.SearchStrategy[int]) -> st.SearchStrategy[int | float]:
    """An integer as ``3`` or ``3.0``: both are JSON Schema integers."""
    return st.one_of(values, values.map(float))


EVENT_YEARS = st.one_of(st.integers(1900, 2999), st.sampled_from([1900, 2999]))
ANY_YEARS = st.one_of(st.integers(1, 9999), st.sampled_from([1, 1899, 1900, 2999, 3000, 9999]))
CLOCKS = st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
FRACTIONS = st.sampled_from(["", ".0", ".5", ".123456", ".123456789"])
OFFSETS = st.one_of(
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "-23:59"]),
    st.builds(
        "{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59)
    ),
)


@st.composite
def event_times(draw: st.DrawFn, years: st.SearchStrategy[int] = EVENT_YEARS) -> str:
    """An RFC 3339 date-time dated in ``years`` (in its own offset; by default the accepted
    1900-2999), in any of its spellings."""
    year, month, day = draw(years), draw(st.integers(1, 12)), draw(st.integers(1, 31))
    day = min(day, calendar.monthrange(year, month)[1])
    hour, minute, second = draw(CLOCKS)
    return (
        f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from('Tt'))}"
        f"{hour:02d}:{minute:02d}:{second:02d}{draw(FRACTIONS)}{draw(OFFSETS)}"
    )


def _optional(fields: dict[str, Any], draw: st.DrawFn, **choices: st.SearchStrategy[Any]) -> None:
    """Add each of ``choices`` to ``fields``, or leave it out (its default then applies)."""
    for name, values in choices.items():
        if draw(st.booleans()):
            fields[name] = draw(values)


@st.composite
def valid_events(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A valid event for the topic ``kind``, written from the rules (not from the schema)."""
    event_type = draw(st.sampled_from(TYPES[kind]))
    fields: dict[str, Any] = {
        "type": event_type,
        "event_id": draw(identifiers),
        "customer_id": draw(identifiers),
        "occurred_at": draw(event_times()),
    }
    _optional(fields, draw, schema_version=st.sampled_from([1, 1.0]))
    if event_type in ("purchase", "refund"):
        fields |= {"order_id": draw(identifiers), "amount": draw(money)}
        _optional(fields, draw, currency=currencies)
    if event_type == "purchase":
        fields |= {"items": draw(integral(st.integers(1, 10_000))), "channel": draw(channels)}
        _optional(fields, draw, cost=optional_money, acquisition_cost=optional_money)
    elif event_type in ("refund", "cancellation"):
        _optional(fields, draw, reason=free_text)
    elif event_type == "feedback":
        scale, (low, high) = draw(st.sampled_from([("csat", (1, 5)), ("nps", (0, 10))]))
        fields |= {
            "scale": scale,
            "rating": draw(integral(st.integers(low, high))),
            "category": draw(st.sampled_from(["product", "service", "brand"])),
        }
        _optional(fields, draw, comment=st.one_of(free_text, st.just("x" * 2000)))
    elif event_type == "support":
        fields |= {
            "ticket_id": draw(identifiers),
            "action": draw(st.sampled_from(["opened", "first_response", "resolved", "escalated"])),
            "channel": draw(channels),
            "category": draw(st.sampled_from(["inquiry", "complaint", "feedback"])),
        }
        _optional(fields, draw, priority=st.sampled_from(["low", "normal", "high", "urgent"]))
    elif event_type == "erasure":
        _optional(fields, draw, regulation=st.sampled_from(["gdpr", "ccpa", "other"]))
    elif event_type in ("touch", "offer"):
        fields |= {
            "touch_id": draw(identifiers),
            "campaign_id": draw(identifiers),
            "arm": draw(identifiers),
            "channel": draw(
                st.sampled_from(["email", "sms", "push", "in_app", "web", "mail", "phone"])
            ),
        }
        _optional(fields, draw, cost=money, currency=currencies)
        if event_type == "offer":
            fields["alert_id"] = draw(st.text(ID_CHARACTERS, min_size=1, max_size=256))
    elif event_type in ("open", "click"):
        fields["touch_id"] = draw(identifiers)
    return fields


# -- broken events ---------------------------------------------------------------------------


@st.composite
def time_like_strings(draw: st.DrawFn) -> str:
    """Strings close to an event time: other spellings, impossible dates, edge years and
    offsets that put the instant outside the representable range."""
    year = draw(st.one_of(st.integers(0, 9999), st.sampled_from([1, 1899, 1900, 2999, 3000, 9999])))
    month = draw(st.integers(0, 13))
    day = draw(st.integers(0, 32))
    hour, minute, second = draw(
        st.tuples(st.integers(0, 24), st.integers(0, 60), st.integers(0, 60))
    )
    separator = draw(st.sampled_from(["T", "t", " ", "_"]))
    seconds = draw(st.sampled_from([f":{second:02d}", ""]))
    fraction = draw(st.sampled_from(["", ".5", ",5", ".", ".1234567891234"]))
    offset = draw(
        st.sampled_from(
            ["Z", "z", "", "+14:00", "-12:00", "+23:59", "-23:59", "+24:00", "+0200", "+02", " Z"]
        )
    )
    tail = draw(st.sampled_from(["", "", "\n", " "]))
    return (
        f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}"
        f"{seconds}{fraction}{offset}{tail}"
    )


def _strings_in(schema: object) -> Iterator[str]:
    """Every string ``const`` and ``enum`` value of a schema (the valid words, to swap in)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "const" and isinstance(value, str):
                yield value
            elif key == "enum":
                yield from (word for word in value if isinstance(word, str))
            else:
                yield from _strings_in(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _strings_in(item)


def _field_names(schema: object) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                yield from value
            yield from _field_names(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _field_names(item)


@functools.cache
def any_value(kind: str) -> st.SearchStrategy[Any]:
    """Anything a producer might put in a field, valid there or not."""
    words = sorted(set(_strings_in(_schema(kind))))
    numbers = st.one_of(
        st.integers(-(10**12), 10**12),
        st.integers(-20, 20).map(float),  # integral floats: 3.0 for an integer
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(
            [0, -0.0, 1, 5, 6, 10, 11, 10_000, 10_001, 1e9, 1e9 + 1, 1_000_000_001, 10**30, 4.5]
        ),
        st.integers(1_700_000_000, 1_800_000_000),  # Unix times
    )
    strings = st.one_of(
        st.sampled_from(words),
        st.sampled_from([w.upper() for w in words] + ["", "wishlist", "USD", "usd", "EURO"]),
        numbers.map(str),  # "10.5", "3", "1784542800"
        st.sampled_from(["x" * 128, "x" * 129, "x" * 501, "x" * 2001, "has space", "c1\n", "é"]),
        event_times(ANY_YEARS),
        time_like_strings(),
        st.text(max_size=10),
    )
    scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=2),
        st.dictionaries(st.text(max_size=3), scalars, max_size=2),
    )


@functools.cache
def _mutable_fields(kind: str) -> list[str]:
    """Every field of the topic's event types, and one no event has."""
    return sorted(set(_field_names(_schema(kind))) | {"colour"})


@st.composite
def broken_events(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A valid event with one or two fields removed, replaced or added."""
    fields = draw(valid_events(kind))
    names = _mutable_fields(kind)
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(names))
        if name in fields and draw(st.integers(0, 2)) == 0:
            del fields[name]
        else:
            fields[name] = draw(any_value(kind))
    return fields


# -- the properties --------------------------------------------------------------------------


def test_the_schemas_are_draft_2020_12_and_date_time_formats_are_checked() -> None:
    # Without rfc3339-validator, jsonschema skips the date-time format silently.
    assert not Draft202012Validator.FORMAT_CHECKER.conforms("2026-02-30T00:00:00Z", "date-time")
    for kind in TOPICS:
        assert _schema(kind)["$schema"] == DIALECT
        Draft202012Validator.check_schema(_schema(kind))


@pytest.mark.parametrize("kind", TOPICS)
@CONTRACT
@given(data=st.data())
def test_valid_events_are_accepted_by_the_schema_and_the_decoder(
    kind: str, data: st.DataObject
) -> None:
    raw = json.dumps(data.draw(valid_events(kind))).encode()

    assert schema_verdict(kind, raw) is None
    assert decoder_verdict(kind, raw) is None


@pytest.mark.parametrize("kind", TOPICS)
@settings(CONTRACT, max_examples=200)
@given(data=st.data())
def test_the_schema_and_the_decoder_agree_on_broken_events(kind: str, data: st.DataObject) -> None:
    assert_same_verdict(kind, data.draw(broken_events(kind)))


@pytest.mark.parametrize("kind", TOPICS)
@settings(CONTRACT, max_examples=75)
@given(data=st.data())
def test_the_schema_and_the_decoder_agree_on_any_event_time(kind: str, data: st.DataObject) -> None:
    fields = data.draw(valid_events(kind))
    fields["occurred_at"] = data.draw(
        st.one_of(event_times(), event_times(ANY_YEARS), time_like_strings())
    )

    assert_same_verdict(kind, fields)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "0000-01-01T00:00:00Z",
        "1899-12-31T23:59:59Z",
        "3000-01-01T00:00:00Z",
    ],
)
def test_a_time_outside_the_accepted_years_is_refused_by_both(occurred_at: str) -> None:
    fields = {"type": "consent", "event_id": "k1", "customer_id": "c1", "occurred_at": occurred_at}
    raw = json.dumps(fields).encode()

    assert schema_verdict("privacy", raw) is not None
    assert decoder_verdict("privacy", raw) is not None


# -- what a JSON Schema cannot say -------------------------------------------------------------


def test_outside_the_schema_a_message_over_64_kib_is_refused_whatever_it_holds() -> None:
    fields = {"type": "consent", "event_id": "k1", "customer_id": "c1"}
    raw = json.dumps(fields | {"occurred_at": "2026-01-01T00:00:00Z"}).encode()
    padded = raw[:-1] + b" " * (MAX_MESSAGE_BYTES + 1 - len(raw)) + b"}"

    assert schema_verdict("privacy", padded) is None
    with pytest.raises(UndecodableEventError) as caught:
        decode_privacy_event(padded)
    assert caught.value.code == "too_large"


def test_outside_the_schema_a_lone_surrogate_is_not_json_the_decoder_reads() -> None:
    # RFC 8259 leaves such a string's meaning open; I-JSON (RFC 7493) forbids it. Python's
    # json reads it into a str, so the schema validator sees a valid comment.
    raw = (
        b'{"type": "feedback", "event_id": "e1", "customer_id": "c1",'
        b' "occurred_at": "2026-01-05T10:00:00Z", "rating": 5, "scale": "csat",'
        b' "category": "service", "comment": "\\ud800"}'
    )

    assert schema_verdict("feedback", raw) is None
    with pytest.raises(UndecodableEventError) as caught:
        decode_event(raw, topic="crm.feedback")
    assert caught.value.code == "not_json"
