"""The Quix Streams pass-through baseline reports its progress as the bench reads it."""

from __future__ import annotations

import json

from streamcrm.bench.quix import PassedCounter, progress_count, progress_record


def test_a_progress_report_says_when_it_was_published_and_how_many_passed() -> None:
    raw = progress_record(1200, 1700000000.5)

    # The reports of the Faust baseline (streamcrm.bench.passthrough), field for field.
    assert json.loads(raw) == {"published_at": 1700000000.5, "count": 1200}
    assert progress_count(raw) == 1200


def test_every_processed_message_is_counted() -> None:
    counter = PassedCounter()

    for offset in range(3):
        counter.message_processed("bench.purchases", 0, offset)
    counter.message_processed("bench.support", 2, 0)

    assert progress_count(progress_record(counter.count, 0.0)) == 4
