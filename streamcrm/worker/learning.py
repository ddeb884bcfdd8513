"""The models a worker scores with, and the one learner of a worker group.

- :class:`LiveModels`: the models in use, resumed from the newest checkpoint. Either they
  learn at once (a worker on its own), or they only read, queue what they should learn for
  the shared learner, and follow its checkpoints (``shared``).
- :class:`SharedLearner`: the one learner of a group, inside a scoring worker (``STREAMCRM_LEARNER=
  in-worker``); learns every worker's queued updates and checkpoints them. Its own process,
  ``streamcrm learner``, is :mod:`streamcrm.learner`.

Checkpoints are kept in the state store under :data:`MODEL_CHECKPOINT`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from streamcrm.core.records import ModelMetrics
from streamcrm.models import ModelBundle, ModelUpdate, ModelUpdateBatch, QueuedUpdates
from streamcrm.store import StateStore
from streamcrm.store.retrying import RetryingStore

MODEL_CHECKPOINT = "bundle"
logger = logging.getLogger(__name__)


def model_updates_in(raw: bytes) -> list[ModelUpdate]:
    """The updates of one model-updates message: a batch, or one update (older workers).

    Raises ValueError (pydantic's ValidationError) for a message that is neither."""
    try:
        return ModelUpdateBatch.model_validate_json(raw).updates
    except ValueError:
        return [ModelUpdate.model_validate_json(raw)]


def learn_each(models: ModelBundle, updates: Sequence[ModelUpdate]) -> None:
    """Learn ``updates`` in order (CPU-bound: callers run it in a thread)."""
    for update in updates:
        models.learn(update)


class LiveModels:
    """The models a worker scores with: resumed from the newest checkpoint once, then
    learning at once, or (``shared``) queuing what they should learn for the
    :class:`SharedLearner` and following its checkpoints (:meth:`refresh`)."""

    def __init__(self, store: StateStore, retrying: RetryingStore, shared: bool) -> None:
        self.store = store
        self._retrying = retrying
        self.bundle = ModelBundle()
        self.updates: QueuedUpdates | None = QueuedUpdates() if shared else None
        """What the shared learner should learn (None: the models learn at once)."""
        self.segment_mix: Counter[str] = Counter()
        """Segments of the scores made since the last metrics report."""
        self.drifts_reported = 0
        """Drifts of the churn model's error rate reported so far."""
        self.loaded = False
        self._loading = asyncio.Lock()
        self._checkpointed_version: str | None = None

    async def load(self) -> None:
        """Resume from the newest checkpoint, if there is one (once per process)."""
        if self.loaded:
            return
        # Events of several agents may arrive while the checkpoint is being read: only the
        # first loads it, so nothing learned meanwhile is replaced by the checkpoint.
        async with self._loading:
            if self.loaded:
                return
            blob = await self._retrying.load_model(MODEL_CHECKPOINT)
            if blob is not None:
                self.bundle = ModelBundle.from_bytes(blob)
                logger.info("resumed models from checkpoint %s", self.bundle.version)
            self._checkpointed_version = self.bundle.version
            self.loaded = True

    async def refresh(self) -> bool:
        """Load the newest checkpoint if its version differs from the one in use."""
        version = await self.store.load_model_version(MODEL_CHECKPOINT)
        if version is None or version == self.bundle.version:
            return False
        blob = await self.store.load_model(MODEL_CHECKPOINT)
        if blob is None:
            return False
        self.bundle = ModelBundle.from_bytes(blob)
        self._checkpointed_version = self.bundle.version
        self.loaded = True
        return True

    async def checkpoint(self) -> bool:
        """Save the models if they changed since the last checkpoint; True if saved.

        With shared models only the learner checkpoints: this does nothing.
        """
        version = self.bundle.version
        if self.updates is not None or not self.loaded or version == self._checkpointed_version:
            return False
        await self.store.save_model(MODEL_CHECKPOINT, self.bundle.to_bytes(), version)
        self._checkpointed_version = version
        return True

    def drain_updates(self) -> list[ModelUpdate]:
        """What the shared learner should learn from the messages handled since last asked."""
        return self.updates.drain() if self.updates is not None else []

    def queued(self) -> int:
        """How many updates are queued now (a point to go back to: :meth:`drop_from`)."""
        return len(self.updates.updates) if self.updates is not None else 0

    def drop_from(self, queued: int) -> None:
        """Forget the updates queued since :meth:`queued` gave ``queued``: their write was
        refused, so nothing of it may be learned."""
        if self.updates is not None:
            del self.updates.updates[queued:]

    def report(
        self,
        worker: str,
        now: datetime,
        event_time: datetime | None,
        events: Mapping[str, int],
        dead_letters: Mapping[str, int],
    ) -> ModelMetrics:
        """The metrics report as of now (``events``, ``dead_letters``: the worker's message
        counts); starts a new segment-mix interval and logs a new drift."""
        churn = self.bundle.churn
        both_classes = 0 < churn.n_churned < churn.n_learned
        mix_total = sum(self.segment_mix.values())
        report = ModelMetrics(
            worker=worker,
            published_at=now,
            event_time=event_time,
            model_version=self.bundle.version,
            labelled_examples=churn.n_learned,
            churned_examples=churn.n_churned,
            roc_auc=churn.roc_auc.get() if both_classes else None,
            log_loss=churn.log_loss.get() if churn.n_learned else None,
            brier=churn.brier.get() if churn.n_learned else None,
            rolling_roc_auc=churn.rolling_roc_auc.get() if both_classes else None,
            recent_brier=churn.error_drift.estimation if churn.n_learned else None,
            drifts_detected=churn.drifts_detected,
            model_drift=churn.drifts_detected > self.drifts_reported,
            customers_scored=self.bundle.segments.n_learned,
            segment_shares={
                name: count / mix_total for name, count in sorted(self.segment_mix.items())
            },
            events=dict(sorted(events.items())),
            dead_letters=dict(sorted(dead_letters.items())),
        )
        self.segment_mix.clear()
        if report.model_drift:
            logger.warning(
                "model drift: the churn model's error rate changed (ADWIN, %d changes so far;"
                " recent Brier %.4f, overall %.4f)",
                churn.drifts_detected,
                report.recent_brier or 0.0,
                report.brier or 0.0,
            )
        self.drifts_reported = churn.drifts_detected
        return report

    def forget(self, customer_id: str) -> None:
        """Forget an erased customer: at once, or by telling the shared learner."""
        if self.updates is not None:
            self.updates.forget(customer_id)
        else:
            self.bundle.forget(customer_id)


class SharedLearner:
    """The one learner of a worker group: learns every worker's updates, checkpoints them.

    It runs where the single partition of the model-updates topic is assigned. A checkpoint is
    written only if it has learned more than the stored one, so a learner that just lost its
    partition cannot overwrite its successor's newer model.
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        """The store itself: it raises while Redis is away (for callers that need an answer
        now, such as the web views)."""
        self._retrying = RetryingStore(store)
        """The same store, each call retried while Redis is away (what the pipeline uses)."""
        self.models: ModelBundle | None = None
        self._checkpointed = 0
        self._forgotten = 0
        self._busy = asyncio.Lock()
        """Held while the models learn or are serialised, both in a worker thread."""

    async def learn(self, update: ModelUpdate) -> None:
        await self.learn_all([update])

    async def learn_all(self, updates: Sequence[ModelUpdate]) -> None:
        """Learn the updates in order, in a worker thread: a batch takes tens of
        milliseconds and a repeat-buying refit seconds, which the scoring agents sharing this
        event loop must not wait for (the thread gives the loop the GIL every few ms)."""
        if self.models is None:
            blob = await self._retrying.load_model(MODEL_CHECKPOINT)
            self.models = ModelBundle.from_bytes(blob) if blob is not None else ModelBundle()
            self._checkpointed = self.models.updates_learned
        models = self.models
        async with self._busy:
            await asyncio.to_thread(learn_each, models, updates)
        self._forgotten += sum(1 for update in updates if update.kind == "forget")

    async def checkpoint(self) -> bool:
        """Save the models if they learned (or forgot) anything and are not older than the
        stored ones."""
        models = self.models
        if models is None or (models.updates_learned <= self._checkpointed and not self._forgotten):
            return False
        stored = await self.store.load_model_version(MODEL_CHECKPOINT)
        async with self._busy:  # the models do not change until they are serialised
            learned, forgotten, version = models.updates_learned, self._forgotten, models.version
            if stored is not None:
                stored_updates = _updates_in(stored)
                # Equal counts: the stored model is this one, unless this one has since
                # forgotten an erased customer.
                if stored_updates > learned or (stored_updates == learned and not forgotten):
                    return False
            blob = await asyncio.to_thread(models.to_bytes)
        await self.store.save_model(MODEL_CHECKPOINT, blob, version)
        self._checkpointed = learned
        self._forgotten -= forgotten
        return True


def _updates_in(version: str) -> int:
    """Updates learned by the bundle of a version string ``churn-N.segments-M``: N + M."""
    return sum(int(part.rsplit("-", 1)[1]) for part in version.split("."))
