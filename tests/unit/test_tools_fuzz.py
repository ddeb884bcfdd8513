"""The operator tools never crash on input: ``streamcrm replay`` and ``streamcrm deadletter``.

One generator of message-like bytes (random binary, random JSON, valid records cut, garbled,
re-encoded or given wrong fields) feeds both tools. Each reports what it cannot use and
carries on with the rest; the only exceptions that escape are the documented ones (a history
file refused as a whole: ``ValueError`` or ``OSError``, which ``streamcrm replay`` turns into
exit status 2), and the exit status follows the documented rule: 0 when every line was
valid, 1 when some were rejected, 2 when the file was refused.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamcrm.cli.deadletters import (
    format_letters,
    format_summary,
    parse_letters,
    parse_position,
    republish,
    summarise,
)
from streamcrm.cli.main import main
from streamcrm.cli.replay import (
    CSV_COLUMNS,
    ReadResult,
    format_report,
    parse_history,
    plan_replay,
    read_history,
    write_rejections,
)
from streamcrm.core.events import decode_event, decode_privacy_event
from streamcrm.core.records import DeadLetter
from streamcrm.errors import InvalidEventError
from streamcrm.settings import Settings

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

VALID_RECORDS: tuple[dict[str, object], ...] = (
    {
        "type": "purchase",
        "event_id": "p1",
        "customer_id": "c1",
        "occurred_at": "2026-01-05T10:00:00Z",
        "order_id": "o1",
        "amount": 12.5,
        "items": 2,
        "channel": "web",
    },
    {
        "type": "refund",
        "event_id": "r1",
        "customer_id": "c1",
        "occurred_at": "2026-01-06T10:00:00Z",
        "order_id": "o1",
        "amount": 2.5,
    },
    {
        "type": "feedback",
        "event_id": "f1",
        "customer_id": "c2",
        "occurred_at": "2026-01-07T10:00:00Z",
        "rating": 9,
        "scale": "nps",
        "category": "brand",
    },
    {
        "type": "support",
        "event_id": "s1",
        "customer_id": "c3",
        "occurred_at": "2026-01-08T10:00:00Z",
        "ticket_id": "t1",
        "action": "opened",
        "channel": "chat",
        "category": "complaint",
    },
    {
        "type": "cancellation",
        "event_id": "x1",
        "customer_id": "c3",
        "occurred_at": "2026-01-09T10:00:00+02:00",
    },
)
PRIVACY_RECORDS: tuple[dict[str, object], ...] = (
    {
        "type": "erasure",
        "event_id": "e1",
        "customer_id": "c4",
        "occurred_at": "2026-01-10T00:00:00Z",
        "regulation": "ccpa",
    },
    {
        "type": "consent",
        "event_id": "k1",
        "customer_id": "c4",
        "occurred_at": "2026-01-11T00:00:00Z",
    },
)
TOPIC_OF_TYPE = {
    "purchase": "crm.purchases",
    "refund": "crm.purchases",
    "feedback": "crm.feedback",
    "support": "crm.support",
    "cancellation": "crm.support",
    "erasure": "crm.privacy",
    "consent": "crm.privacy",
}
OVERSIZE = b'{"type": "purchase", "note": "' + b"x" * 70_000 + b'"}'
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252")


# --- the generator ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["NaN", "", "2026-13-45T99:00:00Z", "\u0000", "é", "1e999"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def garbled_records(draw: st.DrawFn, records: tuple[dict[str, object], ...]) -> bytes:
    """A valid record made wrong one way: a field dropped, added or given a random value,
    the bytes cut, flipped or spliced, or the text in another encoding."""
    record = dict(draw(st.sampled_from(records)))
    how = draw(st.sampled_from(["drop", "add", "retype", "cut", "flip", "splice", "encode"]))
    if how == "drop":
        record.pop(draw(st.sampled_from(sorted(record))))
    elif how == "add":
        record[draw(st.text(max_size=12))] = draw(json_values)
    elif how == "retype":
        record[draw(st.sampled_from(sorted(record)))] = draw(json_values)
    raw = _dumps(record)
    if how == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif how == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    elif how == "splice":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at:]
    elif how == "encode":
        raw = json.dumps(record).encode(draw(st.sampled_from(ENCODINGS)))
    return raw


def message_bytes(
    records: tuple[dict[str, object], ...] = VALID_RECORDS,
) -> st.SearchStrategy[bytes]:
    """Anything a producer or a damaged file could hand over, valid records included."""
    return st.one_of(
        st.binary(max_size=120),
        json_values.map(_dumps),
        st.sampled_from(records).map(_dumps),
        garbled_records(records),
        st.sampled_from(
            [b"", b"\n", b"\r", b"\x00", b"\xef\xbb\xbf", b'"', b"[" * 300 + b"]" * 300, OVERSIZE]
        ),
    )


# --- replay -----------------------------------------------------------------------------------


_BOM = "\ufeff".encode()


def _line_is_valid(line: bytes) -> bool:
    try:
        decode_event(line.strip())
    except InvalidEventError:
        return False
    return True


@FUZZ
@given(lines=st.lists(message_bytes(), max_size=12))
def test_replay_reads_any_json_lines_reporting_each_bad_line_and_keeping_every_good_one(
    lines: list[bytes],
) -> None:
    # The lines as a file's reader hands them over: split at newlines only; a byte-order
    # mark opening the file is not part of its first line.
    split = b"\n".join(lines).split(b"\n")
    as_read = [split[0].removeprefix(_BOM), *split[1:]]

    history = parse_history(split, "jsonl")

    good = {n for n, line in enumerate(as_read, start=1) if _line_is_valid(line)}
    bad = {n for n, line in enumerate(as_read, start=1) if line.strip() and n not in good}
    assert len(history.events) == len(good)
    assert [rejection.line for rejection in history.rejections] == sorted(bad)
    assert all(rejection.reason for rejection in history.rejections)
    _report_and_plan(history)


def _csv_row(record: dict[str, object]) -> bytes:
    cells = io.StringIO()
    csv.writer(cells, lineterminator="").writerow([record.get(column) for column in CSV_COLUMNS])
    return cells.getvalue().encode()


@FUZZ
@given(
    rows=st.lists(
        st.one_of(st.sampled_from(VALID_RECORDS).map(_csv_row), message_bytes()), max_size=12
    )
)
def test_replay_reads_any_csv_rows_keeping_every_good_row_when_the_bad_ones_open_no_quote(
    rows: list[bytes],
) -> None:
    lines = [",".join(CSV_COLUMNS).encode(), *b"\n".join(rows).split(b"\n")]

    history = parse_history(lines, "csv")

    assert all(rejection.line >= 2 and rejection.reason for rejection in history.rejections)
    good_rows = [row for row in rows if row in {_csv_row(r) for r in VALID_RECORDS}]
    if not any(b'"' in line or b"\r" in line for line in lines if line not in good_rows):
        # No bad row can swallow the next ones (a quote opens a cell across lines), so every
        # good row is an event of its own.
        assert len(history.events) >= len(good_rows)
    _report_and_plan(history)


@FUZZ
@given(
    content=st.one_of(
        message_bytes(),
        st.lists(message_bytes(), max_size=8).map(b"\n".join),
        st.lists(message_bytes(), max_size=8).map(
            lambda rows: b"\n".join([b"type,event_id,customer_id,occurred_at", *rows])
        ),
    ),
    name=st.sampled_from(["h.jsonl", "h.csv", "h.ndjson", "h.json"]),
    packing=st.sampled_from(["plain", "gzip", "gzip-cut", "fake-gzip"]),
)
def test_replay_of_any_file_reads_it_or_refuses_it_with_a_documented_error_and_exit_status(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, name: str, packing: str
) -> None:
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    if packing == "plain":
        path, data = folder / name, content
    else:
        path = folder / f"{name}.gz"
        data = gzip.compress(content, mtime=0) if packing != "fake-gzip" else content
        if packing == "gzip-cut":
            data = data[: len(data) // 2]
    path.write_bytes(data)

    status, out, err = _run(["replay", "--dry-run", str(path)])

    try:
        history = read_history(path)
    except (ValueError, OSError) as error:
        assert str(error)  # refused, with its reason
        assert (status, out) == (2, "") and err.startswith("streamcrm: replay ")
        return
    assert status == (1 if history.rejections else 0)
    assert f"{len(history.rejections):,} rejected" in out
    _report_and_plan(history)
    write_rejections(folder / "rejects.jsonl", history.rejections)


def _report_and_plan(history: ReadResult) -> None:
    summary = plan_replay(history.events, Settings())
    assert summary.events == len(history.events)
    report = format_report(Path("h.jsonl"), history, summary, dry_run=True)
    report.encode("utf-8")  # printable as it is


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


# --- dead letters -----------------------------------------------------------------------------


def _letter(raw: bytes, topic: str, offset: int, key: bytes | None = b"c1") -> DeadLetter:
    return DeadLetter.of(
        raw,
        source_topic=topic,
        partition=0,
        offset=offset,
        key=key,
        error_type="EventValidationError",
        reason_code="schema:missing",
        reason="a reason",
    )


letter_fields = st.fixed_dictionaries(
    {
        "source_topic": st.sampled_from(sorted(set(TOPIC_OF_TYPE.values()))) | st.text(max_size=8),
        "partition": st.integers(-1, 3),
        "offset": st.integers(-1, 2**63),
        "key": st.none() | st.text(max_size=8),
        "error_type": st.text(max_size=8),
        "reason": st.text(max_size=20),
        "raw": st.text(max_size=40) | message_bytes().map(lambda b: base64.b64encode(b).decode()),
        "raw_size": st.integers(-1, 100),
    },
    optional={
        "reason_code": st.text(max_size=8),
        "raw_encoding": st.sampled_from(["utf-8", "base64", "utf-16"]),
        "raw_truncated": st.booleans(),
        "schema_version": st.integers(0, 2),
    },
)


@st.composite
def dead_letter_topic_values(draw: st.DrawFn) -> tuple[bytes | None, bool]:
    """A record value on the dead-letter topic, and whether it is a letter as a worker wrote
    it: a genuine letter, one damaged, a letter-shaped object with fields of any value, a
    tombstone or any bytes at all."""
    how = draw(st.sampled_from(["genuine", "damaged", "shaped", "tombstone", "bytes"]))
    if how == "tombstone":
        return None, False
    if how == "bytes":
        return draw(message_bytes()), False
    if how == "shaped":
        return _dumps(draw(letter_fields)), False
    record = draw(st.sampled_from(VALID_RECORDS + PRIVACY_RECORDS))
    raw = draw(st.sampled_from([_dumps(record), draw(message_bytes())]))
    genuine = _letter(raw, TOPIC_OF_TYPE[str(record["type"])], draw(st.integers(0, 99)))
    value = genuine.model_dump_json().encode()
    if how == "damaged":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + draw(st.binary(max_size=4)) + value[at + 1 :]
    return value, how == "genuine"


def _passes_validation(letter: DeadLetter) -> bool:
    decode: Callable[[bytes], object] = (
        decode_privacy_event
        if letter.source_topic.rsplit(".", 1)[-1] == "privacy"
        else lambda raw: decode_event(raw, letter.source_topic)
    )
    try:
        decode(letter.payload())
    except InvalidEventError:
        return False
    return True


@FUZZ
@given(drawn=st.lists(dead_letter_topic_values(), max_size=10))
def test_deadletter_reads_any_topic_content_counting_what_is_no_letter_and_republishes_the_rest(
    drawn: list[tuple[bytes | None, bool]],
) -> None:
    values = [value for value, _ in drawn]

    letters, unreadable = parse_letters(values)

    assert len(letters) + unreadable == sum(value is not None for value in values)
    genuine = [DeadLetter.model_validate_json(value) for value, ok in drawn if ok and value]
    assert len(letters) >= len(genuine) and all(letter in letters for letter in genuine)
    format_summary(summarise(letters), len(letters)).encode("utf-8")
    format_letters(letters).encode("utf-8")

    sent: list[tuple[str, bytes | None, bytes]] = []
    report = republish(letters, lambda topic, key, value: sent.append((topic, key, value)))

    whole = [letter for letter in letters if not letter.raw_truncated]
    assert sent == [
        (letter.source_topic, letter.key.encode() if letter.key else None, letter.payload())
        for letter in whole
    ]
    assert (report.sent, report.truncated) == (len(whole), len(letters) - len(whole))
    assert report.now_valid == sum(_passes_validation(letter) for letter in whole)


@FUZZ
@given(fields=st.lists(letter_fields, max_size=6))
def test_republish_sends_or_counts_every_letter_whatever_its_fields_hold(
    fields: list[dict[str, object]],
) -> None:
    letters = []
    for one in fields:
        with contextlib.suppress(ValueError):  # pydantic's ValidationError: not a letter
            letters.append(DeadLetter.model_validate(one))

    report = republish(letters, lambda topic, key, value: None)

    assert report.sent + report.truncated + report.damaged == len(letters)
    assert 0 <= report.now_valid <= report.sent


@FUZZ
@given(record=st.sampled_from(PRIVACY_RECORDS + VALID_RECORDS))
def test_a_republished_valid_event_counts_as_passing_validation_on_every_topic(
    record: dict[str, object],
) -> None:
    letter = _letter(_dumps(record), TOPIC_OF_TYPE[str(record["type"])], 1)

    report = republish([letter], lambda topic, key, value: None)

    assert (report.sent, report.now_valid) == (1, 1)


@FUZZ
@given(text=st.text(max_size=30) | st.from_regex(r"[a-z.]{1,8}:-?[0-9]{1,3}:[0-9]{1,20}"))
def test_a_position_is_parsed_or_refused_with_a_value_error(text: str) -> None:
    try:
        topic, partition, offset = parse_position(text)
    except ValueError:
        return
    assert f"{topic}:{partition}:{offset}".count(":") >= 2
