"""Train the zstd dictionary that :mod:`streamcrm.store.codec` stores state and score JSON with.

Run once, when a new stored form is introduced; the file it writes is then frozen (a value
stored with a dictionary reads only with that dictionary):

    .venv/bin/python tools/train_codec_dictionary.py [streamcrm/store/codec-v3.zdict]

The samples are what a worker stores: every state and score of a simulated stream (2,000
customers over 120 days, seed 101, models learning as they go, so later scores carry fitted
segments, drivers and forecasts), 4,000 of each drawn with a fixed seed. The unit tests and
the bench simulate other seeds, so the figures they report are not on the training data.
"""

from __future__ import annotations

import random
import sys
from datetime import timedelta
from pathlib import Path

import zstandard

from streamcrm.core.scoring import ScoringConfig, score_event
from streamcrm.core.state import CustomerState
from streamcrm.models import ModelBundle, QueuedUpdates
from streamcrm.sim.simulator import simulate
from streamcrm.store.codec import DICTIONARY_V3_FILE, ZSTD_DICTIONARY_BYTES
from streamcrm.store.redis import stored_score_json

SEED, CUSTOMERS, DAYS, SAMPLES_EACH = 101, 2_000, 120, 4_000


def stored_documents() -> tuple[list[bytes], list[bytes]]:
    """Every state and score JSON a worker would store for the training stream."""
    models, config = ModelBundle(), ScoringConfig(heartbeat_interval=timedelta(days=30))
    queued = QueuedUpdates()
    states: dict[str, CustomerState] = {}
    state_documents, score_documents = [], []
    for event in simulate(customers=CUSTOMERS, days=DAYS, seed=SEED).events:
        scored = score_event(states.get(event.customer_id), event, models, config, learner=queued)
        for update in queued.drain():
            models.learn(update)
        states[event.customer_id] = scored.state
        state_documents.append(scored.state.model_dump_json().encode())
        if scored.score is not None:
            score_documents.append(stored_score_json(scored.score, ()).encode())
    return state_documents, score_documents


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path("streamcrm/store") / DICTIONARY_V3_FILE
    states, scores = stored_documents()
    draw = random.Random(SEED)
    samples: list[bytes | bytearray | memoryview] = [
        *draw.sample(states, SAMPLES_EACH),
        *draw.sample(scores, SAMPLES_EACH),
    ]
    dictionary = zstandard.train_dictionary(ZSTD_DICTIONARY_BYTES, samples, threads=0)
    target.write_bytes(dictionary.as_bytes())
    print(f"{target}: {len(dictionary.as_bytes())} bytes, dictionary id {dictionary.dict_id()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
