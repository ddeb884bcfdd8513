"""A model checkpoint written by an older release still loads: checkpoints are pickles, so
they name the classes' modules, and moving a module must not strand the models a production
Redis holds.

``data/checkpoint-flat-layout-02d9c80.bin`` was written by commit 02d9c80, the last one with
the flat ``streamcrm/`` layout (60 simulated customers, 200 days, seed 3, every event scored
by ``score_event`` with the models learning at once). It names only modules of
``streamcrm.models`` (churn, segments, population, repeat_buying, horizon), which kept their
paths when the layers became packages: that is why it loads, and this test keeps it so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from streamcrm.core.events import PurchaseEvent
from streamcrm.core.scoring import ScoringConfig, score_event
from streamcrm.models import ModelBundle

FLAT_LAYOUT_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint-flat-layout-02d9c80.bin"


def test_a_checkpoint_from_the_flat_layout_loads_and_scores() -> None:
    models = ModelBundle.from_bytes(FLAT_LAYOUT_CHECKPOINT.read_bytes())

    assert models.version == "churn-31.segments-1115.clv-22"
    scored = score_event(
        None,
        PurchaseEvent(
            event_id="e1",
            customer_id="c1",
            order_id="o1",
            amount=40.0,
            items=2,
            channel="web",
            occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        ),
        models,
        ScoringConfig(),
    )
    assert scored.score is not None and 0.0 <= scored.score.churn_probability <= 1.0
    assert models.to_bytes()  # and it checkpoints again in the new layout
