"""The River models: churn (delayed labels), segments (incremental clustering), population.

Scoring only *reads* the models; what they should learn is handed to a :class:`Learner`.
``ModelBundle`` is itself one (it learns at once: a single process, the tests); a worker in a
group instead queues :class:`ModelUpdate` records for the one shared learner (``app.py``).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from streamcrm.models.churn import ChurnModel
from streamcrm.models.population import PopulationStats
from streamcrm.models.repeat_buying import RepeatBuying, RepeatBuyingModel
from streamcrm.models.segments import SegmentModel


@dataclass(frozen=True)
class BuyingObservation:
    """A customer's repeat-buying statistics as of an event time, for the population sample."""

    customer_id: str
    stats: RepeatBuying
    as_of: datetime


class ModelUpdate(BaseModel):
    """One thing for the models to learn: a labelled snapshot, a scored customer, or a
    customer to forget (erased: dropped from the repeat-buying sample)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["labelled", "scored", "forget"]
    features: dict[str, float] = {}
    customer_id: str | None = None
    """For ``forget``: the erased customer."""
    churned: bool | None = None
    """For ``labelled``: what happened (True = churned)."""
    satisfaction: float | None = None
    """For ``scored``: the customer's mean satisfaction (null before any rating)."""
    buying: BuyingObservation | None = None
    """For ``scored``: the customer's repeat-buying statistics (null before a purchase)."""


class ModelUpdateBatch(BaseModel):
    """What a worker publishes on the model-updates topic: its updates, in order, batched
    so the learner pays the framework's per-message cost once per batch, not per update."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    updates: list[ModelUpdate]


class Learner(Protocol):
    """Where scoring sends what the models should learn."""

    def learn_labelled(self, features: Mapping[str, float], churned: bool) -> None: ...

    def learn_scored(
        self,
        features: Mapping[str, float],
        satisfaction: float | None,
        buying: BuyingObservation | None = None,
    ) -> None: ...


class QueuedUpdates:
    """A learner that only collects updates, for a worker to publish to the shared learner."""

    def __init__(self) -> None:
        self.updates: list[ModelUpdate] = []

    def learn_labelled(self, features: Mapping[str, float], churned: bool) -> None:
        self.updates.append(ModelUpdate(kind="labelled", features=dict(features), churned=churned))

    def learn_scored(
        self,
        features: Mapping[str, float],
        satisfaction: float | None,
        buying: BuyingObservation | None = None,
    ) -> None:
        self.updates.append(
            ModelUpdate(
                kind="scored", features=dict(features), satisfaction=satisfaction, buying=buying
            )
        )

    def forget(self, customer_id: str) -> None:
        self.updates.append(ModelUpdate(kind="forget", customer_id=customer_id))

    def drain(self) -> list[ModelUpdate]:
        """The updates collected so far, handed over once."""
        updates, self.updates = self.updates, []
        return updates


@dataclass
class ModelBundle:
    """The models one scoring step uses, checkpointed together as one versioned artifact.

    The population statistics learn from the same scored customers as the segments, so the
    segment count also versions them.
    """

    churn: ChurnModel = field(default_factory=ChurnModel)
    segments: SegmentModel = field(default_factory=SegmentModel)
    population: PopulationStats = field(default_factory=PopulationStats)
    repeat_buying: RepeatBuyingModel = field(default_factory=RepeatBuyingModel)

    @property
    def version(self) -> str:
        """Which model made a score: examples learned by each model, refits of the CLV model.

        >>> ModelBundle().version
        'churn-0.segments-0.clv-0'
        """
        return (
            f"churn-{self.churn.n_learned}.segments-{self.segments.n_learned}"
            f".clv-{self.repeat_buying.fits}"
        )

    def learn_labelled(self, features: Mapping[str, float], churned: bool) -> None:
        """The churn model learns one labelled snapshot (predicting it first)."""
        self.churn.learn_one(features, churned)

    def learn_scored(
        self,
        features: Mapping[str, float],
        satisfaction: float | None,
        buying: BuyingObservation | None = None,
    ) -> None:
        """Segments and population statistics learn one scored customer; the CLV model keeps
        their repeat-buying statistics and refits once a refit interval of event time passed."""
        self.segments.learn_one(features)
        self.population.learn_one(features, satisfaction)
        if buying is not None:
            self.repeat_buying.observe(buying.customer_id, buying.stats)
            if self.repeat_buying.due(buying.as_of):
                self.repeat_buying.refit(buying.as_of)

    def forget(self, customer_id: str) -> None:
        """Drop an erased customer's statistics from the repeat-buying sample."""
        self.repeat_buying.forget(customer_id)

    def learn(self, update: ModelUpdate) -> None:
        """Apply one queued update."""
        if update.kind == "labelled":
            self.learn_labelled(update.features, bool(update.churned))
        elif update.kind == "forget":
            if update.customer_id is not None:
                self.forget(update.customer_id)
        else:
            self.learn_scored(update.features, update.satisfaction, update.buying)

    @property
    def updates_learned(self) -> int:
        """Everything learned so far (orders checkpoints: a larger count is newer)."""
        return self.churn.n_learned + self.segments.n_learned + self.repeat_buying.fits

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


__all__ = [
    "BuyingObservation",
    "ChurnModel",
    "Learner",
    "ModelBundle",
    "ModelUpdate",
    "ModelUpdateBatch",
    "PopulationStats",
    "QueuedUpdates",
    "SegmentModel",
]
