"""The River models: churn (delayed labels), segments (incremental clustering), population.

Scoring only *reads* the models; what they should learn is handed to a :class:`Learner`.
``ModelBundle`` is itself one (it learns at once: a single process, the tests); a worker in a
group instead queues :class:`ModelUpdate` records for the one shared learner (``app.py``).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from streamcrm.models.churn import ChurnModel
from streamcrm.models.horizon import PurchaseHorizonModel
from streamcrm.models.population import PopulationStats
from streamcrm.models.repeat_buying import (
    SECONDS_PER_WEEK,
    RepeatBuying,
    RepeatBuyingForecast,
    RepeatBuyingModel,
)
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
    horizon: PurchaseHorizonModel = field(default_factory=PurchaseHorizonModel)
    """P(any purchase within any horizon), refitted at each repeat-buying refit."""

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("horizon", PurchaseHorizonModel())  # checkpoints from before it
        self.__dict__.update(state)

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
            self.observe_buying(buying)

    def observe_buying(self, buying: BuyingObservation) -> None:
        """Keep a customer's newest repeat-buying statistics in the sample (and, while they
        are in it, their purchase days for the horizon model); refit once a refit interval
        of event time has passed."""
        self.repeat_buying.observe(buying.customer_id, buying.stats)
        if buying.customer_id in self.repeat_buying.sample:
            self.horizon.observe(buying.customer_id, buying.stats, buying.as_of)
        if self.repeat_buying.due(buying.as_of):
            self.refit_repeat_buying(buying.as_of)

    def refit_repeat_buying(self, as_of: datetime) -> bool:
        """Refit BG/NBD and Gamma-Gamma on the sample as of ``as_of``; after a fit, add a
        snapshot point and refit the horizon model on the windows closed so far. False if too
        few customers yet."""
        if not self.repeat_buying.refit(as_of):
            return False
        assert self.repeat_buying.counts is not None, "a successful refit fitted BG/NBD"
        self.horizon.keep_only({key for key, _ in self.repeat_buying.sample.values()})
        self.horizon.take_snapshot(as_of, self.repeat_buying.counts)
        self.horizon.refit()
        return True

    def forecasts(
        self, stats: RepeatBuying, as_of: datetime, horizons: Sequence[timedelta]
    ) -> list[RepeatBuyingForecast] | None:
        """The customer's repeat-buying forecasts over each horizon (None before a first fit),
        with P(any purchase) from the horizon model once it is fitted.

        With p̂ the horizon model's P(X(h) > 0), p and E BG/NBD's P(X(h) > 0) and E[X(h)]:

            E[X(h)] = E · min(1, p̂ / p) + max(0, p̂ − p) · E₀ / p₀

        Where the horizon model expects less buying than BG/NBD, BG/NBD's forecast is scaled
        down (its purchases per buyer kept). Where it expects more, the excess is buying that
        BG/NBD's story leaves out (customers it believes gone who come back): each such buyer
        is counted as buying like a customer of the same age with no repeat purchase yet
        (E₀ / p₀, BG/NBD's purchases per buyer at x = 0), not at their old rate. P(alive) and
        the spend per purchase stay BG/NBD's and Gamma-Gamma's.
        """
        forecasts = self.repeat_buying.forecasts(stats, as_of, horizons)
        if forecasts is None or not self.horizon.fitted:
            return forecasts
        x, t_x, age = stats.summary(as_of)
        newcomer: list[RepeatBuyingForecast] | None = None
        corrected = []
        for index, (horizon, forecast) in enumerate(zip(horizons, forecasts, strict=True)):
            weeks = horizon.total_seconds() / SECONDS_PER_WEEK
            bgnbd_buys = forecast.probability_of_purchase
            buys = self.horizon.predict_one(
                bgnbd_buys, forecast.probability_alive, x, t_x, age, weeks
            )
            assert buys is not None, "a fitted horizon model predicts"
            if buys <= bgnbd_buys:
                expected = forecast.expected_purchases * buys / bgnbd_buys
            else:
                if newcomer is None:
                    first = stats.first_purchase_at
                    newcomer = self.repeat_buying.forecasts(
                        RepeatBuying(first, first, 1, stats.mean_spend), as_of, horizons
                    )
                    assert newcomer is not None, "fitted above"
                per_new_buyer = newcomer[index].purchases_if_buying
                expected = forecast.expected_purchases + (buys - bgnbd_buys) * per_new_buyer
            corrected.append(
                replace(forecast, probability_of_purchase=buys, expected_purchases=expected)
            )
        return corrected

    def forget(self, customer_id: str) -> None:
        """Drop an erased customer's statistics from the repeat-buying sample and snapshots."""
        self.repeat_buying.forget(customer_id)
        self.horizon.forget(customer_id)

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
    "PurchaseHorizonModel",
    "QueuedUpdates",
    "SegmentModel",
]
