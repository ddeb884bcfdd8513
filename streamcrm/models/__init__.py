"""The River models: churn (delayed labels) and segments (incremental clustering)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from streamcrm.models.churn import ChurnModel
from streamcrm.models.population import PopulationStats
from streamcrm.models.segments import SegmentModel


@dataclass
class ModelBundle:
    """The models one scoring step uses, checkpointed together as one versioned artifact.

    The population statistics learn from the same scored customers as the segments, so the
    segment count also versions them.
    """

    churn: ChurnModel = field(default_factory=ChurnModel)
    segments: SegmentModel = field(default_factory=SegmentModel)
    population: PopulationStats = field(default_factory=PopulationStats)

    @property
    def version(self) -> str:
        """Which model made a score: how many examples each model has learned.

        >>> ModelBundle().version
        'churn-0.segments-0'
        """
        return f"churn-{self.churn.n_learned}.segments-{self.segments.n_learned}"

    def to_bytes(self) -> bytes:
        """Serialise for a checkpoint (pickle: only ever our own blobs)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, blob: bytes) -> ModelBundle:
        """Load a checkpoint written by :meth:`to_bytes`."""
        bundle = pickle.loads(blob)  # noqa: S301 - our own checkpoint, never user input
        if not isinstance(bundle, cls):
            raise TypeError(f"checkpoint holds {type(bundle).__name__}, not {cls.__name__}")
        return bundle


__all__ = ["ChurnModel", "ModelBundle", "PopulationStats", "SegmentModel"]
