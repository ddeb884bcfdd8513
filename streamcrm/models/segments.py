"""Incremental customer segmentation (River KMeans) with readable, stable names.

Customers are placed by scaled RFM, satisfaction and support features. Cluster ids are
River's centre indices, which stay fixed as centres move; each centre gets a name from its
*value rank* (frequency + monetary − recency, in scaled units): the highest-ranked centre is
``champions``, then ``loyal``, ``at_risk`` and ``hibernating``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from operator import itemgetter

from river import cluster, preprocessing

SEGMENT_NAMES: tuple[str, ...] = ("champions", "loyal", "at_risk", "hibernating")
SEGMENT_FEATURES: tuple[str, ...] = (
    "recency",
    "frequency",
    "monetary",
    "satisfaction",
    "support_load",
)


def segment_features(features: Mapping[str, float]) -> dict[str, float]:
    """The clustering view of a customer: log-scaled RFM, satisfaction and support load."""
    return {
        "recency": math.log1p(features["recency_days"]),
        "frequency": math.log1p(features["frequency"]),
        "monetary": math.log1p(features["monetary"]),
        "satisfaction": features["satisfaction_mean"],
        "support_load": math.log1p(features["open_tickets"] + features["complaints"]),
    }


def nearest_centre(
    centres: Mapping[int, Mapping[str, float]], point: Mapping[str, float]
) -> tuple[int, float]:
    """The id of the centre nearest ``point`` and the Euclidean distance to it, over
    :data:`SEGMENT_FEATURES`: the centre River's ``KMeans`` would pick (and moves when it
    learns), the first one on a tie as there, found about twice as fast.

    >>> nearest_centre({0: dict.fromkeys(SEGMENT_FEATURES, 0.0),
    ...                 1: dict.fromkeys(SEGMENT_FEATURES, 10.0)},
    ...                dict.fromkeys(SEGMENT_FEATURES, 10.0) | {"recency": 13.0, "frequency": 14.0})
    (1, 5.0)
    >>> nearest_centre({3: dict.fromkeys(SEGMENT_FEATURES, 1.0),
    ...                 0: dict.fromkeys(SEGMENT_FEATURES, -1.0)},
    ...                dict.fromkeys(SEGMENT_FEATURES, 0.0))[0]
    3
    """
    # Written out for the five features (a third of the time of a sum over a generator per
    # centre), with the same arithmetic in the same order: sum() adds left to right from 0.
    recency, frequency, monetary, satisfaction, support_load = _coordinates(point)
    nearest: int | None = None
    least = math.inf
    for centre_id, centre in centres.items():
        at_recency, at_frequency, at_monetary, at_satisfaction, at_support = _coordinates(centre)
        squared = (
            (recency - at_recency) ** 2
            + (frequency - at_frequency) ** 2
            + (monetary - at_monetary) ** 2
            + (satisfaction - at_satisfaction) ** 2
            + (support_load - at_support) ** 2
        )
        if nearest is None or squared < least:  # the first of equals, as min() picks
            nearest, least = centre_id, squared
    assert nearest is not None, "a model has centres"
    return nearest, math.sqrt(least)


_coordinates = itemgetter(*SEGMENT_FEATURES)
"""A point's (or a centre's) values of :data:`SEGMENT_FEATURES`, in that order."""


class SegmentModel:
    """Standard-scaled KMeans over :func:`segment_features`, learned one customer at a time."""

    def __init__(self, seed: int = 7) -> None:
        self.scaler = preprocessing.StandardScaler()
        self.kmeans = cluster.KMeans(n_clusters=len(SEGMENT_NAMES), halflife=0.3, seed=seed)
        # River draws a centre's starting coordinates lazily, while iterating a set of feature
        # names, so which draw lands on which feature would follow PYTHONHASHSEED. Drawing them
        # now, in a fixed order, makes the same seed give the same segments in every process.
        for centre in self.kmeans.centers.values():
            for name in SEGMENT_FEATURES:
                centre[name]  # noqa: B018 - reading a defaultdict key draws its start value
        self.n_learned = 0

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the read cache: a checkpoint holds the model alone."""
        state = dict(self.__dict__)
        state.pop("_names_at", None)
        return state

    def predict_one(self, features: Mapping[str, float]) -> tuple[int, str]:
        """The (segment id, segment name) of one customer's features, without learning."""
        segment_id, _ = self._nearest(features)
        return segment_id, self.segment_names()[segment_id]

    def distance_one(self, features: Mapping[str, float]) -> float:
        """Euclidean distance, in scaled units, from the customer to their segment's centre:
        how typical of the segment they are (0 = at the centre)."""
        _, distance = self._nearest(features)
        return distance

    def place_one(self, features: Mapping[str, float]) -> tuple[int, str, float]:
        """(segment id, segment name, distance to its centre) in one pass: what a score
        needs, from one scaling and one nearest-centre search (the names ranked once per
        state of the centres, :meth:`current_names`)."""
        segment_id, distance = self._nearest(features)
        return segment_id, self.current_names()[segment_id], distance

    def current_names(self) -> dict[int, str]:
        """:meth:`segment_names`, ranked again only after the centres moved (they move only
        when the model learns, which counts in ``n_learned``). Read-only: do not change it."""
        cached: tuple[int, dict[int, str]] | None = getattr(self, "_names_at", None)
        if cached is None or cached[0] != self.n_learned:
            cached = (self.n_learned, self.segment_names())
            self._names_at = cached
        return cached[1]

    def _nearest(self, features: Mapping[str, float]) -> tuple[int, float]:
        """(segment id, distance to its centre): one scaling, one nearest-centre search."""
        scaled = self.scaler.transform_one(segment_features(features))
        return nearest_centre(self.kmeans.centers, scaled)

    def learn_one(self, features: Mapping[str, float]) -> None:
        """Move the scaler and the nearest centre toward one customer's features."""
        raw = segment_features(features)
        self.scaler.learn_one(raw)
        self.kmeans.learn_one(self.scaler.transform_one(raw))
        self.n_learned += 1

    def learn_predict_one(self, features: Mapping[str, float]) -> tuple[int, str]:
        """Learn from one customer's features and return its (segment id, segment name)."""
        self.learn_one(features)
        return self.predict_one(features)

    def segment_names(self) -> dict[int, str]:
        """Name each centre by its value rank (see the module docstring)."""

        def value(centre: Mapping[str, float]) -> float:
            return centre["frequency"] + centre["monetary"] - centre["recency"]

        ranked = sorted(
            self.kmeans.centers, key=lambda i: value(self.kmeans.centers[i]), reverse=True
        )
        return {segment_id: SEGMENT_NAMES[rank] for rank, segment_id in enumerate(ranked)}
