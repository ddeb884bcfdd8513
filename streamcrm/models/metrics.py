"""Exact, offline model-quality figures over a whole set of predictions.

The churn model's *progressive* figures are River's (:mod:`streamcrm.models.churn`); these
are for the evaluation, the benchmarks and the demo, which score a finished list at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Exact ROC AUC: the chance a random positive outranks a random negative (the
    Mann-Whitney U over positives × negatives, from ranks, with ties counted ½).

    Undefined without both classes: NaN then, not 0 or ½, so it shows as ``nan``, never
    wins a comparison (every comparison with NaN is false) and a caller can test for it
    with :func:`math.isnan`.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([True, False, False], [0.9, 0.2, 0.5])
    1.0
    >>> roc_auc([False, True], [0.5, 0.5])
    0.5
    >>> roc_auc([True, True], [0.2, 0.9])
    nan
    """
    y = np.asarray(labels, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))
