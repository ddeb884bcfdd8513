"""State and score JSON as stored in Redis: compressed against a frozen dictionary, every
earlier stored form still read."""

from __future__ import annotations

import hashlib
import zlib
from datetime import timedelta

import pytest

from streamcrm.core.scoring import ScoringConfig, score_event
from streamcrm.core.state import CustomerState
from streamcrm.models import ModelBundle
from streamcrm.sim.simulator import simulate
from streamcrm.store import OutboxRecord, PendingWrite
from streamcrm.store.codec import (
    DICTIONARY_V1,
    DICTIONARY_V2,
    VERSION_1,
    VERSION_3,
    dictionary_v3,
    pack,
    pack_version_2,
    unpack,
)
from streamcrm.store.redis import stored_score_json


def simulated_documents() -> list[str]:
    models, config = ModelBundle(), ScoringConfig(heartbeat_interval=timedelta(days=30))
    states: dict[str, CustomerState] = {}
    documents = []
    for event in simulate(customers=60, days=30, seed=3).events:
        scored = score_event(states.get(event.customer_id), event, models, config)
        states[event.customer_id] = scored.state
        if scored.score is not None:
            documents.append(scored.score.model_dump_json())
    return documents + [state.model_dump_json() for state in states.values()]


def test_every_state_and_score_comes_back_byte_for_byte_in_under_a_third_of_the_space() -> None:
    documents = simulated_documents()

    stored = [pack(document) for document in documents]

    assert [unpack(s).decode() for s in stored] == documents
    assert sum(map(len, stored)) < sum(map(len, documents)) / 3


def test_plain_json_stored_by_earlier_versions_still_reads() -> None:
    assert unpack(b'{"customer_id":"c1"}') == b'{"customer_id":"c1"}'
    assert unpack('{"customer_id":"c1"}') == b'{"customer_id":"c1"}'


def test_an_unknown_stored_form_is_an_error_not_garbage() -> None:
    with pytest.raises(ValueError, match="unknown stored form"):
        unpack(b"\x07abc")


def test_the_dictionaries_are_frozen() -> None:
    """Changing one would make every value stored with it unreadable: add a version instead."""
    assert (len(DICTIONARY_V1), zlib.adler32(DICTIONARY_V1)) == (3079, 3200238508)
    assert (len(DICTIONARY_V2), zlib.adler32(DICTIONARY_V2)) == (3684, 4195517934)
    version_3 = dictionary_v3().as_bytes()
    assert (len(version_3), dictionary_v3().dict_id()) == (16384, 1215378994)
    assert hashlib.sha256(version_3).hexdigest() == (
        "aff963eb1187e0b4c6cbd6bebe1cb383b5ce59e41eb883acf9fb4f3d267bec19"
    )


def test_values_are_written_in_the_newest_form_and_those_of_version_2_still_read() -> None:
    documents = simulated_documents()

    assert {pack(document)[:1] for document in documents} == {VERSION_3}
    assert [unpack(pack_version_2(d)).decode() for d in documents] == documents


def test_the_newest_form_stores_at_least_a_fifth_less_than_version_2() -> None:
    documents = simulated_documents()

    newest = sum(len(pack(document)) for document in documents)
    version_2 = sum(len(pack_version_2(document)) for document in documents)

    assert newest < 0.8 * version_2


def test_a_damaged_value_is_an_error_not_garbage() -> None:
    stored = pack(simulated_documents()[-1])

    with pytest.raises(ValueError, match="unreadable stored value"):
        unpack(stored[:-7])
    with pytest.raises(ValueError, match="unreadable stored value"):
        unpack(stored[:9] + bytes(len(stored) - 9))


def test_values_stored_with_the_first_dictionary_still_read() -> None:
    document = simulated_documents()[-1]
    deflate = zlib.compressobj(6, zdict=DICTIONARY_V1)
    stored_by_version_1 = VERSION_1 + deflate.compress(document.encode()) + deflate.flush()

    assert unpack(stored_by_version_1).decode() == document


def test_the_stored_score_is_the_one_the_outbox_publishes_serialised_once() -> None:
    models, config = ModelBundle(), ScoringConfig(rescore_interval=timedelta(days=7))
    state = None
    for event in simulate(customers=1, days=120, seed=5).events:
        scored = score_event(state, event, models, config)
        state = scored.state
        if scored.score is None:
            continue
        outbox = PendingWrite.outputs_of(scored.outputs)
        assert stored_score_json(scored.score, outbox) == scored.score.model_dump_json()
        assert stored_score_json(scored.score, ()) == scored.score.model_dump_json()
        rescores_only = tuple(r for r in outbox if r.record_id != scored.score.event_id)
        assert stored_score_json(scored.score, rescores_only) == scored.score.model_dump_json()


def test_an_outbox_record_read_back_keeps_the_exact_text_it_was_stored_as() -> None:
    # Clearing compares the outbox's head with the record's text: the text as stored (here
    # without the spaces this version writes), not the record serialised again.
    stored = '["alerts","c1","{\\"alert_id\\": \\"x\\"}","x"]'
    record = OutboxRecord.from_json(stored.encode())
    assert record == OutboxRecord("alerts", "c1", '{"alert_id": "x"}', "x")
    assert record.to_json() == stored
    assert OutboxRecord.from_json(record.to_json()) == record


def test_a_new_outbox_records_text_is_its_json_array() -> None:
    record = OutboxRecord("scores", "c2", "{}", "e1")
    assert record.to_json() == '["scores", "c2", "{}", "e1"]'
