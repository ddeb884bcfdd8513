"""Python's cyclic garbage collector, set for a long-running scoring or learning process.

CPython collects its youngest generation whenever the tracked objects allocated minus those
freed since the last collection exceed a threshold (700 by default), and every collection of
an older generation walks every object in it. A scoring worker allocates thousands of
short-lived containers a batch (decoded events, loaded states, features, scores), so with the
default it collects the young generation every few events and lets some of those temporaries
survive into the older generations, which then fill up and are walked again and again. In a
scoring worker through 20,000 customers' fortnight (58,334 events, Apache Kafka, learner in
its own process) the collector took 4.2–6.5 s of the worker's 46–57 CPU seconds, 61–63 full
collections of about 30 ms each holding the event loop (docs/performance.md).

Two settings take that away, for processes whose objects built at start-up live as long as
they do:

- ``gc.freeze()`` after start-up: the modules, classes and app built so far (about 190,000
  objects) are moved out of the collector's reach, so no full collection walks them again;
- a young-generation threshold of :data:`YOUNG_GENERATION_THRESHOLD`: a batch's temporaries
  are freed by reference counting long before the threshold is reached, so almost nothing
  survives into the older generations. In the run above the collector then took 0.2–0.3 s,
  with 4 full collections instead of 61.

Reference cycles are still collected, only later; a process's memory is held to its bounds
by the soak (``streamcrm bench --soak-minutes``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_GENERATION_THRESHOLD = 50_000
"""Net new tracked objects before the youngest generation is collected (CPython: 700). In
the run above 10,000 left 1.7–1.9 s of collection and 200,000 under 0.05 s, against 0.2–0.3
s here: higher gains little and lets cyclic garbage wait longer."""


def settle_collector() -> None:
    """Freeze what the process built so far, and collect the young generation only every
    :data:`YOUNG_GENERATION_THRESHOLD` net new objects (see the module docstring). Call it
    once, at the end of a long-running process's start-up."""
    _, older, oldest = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


@contextmanager
def collector_as_in_a_worker() -> Iterator[None]:
    """The collector set as :func:`settle_collector` sets a worker's, restored afterwards:
    for measuring in one process what a worker's code costs in a worker."""
    threshold, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    settle_collector()
    try:
        yield
    finally:
        if not frozen_before:  # a process settled already stays so
            gc.unfreeze()
        gc.set_threshold(*threshold)
