"""Dead letters: exact payloads, reason codes, summaries and re-publishing after a fix."""

from __future__ import annotations

import json

import pytest

from streamcrm.cli.deadletters import (
    LetterFilter,
    parse_letters,
    parse_position,
    republish,
    summarise,
)
from streamcrm.core.events import decode_event
from streamcrm.core.records import MAX_DEADLETTER_RAW_BYTES, DeadLetter
from streamcrm.errors import InvalidEventError

VALID = json.dumps(
    {
        "type": "purchase",
        "event_id": "e1",
        "customer_id": "c1",
        "occurred_at": "2026-01-05T10:00:00Z",
        "order_id": "o1",
        "amount": 12.5,
        "items": 1,
        "channel": "web",
    }
).encode()


def letter_for(raw: bytes, topic: str = "crm.purchases", offset: int = 0) -> DeadLetter:
    try:
        decode_event(raw, topic)
    except InvalidEventError as error:
        return DeadLetter.of(
            raw,
            source_topic=topic,
            partition=1,
            offset=offset,
            key=b"c1",
            error_type=type(error).__name__,
            reason_code=error.code,
            reason=error.reason,
        )
    raise AssertionError("expected the payload to be invalid")


def test_a_utf8_payload_is_kept_as_text_and_comes_back_byte_for_byte() -> None:
    raw = '{"type": "purchase", "note": "café"'.encode()
    letter = letter_for(raw)
    assert letter.raw_encoding == "utf-8"
    assert letter.payload() == raw
    assert letter.reason_code == "not_json"


def test_a_payload_that_is_not_utf8_is_kept_in_base64_and_comes_back_byte_for_byte() -> None:
    raw = b"\xff\xfe\x00garbage"
    letter = letter_for(raw)
    assert letter.raw_encoding == "base64"
    assert letter.payload() == raw


def test_an_oversized_payload_is_cut_marked_and_counted_as_too_large() -> None:
    raw = b'{"x": "' + b"a" * 100_000 + b'"}'
    letter = letter_for(raw)
    assert (letter.reason_code, letter.raw_truncated, letter.raw_size) == (
        "too_large",
        True,
        len(raw),
    )
    assert len(letter.payload()) == MAX_DEADLETTER_RAW_BYTES


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"amount": -1}, "schema:greater_than_equal"),
        ({"schema_version": 2}, "unknown_schema_version"),
        ({"type": "teleport"}, "unknown_event_type"),
        ({"loyalty_tier": "gold"}, "schema:extra_forbidden"),
        ({"items": "3"}, "schema:int_type"),
    ],
)
def test_schema_errors_get_stable_reason_codes(change: dict[str, object], code: str) -> None:
    raw = json.dumps({**json.loads(VALID), **change}).encode()
    assert letter_for(raw).reason_code == code


def test_non_finite_amounts_are_rejected_as_not_finite() -> None:
    raw = VALID.replace(b"12.5", b"NaN")
    assert letter_for(raw).reason_code == "schema:finite_number"


def test_deep_nesting_is_rejected_before_it_can_exhaust_the_stack() -> None:
    raw = VALID[:-1] + b', "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    assert letter_for(raw).reason_code == "too_deep"


def test_summaries_count_letters_by_reason_most_frequent_first() -> None:
    letters = [letter_for(b"{"), letter_for(b"[1]"), letter_for(b"nope")]
    summary = summarise(letters)
    assert [(s.reason_code, s.count) for s in summary] == [("not_json", 2), ("not_object", 1)]


def test_filters_choose_letters_by_reason_topic_and_position() -> None:
    first, second = letter_for(b"{", offset=3), letter_for(b"[1]", "crm.feedback", offset=4)

    def chosen(by: LetterFilter) -> list[int]:
        return [letter.offset for letter in (first, second) if by.matches(letter)]

    assert chosen(LetterFilter("not_json")) == [3]
    assert chosen(LetterFilter(source_topic="crm.feedback")) == [4]
    assert chosen(LetterFilter(positions=frozenset({parse_position("crm.purchases:1:3")}))) == [3]


def test_republish_sends_whole_payloads_to_their_source_topic_with_their_key() -> None:
    still_invalid = letter_for(VALID.replace(b"12.5", b"-1"))
    cut = letter_for(b'{"x": "' + b"a" * 100_000 + b'"}')
    sent: list[tuple[str, bytes | None, bytes]] = []

    report = republish([still_invalid, cut], lambda t, k, v: sent.append((t, k, v)))

    assert sent == [("crm.purchases", b"c1", still_invalid.payload())]
    assert (report.sent, report.now_valid, report.truncated) == (1, 0, 1)


def test_records_on_the_topic_that_are_not_dead_letters_are_counted_and_skipped() -> None:
    letter = letter_for(b"{", offset=7)
    values = [b"\xff\x00 junk", letter.model_dump_json().encode(), None, b"[]", b'{"reason": 1}']

    letters, unreadable = parse_letters(values)

    assert letters == [letter]
    assert unreadable == 3  # the tombstone (None) is neither


@pytest.mark.parametrize(
    "change",
    [
        {"raw": "abc"},  # not base64 (no padding)
        {"raw": "é5Q=="},  # not ASCII
        {"raw_size": 3},  # an uncut payload of another size than recorded
    ],
)
def test_a_letter_whose_payload_does_not_come_back_whole_is_skipped_not_republished(
    change: dict[str, object],
) -> None:
    whole = letter_for(b"\xff\xfe\x00garbage")
    damaged = whole.model_copy(update=change).model_dump_json().encode()

    letters, unreadable = parse_letters([damaged, whole.model_dump_json().encode()])

    assert (letters, unreadable) == ([whole], 1)


def test_republish_counts_a_letter_it_cannot_turn_back_into_bytes_instead_of_crashing() -> None:
    damaged = letter_for(b"\xff{").model_copy(update={"raw": "abc"})
    sent: list[tuple[str, bytes | None, bytes]] = []

    report = republish([damaged], lambda t, k, v: sent.append((t, k, v)))

    assert (sent, report.sent, report.damaged) == ([], 0, 1)


def test_a_republished_erasure_or_consent_passes_validation_on_the_privacy_topic() -> None:
    erasure = {
        "type": "erasure",
        "event_id": "e1",
        "customer_id": "c1",
        "occurred_at": "2026-01-05T10:00:00Z",
    }
    letters = [
        DeadLetter.of(
            json.dumps(fields).encode(),
            source_topic="crm.privacy",
            partition=0,
            offset=offset,
            key=b"c1",
            error_type="MessageKeyError",
            reason_code="key_mismatch",
            reason="keyed by another customer",
        )
        for offset, fields in enumerate(
            [erasure, {**erasure, "type": "consent"}, json.loads(VALID)]
        )
    ]

    report = republish(letters, lambda t, k, v: None)

    assert (report.sent, report.now_valid) == (3, 2)  # a purchase is no privacy event
