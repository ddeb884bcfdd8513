"""The fast reads of the models give exactly what the plain reads give.

Scoring reads each model several times per score; the fast paths (one scaling for the churn
probability and its drivers, segment names and RFM boundaries kept until the model learns
again) must never give a different number, before or after more learning.
"""

from __future__ import annotations

import math
import pickle
import random

from streamcrm.models.churn import ChurnModel
from streamcrm.models.population import PopulationStats
from streamcrm.models.segments import SEGMENT_FEATURES, SegmentModel, nearest_centre

CHURN_FEATURES = ("recency_in_horizons", "silence_times_rate", "satisfaction_mean", "complaints")


def churn_example(rng: random.Random) -> dict[str, float]:
    return {name: rng.uniform(0.0, 3.0) for name in CHURN_FEATURES}


def customer(rng: random.Random) -> dict[str, float]:
    return {
        "recency_days": rng.uniform(0, 300),
        "frequency": float(rng.randint(0, 40)),
        "monetary": rng.uniform(0, 5_000),
        "satisfaction_mean": rng.uniform(0, 1),
        "open_tickets": float(rng.randint(0, 3)),
        "complaints": float(rng.randint(0, 2)),
    }


def test_the_churn_probability_and_its_drivers_from_one_scaling_are_the_two_reads() -> None:
    rng, model = random.Random(5), ChurnModel()
    for step in range(600):
        if step % 100 == 0:
            for _ in range(20):
                features = churn_example(rng)
                expected = (model.predict_proba_one(features), model.explain_one(features))
                assert model.predict_and_explain(features) == expected
        model.learn_one(churn_example(rng), churned=rng.random() < 0.3)
    assert model.n_learned == 600


def test_segment_names_are_ranked_again_once_the_centres_moved() -> None:
    rng, model = random.Random(9), SegmentModel()
    for _ in range(400):
        features = customer(rng)
        segment_id, distance = model._nearest(features)
        assert model.place_one(features) == (
            segment_id,
            model.segment_names()[segment_id],
            distance,
        )
        assert model.current_names() == model.segment_names()
        model.learn_one(features)
    assert model.n_learned == 400


def plain_nearest_centre(
    centres: dict[int, dict[str, float]], point: dict[str, float]
) -> tuple[int, float]:
    """The nearest centre as first written: a sum of squares per centre, the least by min()."""
    squared = {
        centre_id: sum((point[name] - centre[name]) ** 2 for name in SEGMENT_FEATURES)
        for centre_id, centre in centres.items()
    }
    nearest = min(squared, key=squared.__getitem__)
    return nearest, math.sqrt(squared[nearest])


def test_the_nearest_centre_written_out_is_the_sum_of_squares_to_the_last_bit() -> None:
    rng = random.Random(8)

    def point(spread: float) -> dict[str, float]:
        return {name: rng.gauss(0.0, spread) for name in SEGMENT_FEATURES}

    for _ in range(2_000):
        centres = {centre_id: point(1.0) for centre_id in rng.sample(range(10), 4)}
        for candidate in (point(0.5), point(3.0), dict(centres[rng.choice(list(centres))])):
            assert nearest_centre(centres, candidate) == plain_nearest_centre(centres, candidate)
    tied = {2: dict.fromkeys(SEGMENT_FEATURES, 1.0), 0: dict.fromkeys(SEGMENT_FEATURES, -1.0)}
    origin = dict.fromkeys(SEGMENT_FEATURES, 0.0)
    assert nearest_centre(tied, origin) == plain_nearest_centre(tied, origin) == (2, math.sqrt(5))


def test_rfm_codes_follow_the_quantiles_as_they_learn() -> None:
    rng, population = random.Random(3), PopulationStats()
    for _ in range(300):
        features = customer(rng)
        expected = []
        for name, higher_is_better in (
            ("recency_days", False),
            ("frequency", True),
            ("monetary", True),
        ):
            bounds = [b for b in (q.get() for q in population.quantiles[name]) if b is not None]
            better = sum(
                (features[name] > b) if higher_is_better else (features[name] < b) for b in bounds
            )
            expected.append(min(1 + better, 5))
        assert population.rfm_codes(features) == tuple(expected)
        population.learn_one(features, satisfaction=None)


def test_a_checkpoint_holds_the_models_alone_not_their_read_caches() -> None:
    rng, segments, population = random.Random(4), SegmentModel(), PopulationStats()
    for _ in range(50):
        features = customer(rng)
        segments.learn_one(features)
        population.learn_one(features, satisfaction=None)
    unread_segments, unread_population = pickle.dumps(segments), pickle.dumps(population)

    segments.place_one(customer(rng))
    population.rfm_codes(customer(rng))

    assert pickle.dumps(segments) == unread_segments
    assert pickle.dumps(population) == unread_population
