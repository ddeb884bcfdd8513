"""The Faust worker streamcrm runs keeps the log level it is given."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest

from streamcrm.worker.app import faust_worker


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """faust_worker settles the collector of the process it runs in: undo it for the tests
    after these."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return faust.App("log-level", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))


def configured_root(worker: faust.Worker) -> logging.Logger:
    """What the worker does to a root logger it sets up at WARNING (a stand-in logger, so the
    test leaves the process's logging alone)."""
    root = logging.Logger("stand-in-root", logging.WARNING)
    root.addHandler(logging.NullHandler(logging.WARNING))
    worker.on_setup_root_logger(root, logging.WARNING)
    return root


def test_faust_s_own_worker_sets_the_root_logger_to_debug_for_its_spinner(app: faust.App) -> None:
    # The fact faust_worker exists for: at WARNING every debug call would build a record.
    worker = faust.Worker(app, loglevel="WARNING", redirect_stdouts=False)
    assert configured_root(worker).level == logging.DEBUG


def test_streamcrm_s_worker_keeps_the_level_it_is_given(app: faust.App) -> None:
    worker = faust_worker(app, "WARNING")
    root = configured_root(worker)
    assert root.level == logging.WARNING
    assert not root.isEnabledFor(logging.DEBUG)
