"""Replay a history of events from a file through the input topics, in event-time order.

A history file holds events of any type, one per JSON line or one per CSV row:

=========================================  ==================================================
file name                                  format
=========================================  ==================================================
``*.jsonl``, ``*.ndjson``, ``*.json``      JSON lines: one event object per line
``*.csv``                                  a header row naming the fields, then one event a row
any of the above + ``.gz``                 the same, gzip-compressed
=========================================  ==================================================

In CSV a ``type`` column picks the event type and an empty cell means the field is absent, so
an empty string cannot be told from a missing value (it is read back as absent). Cells of the
numeric fields (``amount``, ``cost``: numbers; ``items``, ``rating``, ``schema_version``:
integers) are converted before validation; everything else stays text.

Every line or row is validated by :func:`streamcrm.core.events.decode_event`, the same edge check
the worker runs. An invalid line is not fatal: it becomes a :class:`Rejection` with its line
number, and the valid events are still replayed. They are sent sorted by
``(occurred_at, event_id)``, so each customer's events reach each topic in event-time order,
as they did live (the worker counts events older than what it has seen as late).

Reading and sorting are pure functions of the lines; :func:`replay_history` publishes through
whatever producer it is given.

>>> from streamcrm.settings import Settings
>>> lines = [
...     b'{"type": "cancellation", "event_id": "e2", "customer_id": "c1",'
...     b' "occurred_at": "2026-01-09T10:00:00Z"}',
...     b'{"type": "refund", "event_id": "e1", "customer_id": "c1", "amount": 5}',
...     b'{"type": "feedback", "event_id": "e3", "customer_id": "c1",'
...     b' "occurred_at": "2026-01-05T10:00:00Z", "rating": 4, "scale": "csat",'
...     b' "category": "brand"}',
... ]
>>> history = parse_history(lines, "jsonl")
>>> [event.event_id for event in history.events], history.out_of_order
(['e3', 'e2'], 1)
>>> history.rejections[0].line, history.rejections[0].reason
(2, 'refund.occurred_at: Field required; refund.order_id: Field required')
>>> plan_replay(history.events, Settings()).by_topic
{'crm.feedback': 1, 'crm.support': 1}
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, Protocol, cast, get_args

from streamcrm.core.events import Event, decode_event
from streamcrm.errors import InvalidEventError
from streamcrm.services.kafka import event_topic, produce_events
from streamcrm.settings import Settings

__all__ = [
    "CSV_COLUMNS",
    "HistoryFormat",
    "Producer",
    "ReadResult",
    "Rejection",
    "ReplaySummary",
    "format_report",
    "history_format",
    "parse_history",
    "plan_replay",
    "read_history",
    "replay_history",
    "sort_by_event_time",
    "write_history",
    "write_rejections",
]

HistoryFormat = Literal["jsonl", "csv"]

_FORMAT_OF_SUFFIX: dict[str, HistoryFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
_BOM = "\ufeff"
_CSV_FLOATS = frozenset({"amount", "cost"})
_CSV_INTS = frozenset({"items", "rating", "schema_version"})
_PROGRESS_EVERY = 1000  # events handed to the producer between two progress reports
_REPORTED_REJECTIONS = 5


def _event_models() -> tuple[Any, ...]:
    union = get_args(Event)[0]  # Event is Annotated[A | B | ..., Field(discriminator=...)]
    return get_args(union)


def _csv_columns() -> tuple[str, ...]:
    """``type``, then every field of every event type in declaration order, once."""
    columns = ["type"]
    for model in _event_models():
        for name in model.model_fields:
            if name not in columns:
                columns.append(name)
    return tuple(columns)


CSV_COLUMNS: tuple[str, ...] = _csv_columns()
"""The header :func:`write_history` writes: the union of the event types' fields."""


