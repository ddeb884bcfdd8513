"""The garbage collector of a long-running worker (streamcrm.services.collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamcrm.services.collector import (
    YOUNG_GENERATION_THRESHOLD,
    collector_as_in_a_worker,
    settle_collector,
)


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_settled_process_freezes_what_it_built_and_collects_the_young_generation_rarely(
    collector_restored: None,
) -> None:
    older = gc.get_threshold()[1:]
    settle_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *older)


def test_a_batchs_temporaries_freed_by_reference_counting_trigger_no_collection(
    collector_restored: None,
) -> None:
    settle_collector()
    collections = [generation["collections"] for generation in gc.get_stats()]
    for _ in range(20):
        batch = [{"customer_id": f"c{i}", "features": [float(i)]} for i in range(2_000)]
        del batch
    assert [generation["collections"] for generation in gc.get_stats()] == collections


def test_measuring_as_in_a_worker_restores_the_collector_afterwards(
    collector_restored: None,
) -> None:
    threshold = gc.get_threshold()
    with collector_as_in_a_worker():
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == 0


def test_measuring_as_in_a_worker_leaves_a_settled_process_settled(
    collector_restored: None,
) -> None:
    settle_collector()
    frozen = gc.get_freeze_count()
    with collector_as_in_a_worker():
        pass
    assert gc.get_freeze_count() >= frozen
    assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
