"""Replaying a history file: reading, validating, sorting, publishing and reporting it."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamcrm.cli.main import main
from streamcrm.cli.replay import (
    CSV_COLUMNS,
    Rejection,
    format_report,
    parse_history,
    plan_replay,
    read_history,
    replay_history,
    write_history,
    write_rejections,
)
from streamcrm.core.events import Event, FeedbackEvent, PurchaseEvent, RefundEvent
from streamcrm.settings import Settings
from streamcrm.sim.simulator import simulate

ALL_TYPES = {"purchase", "refund", "feedback", "support", "cancellation"}
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> tuple[Event, ...]:
    events = simulate(customers=40, days=120, seed=3).events
    assert {event.type for event in events} == ALL_TYPES
    return events


def purchase(n: int, day: float, customer: str = "c1") -> PurchaseEvent:
    return PurchaseEvent(
        event_id=f"p{n}",
        customer_id=customer,
        order_id=f"o{n}",
        amount=10.0 + n,
        items=1,
        channel="web",
        occurred_at=T0 + timedelta(days=day),
    )


@dataclass
class FakeFuture:
    error: BaseException | None = None

    def add_errback(self, errback: object) -> None:
        if self.error is not None:
            errback(self.error)  # type: ignore[operator]


@dataclass
class FakeProducer:
    """Records what was sent; ``fail`` names event ids whose delivery fails."""

    fail: frozenset[str] = frozenset()
    sent: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    flushed_after: list[int] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None) -> FakeFuture:
        self.sent.append((topic, key, value))
        event_id = json.loads(value or b"{}").get("event_id")
        return FakeFuture(RuntimeError("broker said no") if event_id in self.fail else None)

    def flush(self) -> None:
        self.flushed_after.append(len(self.sent))


# --- reading and writing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["history.jsonl", "history.csv", "history.jsonl.gz", "history.csv.gz"]
)
def test_a_written_history_reads_back_as_the_same_events(
    tmp_path: Path, history: tuple[Event, ...], name: str
) -> None:
    path = tmp_path / name

    assert write_history(path, history) == len(history)
    read = read_history(path)

    assert read.events == history
    assert read.rejections == ()
    assert read.out_of_order == 0


def test_gzip_histories_are_really_compressed_and_reproducible(
    tmp_path: Path, history: tuple[Event, ...]
) -> None:
    first, second = tmp_path / "a.csv.gz", tmp_path / "b" / "a.csv.gz"
    second.parent.mkdir()
    write_history(first, history)
    write_history(second, history)

    assert gzip.decompress(first.read_bytes()).startswith(b"type,event_id,customer_id,")
    assert first.read_bytes() == second.read_bytes()


def test_csv_has_one_column_per_field_and_leaves_absent_fields_empty(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    write_history(path, [purchase(1, 0)])

    header, row = path.read_text().splitlines()
    cells = dict(zip(header.split(","), row.split(","), strict=True))
    assert tuple(header.split(",")) == CSV_COLUMNS
    assert cells["type"] == "purchase" and cells["amount"] == "11.0" and cells["items"] == "1"
    assert cells["cost"] == "" and cells["rating"] == ""


def test_csv_rows_may_leave_out_columns_and_use_any_column_order(tmp_path: Path) -> None:
    path = tmp_path / "hand-written.csv"
    path.write_text(
        "rating,scale,category,type,event_id,customer_id,occurred_at\n"
        "4,csat,service,feedback,f1,c1,2026-02-01T12:00:00+00:00\n"
    )

    (event,) = read_history(path).events

    assert event == FeedbackEvent(
        event_id="f1", customer_id="c1", occurred_at=T0, rating=4, scale="csat", category="service"
    )


def test_invalid_json_lines_are_rejected_with_line_numbers_and_the_rest_kept(
    tmp_path: Path,
) -> None:
    good = [purchase(1, 0), purchase(2, 1)]
    too_high = (
        FeedbackEvent(
            event_id="f1",
            customer_id="c1",
            occurred_at=T0,
            rating=5,
            scale="csat",
            category="brand",
        )
        .model_dump_json()
        .replace('"rating":5', '"rating":9')
    )
    path = tmp_path / "history.jsonl"
    path.write_text(
        "\n".join(
            [
                good[0].model_dump_json(),
                "{not json",
                "",  # blank lines are skipped, but still counted for line numbers
                too_high,
                '["an", "array"]',
                good[1].model_dump_json(),
                good[1].model_dump_json().replace('"amount":12.0', '"amount":-1'),
            ]
        )
        + "\n"
    )

    read = read_history(path)

    assert read.events == tuple(good)
    assert [line for line, _ in read.rejections] == [2, 4, 5, 7]
    reasons = [reason for _, reason in read.rejections]
    assert reasons[0].startswith("not valid JSON")
    assert "rating 9 is outside the csat scale 1-5" in reasons[1]
    assert reasons[2] == "not a JSON object: an event must be a JSON object"
    assert "amount" in reasons[3] and "greater than or equal to 0" in reasons[3]
    assert read.records == 6


def test_invalid_csv_rows_are_rejected_with_line_numbers_and_the_rest_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.csv"
    path.write_bytes(
        b"type,event_id,customer_id,occurred_at,order_id,amount,items,channel,comment\n"
        b"purchase,p1,c1,2026-02-01T12:00:00Z,o1,10.5,2,web,\n"
        b"purchase,p2,c1,2026-02-01T12:00:00Z,o2,ten,2,web,\n"
        b"purchase,p3,c1,2026-02-01T12:00:00Z,o3,10,2.5,web,\n"
        b'purchase,p4,c1,2026-02-01T12:00:00Z,o4,10,1,web,"two\nlines"\n'
        b"purchase,p5,c1,2026-02-01T12:00:00Z,o5,10,1,web,,surplus\n"
        b"\n"
        b"purchase,p6,c1,2026-02-01T12:00:00Z,o6,10,1,\xff\xfe,\n"
        b"purchase,p7,c1,2026-02-01T12:00:00Z,o7,nan,1,web,\n"
        b"refund,r1,c1,2026-02-02T12:00:00Z,o1,10.5,,,\n"
    )

    read = read_history(path)

    assert [event.event_id for event in read.events] == ["p1", "r1"]
    assert read.rejections == (
        Rejection(3, "purchase.amount: Input should be a valid number"),
        Rejection(4, "purchase.items: Input should be a valid integer"),
        Rejection(5, "purchase.comment: Extra inputs are not permitted"),
        Rejection(7, "the row has 10 cells but the header names 9"),
        Rejection(9, "not valid UTF-8"),
        Rejection(10, "purchase.amount: Input should be a valid number"),
    )
    assert read.events[1] == RefundEvent(
        event_id="r1", customer_id="c1", order_id="o1", amount=10.5, occurred_at=T0 + timedelta(1)
    )


def test_a_csv_file_without_a_type_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("event_id,customer_id\ne1,c1\n")

    with pytest.raises(ValueError, match="must name the fields, including 'type'"):
        read_history(path)


def test_a_csv_header_that_is_not_csv_is_refused_not_crashed_on(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_bytes(b"type,event\rid\n")  # a bare carriage return inside a header cell

    with pytest.raises(ValueError, match="header row is not readable as CSV"):
        read_history(path)


@pytest.mark.parametrize("seed", range(20))
def test_any_bytes_give_events_rejections_or_a_value_error(tmp_path: Path, seed: int) -> None:
    noise = random.Random(seed)
    for name in ("history.csv", "history.jsonl"):
        path = tmp_path / name
        path.write_bytes(bytes(noise.randrange(256) for _ in range(noise.randrange(1, 3_000))))
        try:
            result = read_history(path)
        except ValueError:
            continue  # a refused file, with its reason
        assert all(r.line >= 1 and r.reason for r in result.rejections)


@pytest.mark.parametrize("name", ["history.txt", "history.gz", "history"])
def test_a_file_name_without_a_known_format_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_history(tmp_path / name)
    with pytest.raises(ValueError, match="cannot tell the format"):
        write_history(tmp_path / name, [])


def test_a_corrupt_or_truncated_gzip_file_is_refused(
    tmp_path: Path, history: tuple[Event, ...]
) -> None:
    path = tmp_path / "history.jsonl.gz"
    write_history(path, history)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ValueError, match="history.jsonl.gz is corrupt or truncated"):
        read_history(path)
    path.write_bytes(whole[:30] + bytes(b ^ 0x55 for b in whole[30:300]) + whole[300:])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_history(path)


def test_a_byte_order_mark_is_ignored() -> None:
    lines = [b"\xef\xbb\xbf" + purchase(1, 0).model_dump_json().encode()]

    assert parse_history(lines, "jsonl").events == (purchase(1, 0),)


def test_rejections_are_written_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"

    write_rejections(path, [Rejection(3, "bad"), Rejection(9, "worse")])

    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"line": 3, "reason": "bad"},
        {"line": 9, "reason": "worse"},
    ]


# --- event-time order -------------------------------------------------------------------------


def test_events_are_sorted_by_event_time_and_late_ones_counted() -> None:
    # File order by day: 3, 1, 5, 2, 5 (p4 and p9 tie on time), 6, 4.
    in_file = [
        purchase(3, 3),
        purchase(1, 1),
        purchase(9, 5),
        purchase(2, 2),
        purchase(4, 5),
        purchase(6, 6),
        purchase(5, 4),
    ]
    lines = [event.model_dump_json().encode() for event in in_file]

    read = parse_history(lines, "jsonl")

    assert [event.event_id for event in read.events] == ["p1", "p2", "p3", "p5", "p4", "p9", "p6"]
    assert read.out_of_order == 3  # p1 after p3, p2 after p3, p5 after p6; a tie is in order


def test_a_shuffled_history_reads_back_in_event_time_order(
    tmp_path: Path, history: tuple[Event, ...]
) -> None:
    shuffled = random.Random(5).sample(history, len(history))
    path = tmp_path / "shuffled.csv"
    write_history(path, shuffled)

    read = read_history(path)

    assert read.events == history
    assert 0 < read.out_of_order < len(history)


# --- publishing -------------------------------------------------------------------------------


def test_each_event_is_sent_keyed_by_customer_to_its_topic_then_flushed(
    history: tuple[Event, ...],
) -> None:
    settings = Settings(topic_prefix="test")
    producer = FakeProducer()

    summary = replay_history(history, settings, producer)

    assert len(producer.sent) == len(history)
    assert producer.flushed_after == [len(history)]
    for (topic, key, value), event in zip(producer.sent, history, strict=True):
        assert key == event.customer_id.encode()
        assert value is not None and json.loads(value)["event_id"] == event.event_id
        expected_kind = {"purchase": "purchases", "refund": "purchases", "feedback": "feedback"}
        assert topic == f"test.{expected_kind.get(event.type, 'support')}"
    assert summary.events == summary.published == len(history)
    assert summary.failed == 0


def test_the_summary_counts_events_by_type_and_by_topic(history: tuple[Event, ...]) -> None:
    settings = Settings()
    by_type = {kind: sum(1 for e in history if e.type == kind) for kind in ALL_TYPES}

    summary = replay_history(history, settings, FakeProducer())

    assert summary.by_type == by_type
    assert summary.by_topic == {
        "crm.purchases": by_type["purchase"] + by_type["refund"],
        "crm.feedback": by_type["feedback"],
        "crm.support": by_type["support"] + by_type["cancellation"],
    }
    assert summary.first_event_at == history[0].occurred_at
    assert summary.last_event_at == history[-1].occurred_at
    assert summary.elapsed_s > 0 and summary.events_per_s > 0
    planned = plan_replay(history, settings)
    assert (planned.by_type, planned.by_topic) == (summary.by_type, summary.by_topic)


def test_progress_rises_to_the_total_and_ends_after_the_flush() -> None:
    history = [purchase(n, n / 100) for n in range(2500)]
    producer = FakeProducer()
    seen: list[tuple[int, int, int]] = []

    replay_history(
        history,
        Settings(),
        producer,
        progress=lambda done, total: seen.append((done, total, len(producer.flushed_after))),
    )

    counts = [done for done, _, _ in seen]
    assert len(seen) > 2
    assert counts == sorted(set(counts)) and counts[-1] == len(history)
    assert {total for _, total, _ in seen} == {len(history)}
    assert [flushes for _, _, flushes in seen] == [0] * (len(seen) - 1) + [1]


def test_an_empty_history_reports_zero_of_zero() -> None:
    seen: list[tuple[int, int]] = []

    summary = replay_history((), Settings(), FakeProducer(), lambda *p: seen.append(p))

    assert seen == [(0, 0)]
    assert summary.events == 0 and summary.first_event_at is None


def test_sends_the_broker_fails_are_counted() -> None:
    events = [purchase(n, n) for n in range(1, 6)]

    summary = replay_history(events, Settings(), FakeProducer(fail=frozenset({"p2", "p4"})))

    assert (summary.events, summary.failed, summary.published) == (5, 2, 3)
    assert summary.first_failure == "RuntimeError: broker said no"


# --- report and command line ------------------------------------------------------------------


def test_the_report_says_what_was_read_rejected_and_published() -> None:
    first, second = purchase(2, 2), purchase(1, 1)
    lines = [first.model_dump_json().encode(), b"{", second.model_dump_json().encode()]
    read = parse_history(lines, "jsonl")
    summary = replay_history(read.events, Settings(), FakeProducer())

    report = format_report(Path("h.jsonl"), read, summary, rejects_path=Path("r.jsonl"))

    assert "read 3 events from h.jsonl: 2 valid, 1 rejected" in report
    assert "line 2: not valid JSON" in report
    assert "all written to r.jsonl" in report
    assert "out of event-time order in the file: 1" in report
    assert "published 2 events in " in report
    assert "by topic: crm.purchases 2" in report and "by type:  purchase 2" in report
    assert "2026-02-02T12:00:00+00:00 .. 2026-02-03T12:00:00+00:00 (1.0 days)" in report


def test_cli_dry_run_validates_writes_rejects_and_exits_1_on_rejections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMCRM_KAFKA_BOOTSTRAP", raising=False)
    path, rejects = tmp_path / "h.jsonl", tmp_path / "rejects.jsonl"
    path.write_text(purchase(1, 0).model_dump_json() + "\n{oops\n")

    status = main(["replay", str(path), "--dry-run", "--rejects", str(rejects)])

    out = capsys.readouterr().out
    assert status == 1
    assert "dry run: nothing published; would publish 1 events" in out
    assert json.loads(rejects.read_text())["line"] == 2


def test_cli_dry_run_of_a_clean_file_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMCRM_KAFKA_BOOTSTRAP", raising=False)
    path = tmp_path / "h.csv"
    write_history(path, [purchase(1, 0)])

    assert main(["replay", str(path), "--dry-run"]) == 0


def test_cli_replay_without_a_broker_or_a_readable_file_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMCRM_KAFKA_BOOTSTRAP", raising=False)
    path = tmp_path / "h.jsonl"
    path.write_text(purchase(1, 0).model_dump_json() + "\n")

    assert main(["replay", str(path)]) == 2
    assert "STREAMCRM_KAFKA_BOOTSTRAP" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.jsonl"), "--dry-run"]) == 2
    assert "No such file" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "h.txt"), "--dry-run"]) == 2


def test_cli_simulate_writes_csv_when_the_file_name_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sim.csv"

    status = main(
        ["simulate", "--customers", "5", "--days", "30", "--seed", "2", "--out", str(path)]
    )

    assert status == 0
    assert path.read_text().startswith("type,event_id,")
    assert read_history(path).events == simulate(customers=5, days=30, seed=2).events
    assert capsys.readouterr().out.startswith("wrote ")