class Rejection(NamedTuple):
    """A line (or CSV row, by its first line) that did not become an event, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class ReadResult:
    """The valid events of a history, in event-time order, and the lines that were not.

    Attributes
    ----------
    events : tuple of Event
        The valid events, sorted stably by ``(occurred_at, event_id)``.
    rejections : tuple of Rejection
        The invalid lines, in file order.
    out_of_order : int
        Valid events that came in the file after an event with a later ``occurred_at``.
    """

    events: tuple[Event, ...]
    rejections: tuple[Rejection, ...]
    out_of_order: int

    @property
    def records(self) -> int:
        """Lines (or CSV rows) read, valid or not; blank lines do not count."""
        return len(self.events) + len(self.rejections)


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay sent (or, planned, would send) and how it went.

    Attributes
    ----------
    events : int
        Events handed to the producer (or planned).
    by_type, by_topic : dict of str to int
        Those events counted by event type and by topic.
    first_event_at, last_event_at : datetime or None
        The event-time span; ``None`` when there are no events.
    failed : int
        Events the broker did not acknowledge.
    first_failure : str or None
        Why the first of those failed.
    elapsed_s : float
        Wall-clock seconds from the first send until the producer was flushed.
    """

    events: int
    by_type: dict[str, int]
    by_topic: dict[str, int]
    first_event_at: datetime | None
    last_event_at: datetime | None
    failed: int = 0
    first_failure: str | None = None
    elapsed_s: float = 0.0

    @property
    def published(self) -> int:
        """Events the broker acknowledged."""
        return self.events - self.failed

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` a replay uses (tests pass a fake)."""

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> Any: ...

    def flush(self) -> Any: ...


# --- reading --------------------------------------------------------------------------------


def history_format(path: Path) -> tuple[HistoryFormat, bool]:
    """The format of a history file from its suffixes, and whether it is gzip-compressed.

    >>> history_format(Path("events.csv.gz"))
    ('csv', True)
    >>> history_format(Path("events.txt"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cannot tell the format of events.txt from its name: use .jsonl, ... or .csv, ...
    """
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes.pop()
    found = _FORMAT_OF_SUFFIX.get(suffixes[-1]) if suffixes else None
    if found is None:
        *others, last = _FORMAT_OF_SUFFIX
        known = f"{', '.join(others)} or {last}"
        raise ValueError(
            f"cannot tell the format of {path.name} from its name: use {known},"
            " optionally followed by .gz"
        )
    return found, compressed


def read_history(path: Path) -> ReadResult:
    """Read and validate a history file; see the module docstring for the formats.

    Raises
    ------
    ValueError
        If the name has no known suffix, a CSV file has no usable header, or a gzip file is
        corrupt or truncated.
    OSError
        If the file cannot be read (``gzip.BadGzipFile`` if it is not gzip at all).
    """
    fmt, compressed = history_format(path)
    with _open_binary(path, compressed, "rb") as binary:
        try:
            return parse_history(binary, fmt)
        except (zlib.error, EOFError) as error:
            raise ValueError(f"{path.name} is corrupt or truncated: {error}") from error


def parse_history(lines: Iterable[bytes], fmt: HistoryFormat) -> ReadResult:
    """Validate the lines of a history (as bytes, newlines kept or not) and sort the events."""
    parsed = _parse_csv(lines) if fmt == "csv" else _parse_jsonl(lines)
    events: list[Event] = []
    rejections: list[Rejection] = []
    for outcome in parsed:
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            events.append(outcome)
    ordered, out_of_order = sort_by_event_time(events)
    return ReadResult(tuple(ordered), tuple(rejections), out_of_order)


def sort_by_event_time(events: Sequence[Event]) -> tuple[list[Event], int]:
    """``events`` sorted stably by ``(occurred_at, event_id)``, and how many were out of order.

    An event is out of order when an event before it has a later ``occurred_at``.
    """
    out_of_order = 0
    latest: datetime | None = None
    for event in events:
        if latest is not None and event.occurred_at < latest:
            out_of_order += 1
        else:
            latest = event.occurred_at
    return sorted(events, key=lambda event: (event.occurred_at, event.event_id)), out_of_order


def _parse_jsonl(lines: Iterable[bytes]) -> Iterator[Event | Rejection]:
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix(_BOM.encode())
        line = line.strip()
        if not line:
            continue
        try:
            yield decode_event(line)
        except InvalidEventError as error:
            yield Rejection(number, error.reason)


def _parse_csv(lines: Iterable[bytes]) -> Iterator[Event | Rejection]:
    bad_utf8: set[int] = set()
    reader = csv.reader(_decoded_lines(lines, bad_utf8))
    header = _csv_header(reader)
    last_line = reader.line_num
    while True:
        first_line = last_line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            last_line = reader.line_num
            yield Rejection(first_line, f"not readable as CSV: {error}")
            continue
        last_line = reader.line_num
        if not any(row):
            continue  # a blank line, or one of empty cells only
        if bad_utf8.intersection(range(first_line, last_line + 1)):
            yield Rejection(first_line, "not valid UTF-8")
        elif len(row) > len(header):
            yield Rejection(
                first_line, f"the row has {len(row)} cells but the header names {len(header)}"
            )
        else:
            try:
                yield decode_event(_csv_row_json(header, row))
            except InvalidEventError as error:
                yield Rejection(first_line, error.reason)


def _decoded_lines(lines: Iterable[bytes], bad_utf8: set[int]) -> Iterator[str]:
    """Lines as text; a line that is not UTF-8 is noted (and decoded with replacements)."""
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            bad_utf8.add(number)
            text = line.decode("utf-8", errors="replace")
        yield text.removeprefix(_BOM) if number == 1 else text


def _csv_header(reader: Iterator[list[str]]) -> list[str]:
    while True:
        try:
            header = next(reader)
        except StopIteration:
            return []
        except csv.Error as error:
            raise ValueError(f"the CSV header row is not readable as CSV: {error}") from None
        if not any(header):
            continue
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise ValueError(f"the CSV header names {', '.join(duplicates)} more than once")
        if "type" not in header:
            raise ValueError(
                "the first row of a CSV history must name the fields, including 'type'"
            )
        return header


def _csv_row_json(header: Sequence[str], row: Sequence[str]) -> bytes:
    """One CSV row as the JSON object it stands for: empty cells left out, numbers converted."""
    fields: dict[str, object] = {}
    for name, cell in zip(header, row, strict=False):
        if cell != "":
            fields[name] = _csv_value(name, cell)
    return json.dumps(fields).encode()


def _csv_value(name: str, cell: str) -> object:
    """A numeric field's cell as a number; a cell that is no number stays text for the
    validator to reject with its own reason."""
    try:
        if name in _CSV_INTS:
            return int(cell)
        if name in _CSV_FLOATS:
            number = float(cell)
            return number if math.isfinite(number) else cell
    except ValueError:
        pass
    return cell


# --- writing --------------------------------------------------------------------------------


def write_history(path: Path, events: Iterable[Event]) -> int:
    """Write events to a history file in the format its name says; return how many.

    CSV gets the header :data:`CSV_COLUMNS`. A ``.gz`` file is written with a zero
    timestamp, so the same events always give the same bytes.
    """
    fmt, compressed = history_format(path)
    written = 0
    with (
        _open_binary(path, compressed, "wb") as binary,
        io.TextIOWrapper(binary, encoding="utf-8", newline="") as text,
    ):
        if fmt == "csv":
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for event in events:
                fields = event.model_dump(mode="json")
                writer.writerow([fields.get(column) for column in CSV_COLUMNS])
                written += 1
        else:
            for event in events:
                text.write(event.model_dump_json() + "\n")
                written += 1
    return written


def write_rejections(path: Path, rejections: Iterable[Rejection]) -> int:
    """Write rejections as JSON lines ``{"line": ..., "reason": ...}``; return how many."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for rejection in rejections:
            out.write(json.dumps(rejection._asdict()) + "\n")
            written += 1
    return written


def _open_binary(path: Path, compressed: bool, mode: Literal["rb", "wb"]) -> IO[bytes]:
    if compressed:
        return cast(IO[bytes], gzip.GzipFile(path, mode, mtime=0))
    return path.open(mode)


# --- publishing -----------------------------------------------------------------------------


def plan_replay(events: Sequence[Event], settings: Settings) -> ReplaySummary:
    """What replaying ``events`` would send: counts by type and topic, and the time span."""
    by_type: Counter[str] = Counter(event.type for event in events)
    by_topic: Counter[str] = Counter(event_topic(settings, event) for event in events)
    times = [event.occurred_at for event in events]
    return ReplaySummary(
        events=len(events),
        by_type=dict(by_type),
        by_topic=dict(by_topic),
        first_event_at=min(times, default=None),
        last_event_at=max(times, default=None),
    )


def replay_history(
    events: Sequence[Event],
    settings: Settings,
    producer: Producer,
    progress: Callable[[int, int], None] | None = None,
) -> ReplaySummary:
    """Send ``events`` in the given order, keyed by customer id, to their topics; flush.

    ``progress(done, total)`` is called as events are handed to the producer, and with
    ``(total, total)`` once the producer has flushed them all.
    """
    summary = plan_replay(events, settings)
    tracked = _DeliveryTracker(producer)
    total = len(events)
    started = time.perf_counter()
    for start in range(0, total, _PROGRESS_EVERY):
        done = start + produce_events(tracked, settings, events[start : start + _PROGRESS_EVERY])
        if progress is not None and done < total:
            progress(done, total)
    producer.flush()
    elapsed_s = time.perf_counter() - started
    if progress is not None:
        progress(total, total)
    return dataclasses.replace(
        summary,
        failed=tracked.failed,
        first_failure=tracked.first_failure,
        elapsed_s=elapsed_s,
    )


class _DeliveryTracker:
    """Counts the sends the broker failed: ``flush`` waits for them but does not raise."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._lock = threading.Lock()  # errbacks run on the producer's I/O thread
        self.failed = 0
        self.first_failure: str | None = None

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> Any:
        future = self._producer.send(topic, key=key, value=value)
        add_errback = getattr(future, "add_errback", None)
        if add_errback is not None:
            add_errback(self._failed)
        return future

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if self.first_failure is None:
                self.first_failure = f"{type(error).__name__}: {error}"


# --- reporting ------------------------------------------------------------------------------


def format_report(
    source: Path,
    history: ReadResult,
    summary: ReplaySummary,
    *,
    dry_run: bool = False,
    rejects_path: Path | None = None,
) -> str:
    """The summary ``streamcrm replay`` prints: what was read, rejected and published."""
    lines = [
        f"read {history.records:,} events from {source}: {len(history.events):,} valid,"
        f" {len(history.rejections):,} rejected"
    ]
    if history.rejections:
        shown = history.rejections[:_REPORTED_REJECTIONS]
        lines.extend(f"  line {rejection.line}: {rejection.reason}" for rejection in shown)
        where = (
            f"all written to {rejects_path}" if rejects_path else "--rejects FILE writes them all"
        )
        if len(history.rejections) > len(shown):
            lines.append(f"  ... first {len(shown)} of {len(history.rejections):,}; {where}")
        elif rejects_path:
            lines.append(f"  {where}")
    lines.append(
        f"out of event-time order in the file: {history.out_of_order:,}"
        " (replayed sorted by occurred_at)"
    )
    if dry_run:
        lines.append(f"dry run: nothing published; would publish {summary.events:,} events")
    else:
        lines.append(
            f"published {summary.published:,} events in {summary.elapsed_s:.1f}s"
            f" ({summary.events_per_s:,.0f} events/s)"
        )
        if summary.failed:
            lines.append(
                f"FAILED to publish {summary.failed:,} of {summary.events:,} events"
                f" (first: {summary.first_failure})"
            )
    lines.append(f"  by topic: {_counts(summary.by_topic)}")
    lines.append(f"  by type:  {_counts(summary.by_type)}")
    if summary.first_event_at is not None and summary.last_event_at is not None:
        days = (summary.last_event_at - summary.first_event_at).total_seconds() / 86400
        lines.append(
            f"event time: {summary.first_event_at.isoformat()} .. "
            f"{summary.last_event_at.isoformat()} ({days:,.1f} days)"
        )
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items()))
